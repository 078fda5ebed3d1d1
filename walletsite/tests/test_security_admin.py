"""The Django admin and the admin API refuse everyone without the permission, on every page
and every route; admin actions and custom POST pages need a CSRF token.

The pages come from the URL resolver and the actions from the admin site's registry, so a new
ModelAdmin, custom page or action is covered without editing this file. wallets/tests/
test_admin.py and the per-feature admin tests check what each page shows to whom; this file
checks that nobody gets further than they should, and that a refused request changes nothing.
"""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.contrib.messages import get_messages
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Tier, User
from wallets.api_admin import StaffWithPermission
from wallets.models import Wallet
from wallets.tests.factories import auth_header
from walletsite.tests.security import World, build_world, db_snapshot, snapshot_diff, url_routes

pytestmark = pytest.mark.django_db

STAFF_PASSWORD = "staff password 1"
_MODEL_ROUTE = re.compile(r"^admin/(?P<app>[a-z_]+)/(?P<model>[a-z_]+)/")
# Admin pages that are not about one model, and what a staff user with no permission at all
# gets there: the index lists nothing, the app page and unknown pages do not exist, the
# autocomplete refuses, view-on-site finds no public URL; their own password and logout, and
# the translation catalogue, are theirs to use.
SITE_PAGES_FOR_BARE_STAFF = {
    # route: (answer to GET, answer to POST)
    "admin/": (200, 200),
    "admin/(?P<url>.*)$": (404, 404),
    "admin/^(?P<app_label>auth|token_blacklist|ledger|accounts|wallets)/$": (404, 404),
    "admin/autocomplete/": (403, 405),
    "admin/r/<path:content_type_id>/<path:object_id>/": (404, 404),
    "admin/jsi18n/": (200, 405),
    # Signed in already: the login page sends them to the index; a POST is the form again.
    "admin/login/": (302, 200),
    "admin/logout/": (200, 200),
    # Their own password: the form (a POST without fields is the form with its errors).
    "admin/password_change/": (200, 200),
    "admin/password_change/done/": (200, 405),
}


def _model_of(route: str):
    match = _MODEL_ROUTE.match(route)
    if not match:
        return None
    for model in admin.site._registry:
        if (model._meta.app_label, model._meta.model_name) == (match["app"], match["model"]):
            return model
    return None


def admin_pages(world: World) -> list[tuple[str, str, type | None]]:
    """(route, url, model or None) of every admin page, with a real object id where the page
    takes one."""
    pages = []
    wallet = world.wallets["bob"]
    for route in url_routes():
        if not route.route.startswith("admin/"):
            continue
        model = _model_of(route.route)
        url = "/" + route.route
        if model is not None:
            pk = quote(str(model._base_manager.order_by("pk").values_list("pk", flat=True)[0]))
            url = url.replace("<path:object_id>", pk).replace("<id>", pk)
        url = (
            url.replace("<path:content_type_id>", str(ContentType.objects.get_for_model(Wallet).id))
            .replace("<path:object_id>", str(wallet.id))
            .replace("^(?P<app_label>auth|token_blacklist|ledger|accounts|wallets)/$", "wallets/")
            .replace("(?P<url>.*)$", "no-such-page/")
        )
        assert "<" not in url and "(" not in url, f"an admin URL this test cannot fill in: {route.route}"
        if model is None:
            assert route.route in SITE_PAGES_FOR_BARE_STAFF, f"a site-wide admin page not in the table: {route.route}"
        pages.append((route.route, url, model))
    return pages


def _client(user: User | None, **kwargs) -> Client:
    client = Client(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


def _viewer_of(model) -> User:
    """A staff user allowed to view this one model and nothing else."""
    user = User.objects.create_user(f"viewer.{uuid.uuid4().hex[:6]}@example.com", STAFF_PASSWORD, is_staff=True)
    content_type = ContentType.objects.get_for_model(model)
    user.user_permissions.add(
        Permission.objects.get(content_type=content_type, codename=f"view_{model._meta.model_name}")
    )
    return User.objects.get(pk=user.pk)


@pytest.fixture
def world() -> World:
    return build_world()


def test_the_world_has_a_row_for_every_admin_model(world):
    empty = [m._meta.label for m in admin.site._registry if not m._base_manager.exists()]
    assert not empty, f"build_world makes no row of {empty}: their pages would be tried without an object"


@pytest.mark.parametrize("who", ["anonymous", "customer", "merchant"])
def test_every_admin_page_sends_non_staff_to_the_login_page(world, who):
    # given
    user = {"anonymous": None, "customer": world.users["alice"], "merchant": world.users["shop_a"]}[who]
    client = _client(user)
    before = db_snapshot()
    for route, url, _ in admin_pages(world):
        if route == "admin/login/":
            continue
        for method in ("get", "post"):
            # when
            response = getattr(client, method)(url)
            # then
            assert response.status_code == 302, (who, method, url, response.status_code)
            # (logging out when not signed in goes to the index, which sends to the login)
            expected = "/admin/" if route == "admin/logout/" else "/admin/login/"
            assert response["Location"].startswith(expected), (who, method, url)
    assert snapshot_diff(before, db_snapshot()) == {}


def test_staff_without_permissions_get_no_admin_page(world):
    # given: staff, in no group, with no permission
    client = _client(world.users["bare"])
    before = db_snapshot()
    wrong = []
    for route, url, model in admin_pages(world):
        if route == "admin/logout/":
            continue  # logging out is theirs to do
        for index, method in enumerate(("get", "post")):
            # when
            response = getattr(client, method)(url)
            # then
            if model is None:
                expected = SITE_PAGES_FOR_BARE_STAFF[route][index]
            else:
                # The bare object URL only redirects to its change page, which refuses.
                expected = 302 if route.endswith("/<path:object_id>/") else 403
            if response.status_code != expected:
                wrong.append((method, url, response.status_code, expected))
            if route == "admin/":
                assert "/admin/wallets/" not in response.content.decode(), "the index lists a model"
    assert not wrong
    assert snapshot_diff(before, db_snapshot()) == {}


def test_view_only_staff_can_change_nothing_through_any_admin_page(world):
    # given: support may view (most) models, and nothing else
    client = _client(world.users["support"])
    before = db_snapshot()
    for route, url, model in admin_pages(world):
        # The changelist's POST is an action (test_actions_need_their_permission_...); the
        # history page and the bare object URL (a redirect to the change page) take no POST.
        if model is None or route.endswith(("/history/", "/<path:object_id>/")):
            continue
        if route == f"admin/{model._meta.app_label}/{model._meta.model_name}/":
            continue
        # when: a POST with the fields a form of the page might take
        response = client.post(url, {"post": "yes", "reason": "x", "name": "x", "amount": "1"})
        # then
        assert response.status_code == 403, (url, response.status_code)
    assert snapshot_diff(before, db_snapshot()) == {}


def test_every_admin_page_answers_the_superuser(world):
    # given: the URLs are real (so the refusals above are refusals, not 404s)
    client = _client(world.users["root"])
    for route, url, model in admin_pages(world):
        if route in ("admin/logout/", "admin/login/"):
            continue
        # when
        response = client.get(url)
        # then
        if (model is not None and route.endswith(("/change/", "/history/"))) or route.endswith("/run/"):
            assert response.status_code == 200, (url, response.status_code)
        assert response.status_code < 500, (url, response.status_code)


def _actions() -> list[tuple[type, str]]:
    found = []
    for model, model_admin in admin.site._registry.items():
        for name in ["delete_selected", *(model_admin.actions or ())]:
            found.append((model, name))
    return found


def _action_post(model, action: str) -> dict:
    """The second step of any action (apply, with every field its form could want)."""
    return {
        "action": action,
        ACTION_CHECKBOX_NAME: [str(pk) for pk in model._base_manager.values_list("pk", flat=True)[:5]],
        "select_across": "1",
        "index": "0",
        "apply": "1",
        "post": "yes",
        "reason": "security test",
        "tier": Tier.objects.order_by("pk").values_list("pk", flat=True)[0],
    }


def _changelist(model) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/"


def test_actions_need_their_permission_and_a_csrf_token(world):
    # given: for each action of each admin, staff who may view the model but hold no other
    # permission, staff with none, support, and the superuser without a CSRF token
    refused_to = {"bare": _client(world.users["bare"]), "support": _client(world.users["support"])}
    refused_to["superuser without a CSRF token"] = _client(world.users["root"], enforce_csrf_checks=True)
    for model, action in _actions():
        model_admin = admin.site._registry[model]
        assert model_admin.get_action(action) is not None, action
        viewer = _client(_viewer_of(model))
        before = db_snapshot()
        for who, client in {"viewer": viewer, **refused_to}.items():
            # when
            response = client.post(_changelist(model), _action_post(model, action))
            # then: refused outright (403), or the action is not offered (the list again, or
            # a redirect with "No action selected"), and nothing changed
            assert response.status_code in (200, 302, 403), (model, action, who, response.status_code)
            assert snapshot_diff(before, db_snapshot()) == {}, (model, action, who)

    # and the superuser, with the token, runs each action the admin offers (so the requests
    # above were refused, not malformed); every offered action but delete needs a permission
    root = _client(world.users["root"])
    for model, action in _actions():
        model_admin = admin.site._registry[model]
        if action not in model_admin.get_actions(_request_of("root", world)):
            continue
        func = model_admin.get_action(action)[0]
        assert getattr(func, "allowed_permissions", ()) or action == "delete_selected", (model, action)
        response = root.post(_changelist(model), _action_post(model, action))
        shown = [str(m) for m in get_messages(response.wsgi_request)]
        assert response.status_code in (200, 302), (model, action, response.status_code)
        assert not any("No action selected" in m for m in shown), (model, action, shown)


def _request_of(name: str, world: World):
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = world.users[name]
    return request


def test_every_admin_post_needs_a_csrf_token(world):
    # given: the superuser, who may do anything, but without the CSRF token
    client = _client(world.users["root"], enforce_csrf_checks=True)
    before = db_snapshot()
    for _route, url, _ in admin_pages(world):
        # when
        response = client.post(url, {"post": "yes", "reason": "x"})
        # then
        assert response.status_code == 403, (url, response.status_code)
    assert snapshot_diff(before, db_snapshot()) == {}


def test_an_admin_session_does_not_authenticate_the_api(world):
    # given: a superuser signed in to the admin (a session cookie, as in a browser)
    client = _client(world.users["root"])
    wallet = world.wallets["bob"]
    before = db_snapshot()
    # when: a forged cross-site POST to the admin API carries the cookie, not a token
    response = client.post(
        f"/api/v1/admin/wallets/{wallet.id}/freeze", {"reason": "csrf"}, content_type="application/json"
    )
    # then
    assert response.status_code == 401
    assert snapshot_diff(before, db_snapshot()) == {}


# --- the admin API -----------------------------------------------------------------------


def _admin_api_calls() -> list[tuple[str, str, str, object]]:
    """(route, method, path, view class) of every /api/v1/admin route."""
    calls = []
    for route in url_routes():
        if not route.route.startswith("api/v1/admin/"):
            continue
        path = "/" + re.sub(r"<str:[a-z_]+>", str(uuid.uuid4()), route.route)
        for method in [m for m in route.callback.actions if m != "head"]:
            calls.append((route.route, method, path, route.callback.cls, route.callback.actions[method]))
    return calls


def test_every_admin_api_view_checks_a_named_permission_for_every_action():
    for route, method, _, cls, action in _admin_api_calls():
        assert StaffWithPermission in cls.permission_classes, route
        assert cls.required_permissions.get(action), f"{method} {route}: no permission named for {action}"


def _staff_with(permissions: list[str]) -> User:
    user = User.objects.create_user(f"staff.{uuid.uuid4().hex[:6]}@example.com", STAFF_PASSWORD, is_staff=True)
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return User.objects.get(pk=user.pk)


def test_every_admin_api_route_refuses_everyone_without_its_permission(world):
    # given
    api = APIClient()
    every_permission = sorted({p for *_, cls, _ in _admin_api_calls() for p in cls.required_permissions.values()})
    for route, method, path, cls, action in _admin_api_calls():
        needed = cls.required_permissions[action]
        refused = {
            "customer": auth_header(world.users["alice"]),
            "merchant": auth_header(world.users["shop_a"]),
            "staff without permissions": auth_header(world.users["bare"]),
            "staff with every other permission": auth_header(_staff_with([p for p in every_permission if p != needed])),
        }
        if not world.users["support"].has_perm(needed):
            refused["support"] = auth_header(world.users["support"])
        allowed = auth_header(_staff_with([needed]))
        call = getattr(api, method)
        key = {"HTTP_IDEMPOTENCY_KEY": uuid.uuid4().hex}
        before = db_snapshot()
        # when / then
        anonymous = call(path, {}, format="json", **key)
        assert anonymous.status_code == 401, (method, route)
        for who, headers in refused.items():
            response = call(path, {}, format="json", **headers, **key)
            assert (response.status_code, response.json()["code"]) == (403, "forbidden"), (who, method, route)
        assert snapshot_diff(before, db_snapshot()) == {}, (method, route)
        # and the permission alone is enough to get past the check (to the body or the id)
        response = call(path, {}, format="json", **allowed, **key)
        assert response.status_code not in (401, 403), (method, route, response.content)


def test_staff_permission_check_refuses_an_action_that_names_no_permission(world):
    # given: a view whose action is missing from required_permissions (a new action
    # someone forgot to list); a superuser holds every permission there is
    class View:
        action = "forgotten"
        required_permissions = {"listed": "wallets.freeze_wallet"}

    for name in ("operations", "root"):
        request = _request_of(name, world)
        # when / then: fail closed
        assert StaffWithPermission().has_permission(request, View()) is False, name
    View.action = "listed"
    assert StaffWithPermission().has_permission(_request_of("operations", world), View()) is True
