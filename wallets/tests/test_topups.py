"""Add-money (POST /wallet/add-money), the payment attempt (GET /wallet/payments/{id}) and the
expiry job: every answer of the contract, against the real database."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from ledger.models import Entry
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import IdempotencyKey, PaymentAttempt, Wallet
from wallets.tests.factories import auth_header, register_user
from wallets.topups import gateway_event_process, payment_attempt_create, payment_attempts_expire

pytestmark = pytest.mark.django_db

ADD_MONEY = "/api/v1/wallet/add-money"


def add_money(api, headers: dict, body, key: str | None = None):
    key_header = {} if key == "" else {"HTTP_IDEMPOTENCY_KEY": key or uuid.uuid4().hex}
    return api.post(ADD_MONEY, body, format="json", **headers, **key_header)


def _attempt_counts() -> tuple[int, int]:
    return PaymentAttempt.objects.count(), IdempotencyKey.objects.count()


@pytest.fixture
def customer():
    user, wallet = register_user()
    return user, wallet, auth_header(user)


def test_add_money_creates_a_pending_attempt(api, customer, settings):
    # given
    _, wallet, headers = customer
    before = timezone.now()
    # when
    response = add_money(api, headers, {"amount": 50000})
    # then
    assert response.status_code == 201, response.content
    body = response.json()
    attempt = PaymentAttempt.objects.get(id=body["payment_id"])
    assert body["status"] == "pending"
    assert body["amount"] == 50000
    assert body["currency"] == wallet.currency == "INR"
    assert body["checkout_url"] == f"{settings.WALLET['PUBLIC_URL']}/sandbox/checkout/{attempt.id}"
    assert attempt.wallet_id == wallet.id and attempt.amount == 50000 and attempt.status == "pending"
    ttl = settings.WALLET["PAYMENT_ATTEMPT_TTL_SECONDS"]
    assert before + timedelta(seconds=ttl) <= attempt.expires_at <= timezone.now() + timedelta(seconds=ttl)
    # Nothing is credited before the gateway says so.
    assert not Entry.objects.filter(account_id=wallet.account_id).exists()
    assert_ledger_consistent()


def test_add_money_replay_returns_the_first_answer(api, customer):
    # given
    _, _, headers = customer
    first = add_money(api, headers, {"amount": 1000}, key="topup-1")
    # when
    again = add_money(api, headers, {"amount": 1000}, key="topup-1")
    # then
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert PaymentAttempt.objects.count() == 1


def test_add_money_same_key_different_body_is_refused(api, customer):
    # given
    _, _, headers = customer
    add_money(api, headers, {"amount": 1000}, key="topup-2")
    # when
    response = add_money(api, headers, {"amount": 2000}, key="topup-2")
    # then
    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "idempotency_key_reused"
    assert PaymentAttempt.objects.count() == 1


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("", "idempotency_key_required"),
        ("x" * 256, "invalid_idempotency_key"),
        ("has space", "invalid_idempotency_key"),
    ],
)
def test_add_money_needs_a_valid_idempotency_key(api, customer, key, code):
    # given
    _, _, headers = customer
    # when
    response = add_money(api, headers, {"amount": 1000}, key=key)
    # then
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert _attempt_counts() == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 0},
        {"amount": -1},
        {"amount": 1.5},
        {"amount": 100.0},
        {"amount": "100"},
        {"amount": True},
        {"amount": None},
        {"amount": 10_000_001},
        {},
        {"amount": 100, "currency": "INR"},
        {"ammount": 100},
        [100],
    ],
    ids=[
        "zero",
        "negative",
        "fraction",
        "whole-float",
        "string",
        "bool",
        "null",
        "huge",
        "missing",
        "extra",
        "typo",
        "list",
    ],
)
def test_add_money_bad_bodies_are_refused(api, customer, body, settings):
    # given
    assert settings.WALLET["MAX_TRANSACTION_AMOUNT"] == 10_000_000
    _, _, headers = customer
    # when
    response = add_money(api, headers, body)
    # then
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "validation_failed"
    assert _attempt_counts() == (0, 0)


def test_add_money_needs_authentication(api):
    # when
    response = api.post(ADD_MONEY, {"amount": 1000}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    # then
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_required"
    assert _attempt_counts() == (0, 0)


def test_add_money_to_a_frozen_wallet_is_refused(api, customer):
    # given
    _, wallet, headers = customer
    Wallet.objects.filter(id=wallet.id).update(status=Wallet.Status.FROZEN)
    # when
    response = add_money(api, headers, {"amount": 1000}, key="frozen-1")
    # then
    assert response.status_code == 423
    assert response.json()["code"] == "wallet_frozen"
    assert not PaymentAttempt.objects.exists()
    # The refusal is the key's stored answer, as Stripe stores refusals.
    again = add_money(api, headers, {"amount": 1000}, key="frozen-1")
    assert again.status_code == 423 and again["Idempotent-Replayed"] == "true"


def test_payment_attempt_is_shown_to_its_owner(api, customer):
    # given
    _, wallet, headers = customer
    attempt = payment_attempt_create(wallet=wallet, amount=700)
    # when
    response = api.get(f"/api/v1/wallet/payments/{attempt.id}", **headers)
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["payment_id"] == str(attempt.id)
    assert body["status"] == "pending"
    assert body["amount"] == 700 and body["currency"] == "INR"
    assert body["created_at"].endswith("Z") and body["expires_at"].endswith("Z")
    assert body["checkout_url"].endswith(f"/sandbox/checkout/{attempt.id}")


def test_payment_attempt_of_another_wallet_is_not_found(api, customer):
    # given
    _, _, headers = customer
    _, other_wallet = register_user()
    others = payment_attempt_create(wallet=other_wallet, amount=700)
    # when / then
    for payment_id in (others.id, uuid.uuid4(), "not-a-uuid"):
        response = api.get(f"/api/v1/wallet/payments/{payment_id}", **headers)
        assert response.status_code == 404
        assert response.json()["code"] == "payment_not_found"


def test_payment_attempt_needs_authentication(api, customer):
    _, wallet, _ = customer
    attempt = payment_attempt_create(wallet=wallet, amount=700)
    response = api.get(f"/api/v1/wallet/payments/{attempt.id}")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_required"


def test_expiry_marks_only_overdue_pending_attempts(customer):
    # given
    _, wallet, _ = customer
    now = timezone.now()
    overdue = [payment_attempt_create(wallet=wallet, amount=100) for _ in range(3)]
    fresh = payment_attempt_create(wallet=wallet, amount=100)
    succeeded = payment_attempt_create(wallet=wallet, amount=100)
    gateway_event_process(
        event={
            "id": "evt_expiry_succeeded",
            "type": "payment.succeeded",
            "data": {"payment_id": str(succeeded.id), "amount": 100, "currency": "INR", "gateway_reference": "g1"},
        }
    )
    failed = payment_attempt_create(wallet=wallet, amount=100)
    PaymentAttempt.objects.filter(id=failed.id).update(status="failed")
    PaymentAttempt.objects.filter(id__in=[a.id for a in [*overdue, succeeded, failed]]).update(
        expires_at=now - timedelta(seconds=1)
    )
    # when
    expired = payment_attempts_expire(now=now)
    # then
    assert expired == 3
    statuses = dict(PaymentAttempt.objects.values_list("id", "status"))
    assert {statuses[a.id] for a in overdue} == {"expired"}
    assert statuses[fresh.id] == "pending"
    assert statuses[succeeded.id] == "succeeded"
    assert statuses[failed.id] == "failed"
    # A second run finds nothing left to do.
    assert payment_attempts_expire(now=now) == 0
    assert_ledger_consistent()


def test_expiry_works_in_batches(customer, monkeypatch):
    # given: more overdue attempts than one batch holds
    from wallets import topups

    monkeypatch.setattr(topups, "EXPIRE_BATCH_SIZE", 2)
    _, wallet, _ = customer
    for _ in range(5):
        payment_attempt_create(wallet=wallet, amount=100)
    # when
    expired = payment_attempts_expire(now=timezone.now() + timedelta(days=8))
    # then
    assert expired == 5
    assert set(PaymentAttempt.objects.values_list("status", flat=True)) == {"expired"}


def test_expired_attempt_shows_no_checkout_url(api, customer):
    # given
    _, wallet, headers = customer
    attempt = payment_attempt_create(wallet=wallet, amount=700)
    payment_attempts_expire(now=timezone.now() + timedelta(days=8))
    # when
    response = api.get(f"/api/v1/wallet/payments/{attempt.id}", **headers)
    # then
    assert response.json()["status"] == "expired"
    assert response.json()["checkout_url"] is None


@pytest.mark.django_db(transaction=True)
def test_expiry_skips_an_attempt_a_webhook_holds_locked():
    # given: two overdue attempts, one row locked by another connection (a webhook deciding it)
    import threading

    from django.db import connection, transaction

    _, wallet = register_user()
    held = payment_attempt_create(wallet=wallet, amount=100)
    free = payment_attempt_create(wallet=wallet, amount=100)
    locked, release = threading.Event(), threading.Event()

    def webhook_holding_the_row():
        try:
            with transaction.atomic():
                PaymentAttempt.objects.select_for_update().get(id=held.id)
                locked.set()
                release.wait(timeout=10)
        finally:
            connection.close()

    holder = threading.Thread(target=webhook_holding_the_row)
    holder.start()
    assert locked.wait(timeout=10)
    try:
        # when: the job runs without waiting for the lock
        expired = payment_attempts_expire(now=timezone.now() + timedelta(days=8))
    finally:
        release.set()
        holder.join(timeout=10)
    # then
    assert expired == 1
    statuses = dict(PaymentAttempt.objects.values_list("id", "status"))
    assert statuses == {held.id: "pending", free.id: "expired"}
    # The next run expires the skipped one.
    assert payment_attempts_expire(now=timezone.now() + timedelta(days=8)) == 1
