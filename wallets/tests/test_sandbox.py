"""The sandbox gateway: its checkout page, and its complete endpoint, which delivers a signed
webhook over real HTTP to the service (pytest-django's live_server, with PUBLIC_URL pointed
at it)."""

from __future__ import annotations

import importlib
import socket
import uuid

import pytest
from django.test import Client
from django.urls import clear_url_caches

from ledger.models import Transaction
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import GatewayEvent, PaymentAttempt, Wallet
from wallets.tests.factories import auth_header, register_user
from wallets.topups import payment_attempt_create


def _public_url(settings, url: str) -> None:
    # settings.WALLET is one dict: replace it whole, so the settings fixture restores it.
    settings.WALLET = {**settings.WALLET, "PUBLIC_URL": url}


def complete(client, payment_id, outcome="succeeded"):
    return client.post(
        f"/sandbox/payments/{payment_id}/complete", {"outcome": outcome}, content_type="application/json"
    )


def balance(wallet: Wallet) -> int:
    wallet.account.refresh_from_db()
    return wallet.account.balance


@pytest.fixture
def gateway(live_server, settings):
    """The service listening on a real port, and PUBLIC_URL pointing at it."""
    _public_url(settings, live_server.url)
    return live_server


# --- over real HTTP ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_add_money_then_sandbox_success_credits_the_wallet(api, gateway):
    # given: a customer who asked to add money
    user, wallet = register_user()
    headers = auth_header(user)
    started = api.post(
        "/api/v1/wallet/add-money", {"amount": 50000}, format="json", HTTP_IDEMPOTENCY_KEY="sandbox-1", **headers
    )
    assert started.status_code == 201
    payment_id = started.json()["payment_id"]
    assert started.json()["checkout_url"] == f"{gateway.url}/sandbox/checkout/{payment_id}"
    # when: the gateway completes the checkout
    response = complete(Client(), payment_id)
    # then: the webhook travelled over HTTP and credited the wallet
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["outcome"] == "succeeded"
    assert body["webhook"]["status"] == 200
    assert body["webhook"]["body"]["result"] == "credited"
    assert GatewayEvent.objects.filter(id=body["event"]["id"], payment_attempt_id=payment_id).exists()
    assert balance(wallet) == 50000
    shown = api.get(f"/api/v1/wallet/payments/{payment_id}", **headers).json()
    assert shown["status"] == "succeeded" and shown["checkout_url"] is None
    assert_ledger_consistent()


@pytest.mark.django_db(transaction=True)
def test_sandbox_completed_twice_credits_once(gateway):
    # given
    _, wallet = register_user()
    attempt = payment_attempt_create(wallet=wallet, amount=2500)
    complete(Client(), attempt.id)
    # when
    again = complete(Client(), attempt.id)
    # then: a new event id, the same charge: the webhook credits nothing more
    assert again.status_code == 200
    assert again.json()["webhook"]["body"]["result"] == "already_credited"
    assert balance(wallet) == 2500
    assert Transaction.objects.filter(reference=f"payment_attempt:{attempt.id}").count() == 1
    attempt.refresh_from_db()
    assert not attempt.flagged_for_review
    assert_ledger_consistent()


@pytest.mark.django_db(transaction=True)
def test_sandbox_failure_fails_the_attempt(gateway):
    # given
    _, wallet = register_user()
    attempt = payment_attempt_create(wallet=wallet, amount=2500)
    # when
    response = complete(Client(), attempt.id, outcome="failed")
    # then
    assert response.status_code == 200
    assert response.json()["event"]["type"] == "payment.failed"
    assert response.json()["webhook"]["body"]["result"] == "failed"
    attempt.refresh_from_db()
    assert attempt.status == "failed"
    assert balance(wallet) == 0
    assert_ledger_consistent()


@pytest.mark.django_db(transaction=True)
def test_checkout_form_post_credits_and_shows_a_page(gateway):
    # given: the checkout page's form, posted as a browser posts it, CSRF checks on
    _, wallet = register_user()
    attempt = payment_attempt_create(wallet=wallet, amount=1999)
    browser = Client(enforce_csrf_checks=True)
    # when
    response = browser.post(
        f"/sandbox/payments/{attempt.id}/complete",
        "outcome=succeeded",
        content_type="application/x-www-form-urlencoded",
    )
    # then
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Payment succeeded" in page and "credited" in page
    assert balance(wallet) == 1999
    assert_ledger_consistent()


@pytest.mark.django_db(transaction=True)
def test_webhook_refusal_is_passed_back(gateway, settings, monkeypatch):
    # given: the sandbox signs with a secret the service does not have
    _, wallet = register_user()
    attempt = payment_attempt_create(wallet=wallet, amount=1000)
    service_secret = settings.WALLET["GATEWAY_WEBHOOK_SECRET"]
    from wallets import sandbox

    real_deliver = sandbox.webhook_deliver

    def deliver_with_wrong_secret(**kwargs):
        assert kwargs["secret"] == service_secret
        return real_deliver(**{**kwargs, "secret": "not the gateway secret at all, no........"})

    monkeypatch.setattr(sandbox, "webhook_deliver", deliver_with_wrong_secret)
    # when
    response = complete(Client(), attempt.id)
    # then
    assert response.status_code == 200
    assert response.json()["webhook"]["status"] == 400
    assert response.json()["webhook"]["body"]["code"] == "invalid_signature"
    assert balance(wallet) == 0
    assert PaymentAttempt.objects.get(id=attempt.id).status == "pending"


# --- without a network round trip ---------------------------------------------------------


@pytest.mark.django_db
def test_unreachable_webhook_answers_503(settings):
    # given: PUBLIC_URL points at a port nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _public_url(settings, f"http://127.0.0.1:{port}")
    _, wallet = register_user()
    attempt = payment_attempt_create(wallet=wallet, amount=1000)
    # when
    response = complete(Client(), attempt.id)
    # then
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert balance(wallet) == 0


@pytest.mark.django_db
@pytest.mark.parametrize("payment_id", [uuid.uuid4(), "not-a-uuid"])
def test_complete_unknown_payment_is_not_found(payment_id):
    response = complete(Client(), payment_id)
    assert response.status_code == 404
    assert response.json()["code"] == "payment_not_found"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body", [{"outcome": "refunded"}, {}, {"outcome": "succeeded", "amount": 1}, {"outcome": 1}, ["succeeded"]]
)
def test_complete_bad_bodies_are_refused(body):
    # given
    _, wallet = register_user()
    attempt = payment_attempt_create(wallet=wallet, amount=1000)
    # when
    response = Client().post(f"/sandbox/payments/{attempt.id}/complete", body, content_type="application/json")
    # then
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"
    assert not GatewayEvent.objects.exists()


@pytest.mark.django_db
def test_checkout_page_shows_the_amount_and_two_buttons():
    # given
    _, wallet = register_user()
    attempt = payment_attempt_create(wallet=wallet, amount=123456)
    # when
    response = Client().get(f"/sandbox/checkout/{attempt.id}")
    # then
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in response["Content-Security-Policy"]
    page = response.content.decode()
    assert "1,234.56 INR" in page
    assert f'action="/sandbox/payments/{attempt.id}/complete"' in page
    assert 'name="outcome" value="succeeded"' in page
    assert 'name="outcome" value="failed"' in page
    # No external assets: no scripts, stylesheets or images from anywhere.
    assert "<script" not in page and "<link" not in page and "src=" not in page


@pytest.mark.django_db
def test_checkout_page_of_unknown_payment_is_404():
    response = Client().get(f"/sandbox/checkout/{uuid.uuid4()}")
    assert response.status_code == 404
    assert "No such payment" in response.content.decode()


@pytest.mark.django_db
def test_checkout_page_takes_get_only():
    _, wallet = register_user()
    attempt = payment_attempt_create(wallet=wallet, amount=100)
    assert Client().post(f"/sandbox/checkout/{attempt.id}").status_code == 405


# --- sandbox off ---------------------------------------------------------------------------


@pytest.fixture
def sandbox_off(settings):
    import walletsite.urls

    original = settings.WALLET
    settings.WALLET = {**original, "GATEWAY_SANDBOX": False}
    importlib.reload(walletsite.urls)
    clear_url_caches()
    yield
    settings.WALLET = original
    importlib.reload(walletsite.urls)
    clear_url_caches()


@pytest.mark.django_db
def test_without_sandbox_mode_the_routes_do_not_exist(api, sandbox_off):
    # given
    user, wallet = register_user()
    attempt = payment_attempt_create(wallet=wallet, amount=100)
    # when / then
    for response in (Client().get(f"/sandbox/checkout/{attempt.id}"), complete(Client(), attempt.id)):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert not GatewayEvent.objects.exists()
    # and add-money offers no sandbox checkout
    started = api.post(
        "/api/v1/wallet/add-money", {"amount": 100}, format="json", HTTP_IDEMPOTENCY_KEY="k", **auth_header(user)
    )
    assert started.status_code == 201
    assert started.json()["checkout_url"] is None
