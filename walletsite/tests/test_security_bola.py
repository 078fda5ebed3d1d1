"""Broken object-level authorization: every route that takes an id, tried with another
principal's credentials on the victim's object.

An object of someone else's answers exactly what an id that does not exist answers (404 with
the same body: API.md, "only a party to it may read it"), so ids cannot be probed; a caller
of the wrong kind (a customer on a merchant or staff route) gets the 403 it gets whatever the
id. Nothing changes in the database but the refused caller's own idempotency record. Then
the owner's request succeeds, which shows the id was real and actionable all along.

The table is checked against the URL resolver: a new route with a path parameter fails
`test_every_route_with_a_parameter_is_in_the_table` until it is added here.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.utils import timezone

from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import IdempotencyKey
from wallets.tests.money import balance_of
from walletsite.tests.security import World, as_json, build_world, db_snapshot, snapshot_diff, url_routes

pytestmark = pytest.mark.django_db

API = "api/v1/"


@dataclass(frozen=True)
class Attack:
    who: str
    status: int
    code: str
    # False where the answer may depend on the object by design (the maker of an adjustment
    # is told approval_by_maker; they can read the adjustment anyway).
    same_as_unknown: bool = True


@dataclass(frozen=True)
class Case:
    route: str  # as the URL resolver spells it; its one parameter takes the victim's object
    method: str
    ref: str  # a key of World.ids, or "wallet:<name>" for that user's wallet id
    owner: str
    owner_status: int
    attacks: tuple[Attack, ...]
    body: dict[str, Any] | None = None
    idempotency_key: bool = False

    @property
    def url(self) -> str:
        """The route as a path, with {ref} for its parameter."""
        return "/" + re.sub(r"<[^>]+>", "{ref}", self.route)


def _forbidden(*who: str) -> tuple[Attack, ...]:
    return tuple(Attack(name, 403, "forbidden") for name in who)


def _not_found(code: str, *who: str) -> tuple[Attack, ...]:
    return tuple(Attack(name, 404, code) for name in who)


def _customer_404(code: str) -> tuple[Attack, ...]:
    """Another customer and a merchant are told the object does not exist; staff, who have
    no wallet, are refused whatever the id."""
    return (*_not_found(code, "alice", "shop_a"), *_forbidden("operations"))


def _staff_only(*extra: Attack) -> tuple[Attack, ...]:
    """Customers, merchants and the support group (view only) are refused whatever the id."""
    return (*_forbidden("alice", "shop_a", "bob", "support", "bare"), *extra)


def _customer_get(route: str, ref: str, code: str) -> Case:
    """Bob reads his own object; see _customer_404 for everyone else."""
    return Case(API + route, "get", ref, owner="bob", owner_status=200, attacks=_customer_404(code))


def _staff_post(route: str, ref: str, body: dict[str, Any], *extra: Attack) -> Case:
    """Operations act on the object; see _staff_only for everyone else."""
    return Case(API + route, "post", ref, owner="operations", owner_status=200, attacks=_staff_only(*extra), body=body)


TRANSACTION = "transactions/<str:transaction_id>"

CASES = (
    Case(
        API + "merchant/payments/<str:transaction_id>/refund",
        "post",
        "payment",
        body={"amount": 100},
        idempotency_key=True,
        owner="shop_b",
        owner_status=201,
        # The payer is a customer: only merchants refund, whatever the payment.
        attacks=(*_not_found("transaction_not_found", "shop_a"), *_forbidden("bob", "alice", "operations")),
    ),
    _customer_get("wallet/payments/<str:payment_id>", "payment_attempt", "payment_not_found"),
    Case(
        API + "merchant/webhook-endpoints/<str:endpoint_id>",
        "delete",
        "webhook_endpoint",
        owner="shop_b",
        owner_status=204,
        attacks=(*_not_found("webhook_endpoint_not_found", "shop_a"), *_forbidden("alice", "operations")),
    ),
    _customer_get("wallet/withdrawals/<str:withdrawal_id>", "withdrawal", "withdrawal_not_found"),
    _customer_get(TRANSACTION, "transfer", "transaction_not_found"),
    _customer_get(TRANSACTION, "withdrawal", "transaction_not_found"),
    Case(
        API + TRANSACTION,
        "get",
        "payment",
        owner="shop_b",
        owner_status=200,
        attacks=_not_found("transaction_not_found", "alice", "shop_a"),
    ),
    _staff_post("admin/wallets/<str:wallet_id>/freeze", "wallet:bob", {"reason": "fraud report"}),
    _staff_post("admin/wallets/<str:wallet_id>/unfreeze", "wallet:bob", {"reason": "cleared"}),
    _staff_post("admin/campaigns/<str:campaign_id>/pause", "campaign", {"reason": "budget review"}),
    _staff_post("admin/campaigns/<str:campaign_id>/resume", "campaign", {"reason": "approved"}),
    Case(
        API + "admin/adjustments/<str:adjustment_id>",
        "get",
        "adjustment",
        owner="support",
        owner_status=200,
        attacks=_forbidden("alice", "shop_a", "carol", "bare"),
    ),
    _staff_post(
        "admin/adjustments/<str:adjustment_id>/approve",
        "adjustment",
        {},
        *_forbidden("carol"),
        Attack("maker", 403, "approval_by_maker", same_as_unknown=False),
    ),
    _staff_post(
        "admin/adjustments/<str:adjustment_id>/reject", "adjustment", {"reason": "not justified"}, *_forbidden("carol")
    ),
)

# Routes with a path parameter that are not object lookups of a principal's, and why.
NOT_OBJECT_ROUTES = {
    # The caller's own statement for a month: the parameter is a month, not someone's
    # object (test_a_statement_shows_only_the_callers_entries).
    API + "wallet/statements/<str:month>": "month of the caller's own statement",
    # Static assets of the admin and Swagger UI, public by design.
    "static/<path:path>": "public static files",
}
# Prefixes covered elsewhere: the Django admin (test_security_admin derives its own list of
# pages from the admin site), and the sandbox gateway and bank, which play outside systems
# without credentials (API.md) and do not exist unless GATEWAY_SANDBOX is on (test_sandbox,
# test_sandbox_bank).
COVERED_ELSEWHERE = ("admin/", "sandbox/")


def _ref(world: World, ref: str) -> str:
    if ref.startswith("wallet:"):
        return str(world.wallets[ref.split(":", 1)[1]].id)
    return world.ids[ref]


def _send(api, case: Case, ref: str, headers: dict):
    extra = {"HTTP_IDEMPOTENCY_KEY": uuid.uuid4().hex} if case.idempotency_key else {}
    call = getattr(api, case.method)
    url = case.url.format(ref=ref)
    if case.body is None:
        return call(url, **headers, **extra)
    return call(url, case.body, format="json", **headers, **extra)


def _problem(response) -> dict:
    assert response["Content-Type"] == "application/problem+json", response.content
    return response.json()


def test_every_route_with_a_parameter_is_in_the_table():
    # given
    tabled = {case.route for case in CASES} | set(NOT_OBJECT_ROUTES)
    # when
    missing = [
        r.route
        for r in url_routes()
        if r.has_parameters and r.route not in tabled and not r.route.startswith(COVERED_ELSEWHERE)
    ]
    stale = tabled - {r.route for r in url_routes()}
    # then
    assert not missing, f"routes with an id that no BOLA case covers: {missing}"
    assert not stale, f"cases for routes that no longer exist: {stale}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.route} [{c.ref}]")
def test_another_principals_object_is_refused_and_nothing_changes(api, case):
    # given
    world = build_world()
    ref = _ref(world, case.ref)
    headers = {who: world.headers(who) for who in {a.who for a in case.attacks} | {case.owner}}
    unknown = str(uuid.uuid4())
    for attack in case.attacks:
        keys_before = set(IdempotencyKey.objects.values_list("id", flat=True))
        before = db_snapshot(exclude=("wallets.IdempotencyKey",))

        # when
        response = _send(api, case, ref, headers[attack.who])

        # then
        body = _problem(response)
        assert (response.status_code, body["code"]) == (attack.status, attack.code), (attack, body)
        assert snapshot_diff(before, db_snapshot(exclude=("wallets.IdempotencyKey",))) == {}, attack
        new_keys = IdempotencyKey.objects.exclude(id__in=keys_before)
        assert set(new_keys.values_list("user_id", flat=True)) <= {world.users[attack.who].id}
        if attack.same_as_unknown:
            probe = _send(api, case, unknown, headers[attack.who])
            assert (probe.status_code, _problem(probe)) == (response.status_code, body), attack

    # when: the owner, with the same request
    owned = _send(api, case, ref, headers[case.owner])

    # then
    assert owned.status_code == case.owner_status, owned.content
    assert_ledger_consistent()


def test_withdrawing_to_another_users_bank_account_is_bank_account_not_found(api):
    # given: the bank account id travels in the body, not the path
    world = build_world()
    alice = world.headers("alice")
    body = {"amount": 1_000, "pin": "1234", "bank_account": world.ids["bank_account"]}
    before = db_snapshot(exclude=("wallets.IdempotencyKey",))

    # when
    response = api.post("/api/v1/wallet/withdraw", body, format="json", HTTP_IDEMPOTENCY_KEY="w-1", **alice)
    unknown = api.post(
        "/api/v1/wallet/withdraw",
        body | {"bank_account": str(uuid.uuid4())},
        format="json",
        HTTP_IDEMPOTENCY_KEY="w-2",
        **alice,
    )

    # then
    assert response.status_code == 404 and _problem(response)["code"] == "bank_account_not_found"
    assert _problem(unknown) == _problem(response)
    assert snapshot_diff(before, db_snapshot(exclude=("wallets.IdempotencyKey",))) == {}
    owner = api.post("/api/v1/wallet/withdraw", body, format="json", HTTP_IDEMPOTENCY_KEY="w-3", **world.headers("bob"))
    assert owner.status_code == 202


def test_a_statement_shows_only_the_callers_entries(api):
    # given: bob's transfer and payment happened this month; alice only received her funding
    world = build_world()
    month = timezone.now().strftime("%Y-%m")

    # when
    alice = api.get(f"/api/v1/wallet/statements/{month}", **world.headers("alice"))
    bob = api.get(f"/api/v1/wallet/statements/{month}", **world.headers("bob"))

    # then
    assert alice.status_code == bob.status_code == 200
    alice_statement, bob_statement = as_json(alice), as_json(bob)
    alice_ids = {entry["id"] for entry in alice_statement["entries"]}
    bob_ids = {entry["id"] for entry in bob_statement["entries"]}
    assert {world.ids["transfer"], world.ids["payment"]} <= bob_ids
    assert not alice_ids & bob_ids
    assert alice_statement["closing_balance"] == balance_of(world.wallets["alice"])


def test_another_users_idempotency_key_replays_nothing_of_theirs(api):
    # given: bob's transfer with a key, and alice sending the same key and body
    world = build_world()
    body = {"to": world.wallets["carol"].handle, "amount": 300, "pin": "1234"}
    first = api.post("/api/v1/wallet/transfer", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1", **world.headers("bob"))
    carol_before = balance_of(world.wallets["carol"])

    # when
    theirs = api.post(
        "/api/v1/wallet/transfer", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1", **world.headers("alice")
    )

    # then: alice's own transfer, not bob's answer replayed (keys are the principal's own)
    assert first.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs
    assert theirs.json()["transaction"]["id"] != first.json()["transaction"]["id"]
    assert theirs.json()["balance"] == balance_of(world.wallets["alice"])
    assert balance_of(world.wallets["carol"]) == carol_before + 300
    assert_ledger_consistent()


@pytest.mark.parametrize("route", ["/api/v1/wallet/transactions", "/api/v1/transactions"])
def test_another_users_history_cursor_is_refused(api, route):
    # given: a cursor from bob's history
    world = build_world()
    page = api.get(route, {"limit": 1}, **world.headers("bob")).json()
    assert page["has_more"] and page["next_cursor"]

    # when
    response = api.get(route, {"limit": 1, "cursor": page["next_cursor"]}, **world.headers("alice"))

    # then
    assert response.status_code == 400
    assert _problem(response)["code"] == "invalid_cursor"
