"""Merchant webhook endpoints over the API: register (the secret once), list (no secrets),
delete; who may; and bad input, which changes nothing."""

from __future__ import annotations

import uuid

import pytest

from wallets.models import WebhookEndpoint
from wallets.tests.factories import auth_header, register_user

pytestmark = pytest.mark.django_db

ROUTE = "/api/v1/merchant/webhook-endpoints"


@pytest.fixture
def merchant():
    user, wallet = register_user(role="merchant", business_name="Chai Shop")
    return user, wallet


def _create(api, user, url="https://example.com/hooks", **extra):
    return api.post(ROUTE, {"url": url, **extra}, format="json", **auth_header(user))


def test_register_answers_201_with_the_secret_once(api, merchant):
    # given
    user, wallet = merchant
    # when
    created = _create(api, user)
    listed = api.get(ROUTE, **auth_header(user))
    # then
    assert created.status_code == 201, created.json()
    body = created.json()
    assert set(body) == {"id", "url", "secret", "created_at"}
    assert body["url"] == "https://example.com/hooks"
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    assert WebhookEndpoint.objects.get(id=body["id"]).wallet_id == wallet.id
    assert listed.status_code == 200
    assert listed.json() == {"data": [{"id": body["id"], "url": body["url"], "created_at": body["created_at"]}]}
    assert body["secret"] not in listed.content.decode()


def test_each_endpoint_gets_its_own_secret(api, merchant):
    user, _ = merchant
    first = _create(api, user, url="https://a.example.com/h").json()
    second = _create(api, user, url="https://b.example.com/h").json()
    assert first["secret"] != second["secret"]
    assert [e["id"] for e in api.get(ROUTE, **auth_header(user)).json()["data"]] == [second["id"], first["id"]]


def test_customers_are_refused_403(api):
    # given
    customer, _ = register_user()
    # when
    created = _create(api, customer)
    listed = api.get(ROUTE, **auth_header(customer))
    # then
    assert created.status_code == 403 and created.json()["code"] == "forbidden"
    assert listed.status_code == 403 and listed.json()["code"] == "forbidden"
    assert not WebhookEndpoint.objects.exists()


def test_without_a_token_401(api):
    response = api.post(ROUTE, {"url": "https://example.com/h"}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_required"


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.com/h"},
        {"url": "example.com/h"},
        {"url": "https://"},
        {"url": "javascript:alert(1)"},
        {"url": "https://user:pass@example.com/h"},
        {"url": 12345},
        {"url": ""},
        {},
        {"url": "https://example.com/h", "events": ["payment.received"]},
        {"url": "https://example.com/" + "a" * 2000},
    ],
)
def test_bad_input_is_refused_400_and_changes_nothing(api, merchant, body):
    user, _ = merchant
    response = api.post(ROUTE, body, format="json", **auth_header(user))
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "validation_failed"
    assert not WebhookEndpoint.objects.exists()


def test_production_takes_public_https_urls_only(api, merchant, settings):
    # given
    settings.PRODUCTION = True
    user, _ = merchant
    # when / then
    for url in (
        "http://example.com/h",
        "https://127.0.0.1/h",
        "https://10.0.0.5/h",
        "https://169.254.169.254/latest",
        "https://localhost/h",
        "https://[::1]/h",
    ):
        response = _create(api, user, url=url)
        assert response.status_code == 400, url
        assert response.json()["code"] == "validation_failed"
    assert _create(api, user, url="https://hooks.example.com/wallet").status_code == 201
    assert WebhookEndpoint.objects.count() == 1


def test_at_most_ten_endpoints(api, merchant):
    user, _ = merchant
    for n in range(10):
        assert _create(api, user, url=f"https://example.com/{n}").status_code == 201
    response = _create(api, user, url="https://example.com/11")
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"
    assert WebhookEndpoint.objects.count() == 10


def test_delete_answers_204_and_the_endpoint_is_gone(api, merchant):
    # given
    user, _ = merchant
    endpoint_id = _create(api, user).json()["id"]
    # when
    deleted = api.delete(f"{ROUTE}/{endpoint_id}", **auth_header(user))
    again = api.delete(f"{ROUTE}/{endpoint_id}", **auth_header(user))
    # then
    assert deleted.status_code == 204
    assert again.status_code == 404 and again.json()["code"] == "webhook_endpoint_not_found"
    assert api.get(ROUTE, **auth_header(user)).json() == {"data": []}
    assert WebhookEndpoint.objects.get(id=endpoint_id).deleted_at is not None


def test_a_merchant_cannot_delete_another_merchants_endpoint(api, merchant):
    # given
    user, _ = merchant
    other, _ = register_user(role="merchant")
    endpoint_id = _create(api, user).json()["id"]
    # when
    response = api.delete(f"{ROUTE}/{endpoint_id}", **auth_header(other))
    # then
    assert response.status_code == 404
    assert response.json()["code"] == "webhook_endpoint_not_found"
    assert WebhookEndpoint.objects.get(id=endpoint_id).deleted_at is None


@pytest.mark.parametrize("endpoint_id", ["not-a-uuid", str(uuid.uuid4())])
def test_delete_of_an_unknown_id_is_404(api, merchant, endpoint_id):
    user, _ = merchant
    response = api.delete(f"{ROUTE}/{endpoint_id}", **auth_header(user))
    assert response.status_code == 404
    assert response.json()["code"] == "webhook_endpoint_not_found"


def test_methods_the_routes_do_not_take_are_405(api, merchant):
    user, _ = merchant
    assert api.put(ROUTE, {}, format="json", **auth_header(user)).status_code == 405
    assert api.get(f"{ROUTE}/{uuid.uuid4()}", **auth_header(user)).status_code == 405
