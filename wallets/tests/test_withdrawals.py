"""Withdrawals through the API, on real PostgreSQL: bank accounts, the withdraw request and
its hold, GET of a withdrawal, the bank's signed callback (duplicates, contradictions,
mismatches, ten racing callbacks), and every refusal changing nothing. The bank itself (the
worker's payouts, recovery, the breaker) is in test_bank.py, over real HTTP."""

from __future__ import annotations

import json
import logging
import threading
import uuid

import pytest
from django.db import connection

from ledger.models import AuditLog, Entry, Hold, OutboxEvent
from ledger.posting import system_account
from ledger.tests.invariants import assert_ledger_consistent
from wallets.gateway import signature_header
from wallets.models import BankAccount, BankEvent, Wallet, Withdrawal
from wallets.services import wallet_freeze
from wallets.tests.factories import DEFAULT_PIN, auth_header, register_user
from wallets.tests.money import fund
from wallets.withdrawals import bank_account_create, bank_event_process, withdrawal_create

ACCOUNT_NUMBER = "001234567890"
IFSC = "HDFC0001234"


# --- helpers other withdrawal tests share ------------------------------------------------


def add_bank_account(wallet: Wallet, number: str = ACCOUNT_NUMBER) -> BankAccount:
    return bank_account_create(wallet=wallet, account_number=number, ifsc=IFSC, holder_name="Asha Rao")


def withdraw(api, headers, *, amount, bank_account, pin=DEFAULT_PIN, key=None, **extra):
    body = {"amount": amount, "pin": pin, "bank_account": str(bank_account), **extra}
    key_header = {} if key == "" else {"HTTP_IDEMPOTENCY_KEY": key or uuid.uuid4().hex}
    return api.post("/api/v1/wallet/withdraw", body, format="json", **headers, **key_header)


def funded_withdrawal(amount: int = 40_000, funds: int = 100_000) -> tuple[Wallet, Withdrawal]:
    """A wallet with `funds`, and a pending withdrawal of `amount` from it (service level)."""
    from ledger.posting import atomic

    _, wallet = register_user()
    fund(wallet, funds)
    account = add_bank_account(wallet)
    with atomic():
        withdrawal = withdrawal_create(wallet=wallet, bank_account_id=str(account.id), amount=amount)
    return wallet, withdrawal


def bank_event(withdrawal: Withdrawal, outcome: str = "succeeded", *, amount=None, event_id=None, **data) -> dict:
    return {
        "id": event_id or f"bevt_{uuid.uuid4().hex}",
        "type": f"payout.{outcome}",
        "data": {
            "reference": str(withdrawal.id),
            "amount": withdrawal.amount if amount is None else amount,
            "currency": withdrawal.currency,
            **data,
        },
    }


def post_callback(client, event: dict, *, secret: str | None = None, header: str | None = None):
    from django.conf import settings

    body = json.dumps(event).encode()
    signature = header or signature_header(secrets=secret or settings.WALLET["BANK_WEBHOOK_SECRET"], body=body)
    return client.post(
        "/api/v1/webhooks/bank", body, content_type="application/json", headers={"Bank-Signature": signature}
    )


def money(wallet: Wallet) -> tuple[int, int]:
    """(balance, held_balance) of the wallet's account, fresh."""
    wallet.account.refresh_from_db()
    return wallet.account.balance, wallet.account.held_balance


def payouts_balance() -> int:
    return system_account("bank_payouts").balance


# --- bank accounts -----------------------------------------------------------------------


@pytest.fixture
def customer(db):
    user, wallet = register_user(name="asha")
    return user, wallet, auth_header(user)


def test_register_and_list_bank_accounts_show_only_the_last_four_digits(api, customer, caplog):
    # given
    _, wallet, headers = customer
    caplog.set_level(logging.DEBUG)
    # when
    created = api.post(
        "/api/v1/wallet/bank-accounts",
        {"account_number": ACCOUNT_NUMBER, "ifsc": IFSC, "holder_name": "Asha Rao"},
        format="json",
        **headers,
    )
    listed = api.get("/api/v1/wallet/bank-accounts", **headers)
    # then
    assert created.status_code == 201, created.content
    body = created.json()
    assert set(body) == {"id", "last4", "ifsc", "holder_name", "created_at"}
    assert body["last4"] == "7890" and body["ifsc"] == IFSC and body["holder_name"] == "Asha Rao"
    assert listed.status_code == 200
    assert listed.json()["data"] == [body]
    assert ACCOUNT_NUMBER not in created.content.decode() + listed.content.decode()
    assert ACCOUNT_NUMBER not in caplog.text
    stored = BankAccount.objects.get(id=body["id"])
    assert stored.account_number == ACCOUNT_NUMBER and stored.wallet_id == wallet.id
    assert ACCOUNT_NUMBER not in str(stored) + repr(stored)
    assert ACCOUNT_NUMBER not in stored.fingerprint


def test_a_duplicate_bank_account_is_refused_but_another_user_may_register_it(api, customer):
    # given
    _, wallet, headers = customer
    add_bank_account(wallet)
    other_user, _ = register_user()
    body = {"account_number": ACCOUNT_NUMBER, "ifsc": IFSC, "holder_name": "Someone"}
    # when
    again = api.post("/api/v1/wallet/bank-accounts", body, format="json", **headers)
    theirs = api.post("/api/v1/wallet/bank-accounts", body, format="json", **auth_header(other_user))
    # then
    assert again.status_code == 409
    assert again.json()["code"] == "bank_account_exists"
    assert ACCOUNT_NUMBER not in again.content.decode()
    assert theirs.status_code == 201
    assert BankAccount.objects.filter(wallet=wallet).count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"account_number": "12345678", "ifsc": IFSC, "holder_name": "A"},  # 8 digits
        {"account_number": "1234567890123456789", "ifsc": IFSC, "holder_name": "A"},  # 19 digits
        {"account_number": "12345678a0", "ifsc": IFSC, "holder_name": "A"},
        {"account_number": 1234567890, "ifsc": IFSC, "holder_name": "A"},
        {"account_number": ACCOUNT_NUMBER, "ifsc": "hdfc0001234", "holder_name": "A"},
        {"account_number": ACCOUNT_NUMBER, "ifsc": "HDFC1001234", "holder_name": "A"},
        {"account_number": ACCOUNT_NUMBER, "ifsc": "HDFC000123", "holder_name": "A"},
        {"account_number": ACCOUNT_NUMBER, "ifsc": IFSC, "holder_name": ""},
        {"account_number": ACCOUNT_NUMBER, "ifsc": IFSC},
        {"account_number": ACCOUNT_NUMBER, "ifsc": IFSC, "holder_name": "A", "nickname": "x"},
    ],
)
def test_bad_bank_accounts_are_refused_and_nothing_is_stored(api, customer, body):
    # given
    _, _, headers = customer
    # when
    response = api.post("/api/v1/wallet/bank-accounts", body, format="json", **headers)
    # then
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"
    assert ACCOUNT_NUMBER not in response.content.decode()
    assert BankAccount.objects.count() == 0


def test_bank_account_routes_need_a_token(api, db):
    assert api.get("/api/v1/wallet/bank-accounts").json()["code"] == "authentication_required"
    assert api.post("/api/v1/wallet/bank-accounts", {}, format="json").status_code == 401
    assert api.post("/api/v1/wallet/withdraw", {}, format="json").status_code == 401
    assert api.get(f"/api/v1/wallet/withdrawals/{uuid.uuid4()}").status_code == 401


# --- the withdraw request ----------------------------------------------------------------


def test_withdraw_holds_the_money_and_answers_pending(api, customer, caplog):
    # given
    _, wallet, headers = customer
    fund(wallet, 100_000)
    account = add_bank_account(wallet)
    caplog.set_level(logging.DEBUG)
    # when
    response = withdraw(api, headers, amount=40_000, bank_account=account.id, key="w-1")
    # then
    assert response.status_code == 202, response.content
    body = response.json()
    assert body == {"withdrawal_id": body["withdrawal_id"], "status": "pending", "amount": 40_000}
    assert money(wallet) == (100_000, 40_000)
    withdrawal = Withdrawal.objects.get(id=body["withdrawal_id"])
    assert withdrawal.status == "pending" and withdrawal.bank_account_id == account.id
    assert withdrawal.hold.reference == f"withdrawal:{withdrawal.id}" and withdrawal.hold.status == "pending"
    event = OutboxEvent.objects.get(type="withdrawal.requested")
    assert event.payload["withdrawal_id"] == str(withdrawal.id)
    assert event.payload["wallet_ids"] == [str(wallet.id)]
    assert event.payload["amount"] == 40_000 and event.payload["currency"] == "INR"
    balance = api.get("/api/v1/wallet/balance", **headers).json()
    assert (balance["balance"], balance["held_balance"], balance["available_balance"]) == (100_000, 40_000, 60_000)
    assert ACCOUNT_NUMBER not in caplog.text
    assert_ledger_consistent()


def test_a_withdraw_replay_holds_once(api, customer):
    # given
    _, wallet, headers = customer
    fund(wallet, 100_000)
    account = add_bank_account(wallet)
    first = withdraw(api, headers, amount=30_000, bank_account=account.id, key="same")
    # when
    again = withdraw(api, headers, amount=30_000, bank_account=account.id, key="same")
    other_body = withdraw(api, headers, amount=30_001, bank_account=account.id, key="same")
    # then
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other_body.status_code == 422 and other_body.json()["code"] == "idempotency_key_reused"
    assert Withdrawal.objects.count() == 1 and Hold.objects.count() == 1
    assert money(wallet) == (100_000, 30_000)
    assert_ledger_consistent()


def test_withdraw_refusals_change_nothing(api, customer):
    # given
    _, wallet, headers = customer
    fund(wallet, 2_000_000)
    account = add_bank_account(wallet)
    _, stranger = register_user()
    strangers_account = add_bank_account(stranger)
    cases = [
        ({"amount": 1000, "bank_account": uuid.uuid4()}, 404, "bank_account_not_found"),
        ({"amount": 1000, "bank_account": strangers_account.id}, 404, "bank_account_not_found"),
        ({"amount": 1000, "bank_account": "not-an-id"}, 404, "bank_account_not_found"),
        ({"amount": 1_000_001, "bank_account": account.id}, 422, "limit_exceeded"),
        ({"amount": 1000, "bank_account": account.id, "pin": "9999"}, 403, "invalid_pin"),
        ({"amount": 1000, "bank_account": account.id, "key": ""}, 400, "idempotency_key_required"),
        ({"amount": 0, "bank_account": account.id}, 400, "validation_failed"),
        ({"amount": "1000", "bank_account": account.id}, 400, "validation_failed"),
        ({"amount": 10.5, "bank_account": account.id}, 400, "validation_failed"),
        ({"amount": 1000, "bank_account": account.id, "note": "x"}, 400, "validation_failed"),
    ]
    for case, status, code in cases:
        # when
        response = withdraw(api, headers, **case)
        # then
        assert response.status_code == status, (case, response.content)
        assert response.json()["code"] == code, case
    poor_user, poor = register_user()
    fund(poor, 500)
    poor_account = add_bank_account(poor)
    response = withdraw(api, auth_header(poor_user), amount=501, bank_account=poor_account.id)
    assert response.status_code == 422 and response.json()["code"] == "insufficient_funds"
    assert Withdrawal.objects.count() == 0 and Hold.objects.count() == 0
    assert money(wallet) == (2_000_000, 0) and money(poor) == (500, 0)
    assert not OutboxEvent.objects.filter(type="withdrawal.requested").exists()
    assert_ledger_consistent()


def test_a_frozen_wallet_cannot_withdraw(api, customer):
    # given
    _, wallet, headers = customer
    fund(wallet, 10_000)
    account = add_bank_account(wallet)
    staff, _ = register_user()
    wallet_freeze(wallet_id=wallet.id, actor=staff, reason="fraud check")
    # when
    response = withdraw(api, headers, amount=1000, bank_account=account.id)
    # then
    assert response.status_code == 423 and response.json()["code"] == "wallet_frozen"
    assert Withdrawal.objects.count() == 0 and money(wallet) == (10_000, 0)
    assert_ledger_consistent()


def test_get_a_withdrawal_for_its_owner_only(api, customer):
    # given
    _, wallet, headers = customer
    fund(wallet, 10_000)
    account = add_bank_account(wallet)
    withdrawal_id = withdraw(api, headers, amount=2500, bank_account=account.id).json()["withdrawal_id"]
    outsider, _ = register_user()
    # when
    mine = api.get(f"/api/v1/wallet/withdrawals/{withdrawal_id}", **headers)
    # then
    assert mine.status_code == 200
    body = mine.json()
    assert body["withdrawal_id"] == withdrawal_id and body["status"] == "pending" and body["amount"] == 2500
    assert body["bank_account"]["id"] == str(account.id) and body["bank_account"]["last4"] == "7890"
    assert body["created_at"].endswith("Z") and body["transaction_id"] is None
    assert ACCOUNT_NUMBER not in mine.content.decode()
    for other_id, caller in [(withdrawal_id, auth_header(outsider)), (uuid.uuid4(), headers), ("nope", headers)]:
        response = api.get(f"/api/v1/wallet/withdrawals/{other_id}", **caller)
        assert response.status_code == 404 and response.json()["code"] == "withdrawal_not_found"
    assert_ledger_consistent()


# --- the bank's callback -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_success_callback_posts_the_hold_once(client):
    # given
    wallet, withdrawal = funded_withdrawal(amount=40_000, funds=100_000)
    event = bank_event(withdrawal, "succeeded")
    # when
    first = post_callback(client, event)
    duplicate = post_callback(client, event)
    again = post_callback(client, bank_event(withdrawal, "succeeded"))
    # then
    assert first.status_code == 200, first.content
    assert first.json() == {
        "received": True,
        "result": "posted",
        "withdrawal_id": str(withdrawal.id),
        "status": "succeeded",
    }
    assert duplicate.json()["result"] == "duplicate"
    assert again.json()["result"] == "already_settled"
    assert money(wallet) == (60_000, 0)
    withdrawal.refresh_from_db()
    assert withdrawal.status == "succeeded" and withdrawal.transaction is not None
    assert withdrawal.bank_status == "succeeded"
    entry = Entry.objects.get(transaction=withdrawal.transaction, account_id=wallet.account_id)
    assert entry.amount == -40_000 and entry.type == "withdrawal"
    assert payouts_balance() == 40_000
    assert OutboxEvent.objects.filter(type="withdrawal.succeeded").count() == 1
    assert not withdrawal.flagged_for_review
    assert_ledger_consistent()


@pytest.mark.django_db
def test_a_failure_callback_releases_and_a_late_success_is_flagged_not_posted(client):
    # given
    wallet, withdrawal = funded_withdrawal(amount=40_000, funds=100_000)
    # when
    failed = post_callback(client, bank_event(withdrawal, "failed", reason="account closed"))
    late = post_callback(client, bank_event(withdrawal, "succeeded"))
    # then
    assert failed.json()["result"] == "released" and failed.json()["status"] == "failed"
    assert late.status_code == 200 and late.json()["result"] == "flagged"
    assert money(wallet) == (100_000, 0)
    withdrawal.refresh_from_db()
    assert withdrawal.status == "failed" and withdrawal.failure_reason == "account closed"
    # a contradicting callback changes nothing, the bank status it recorded included
    assert withdrawal.bank_status == "failed"
    assert withdrawal.flagged_for_review and "after the withdrawal was failed" in withdrawal.review_reason
    assert AuditLog.objects.filter(action="withdrawal.flag", target=f"withdrawal:{withdrawal.id}").count() == 1
    assert payouts_balance() == 0
    assert OutboxEvent.objects.filter(type="withdrawal.failed").count() == 1
    assert_ledger_consistent()


@pytest.mark.django_db
def test_bad_callbacks_change_nothing(client):
    # given
    wallet, withdrawal = funded_withdrawal(amount=40_000, funds=100_000)
    good = bank_event(withdrawal)
    body = json.dumps(good).encode()
    stale = signature_header(secrets="x" * 40, body=body)
    cases = [
        (post_callback(client, good, header=stale), 400, "invalid_signature"),
        (post_callback(client, good, secret="another secret that is long enough"), 400, "invalid_signature"),
        (client.post("/api/v1/webhooks/bank", body, content_type="application/json"), 400, "invalid_signature"),
        (post_callback(client, {**good, "extra": 1}), 400, "validation_failed"),
        (post_callback(client, {**good, "type": "payout.maybe"}), 400, "validation_failed"),
        (post_callback(client, bank_event(withdrawal, amount="40000")), 400, "validation_failed"),
        (post_callback(client, {**good, "data": {**good["data"], "reference": str(uuid.uuid4())}}), 404, None),
    ]
    # then
    for response, status, code in cases:
        assert response.status_code == status, response.content
        assert response.json()["code"] == (code or "withdrawal_not_found")
    assert BankEvent.objects.count() == 0
    assert money(wallet) == (100_000, 40_000)
    withdrawal.refresh_from_db()
    assert withdrawal.status == "pending" and not withdrawal.flagged_for_review
    assert_ledger_consistent()


@pytest.mark.django_db
def test_a_callback_with_another_amount_is_flagged_and_moves_nothing(client):
    # given
    wallet, withdrawal = funded_withdrawal(amount=40_000, funds=100_000)
    # when
    response = post_callback(client, bank_event(withdrawal, amount=45_000))
    # then
    assert response.status_code == 422 and response.json()["code"] == "amount_mismatch"
    withdrawal.refresh_from_db()
    assert withdrawal.status == "pending" and withdrawal.flagged_for_review
    assert BankEvent.objects.get().outcome == "amount_mismatch"
    assert money(wallet) == (100_000, 40_000)
    assert_ledger_consistent()


@pytest.mark.django_db(transaction=True)
def test_ten_racing_callbacks_with_mixed_outcomes_settle_exactly_once():
    # given: ten different events for one payout, half success and half failure
    wallet, withdrawal = funded_withdrawal(amount=40_000, funds=100_000)
    events = [bank_event(withdrawal, "succeeded" if i % 2 else "failed") for i in range(10)]
    results: list[str] = []
    barrier = threading.Barrier(len(events))

    def deliver(event):
        try:
            barrier.wait()
            results.append(bank_event_process(event=event).result)
        finally:
            connection.close()

    # when
    threads = [threading.Thread(target=deliver, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then: one settled it; the same outcome again is nothing, the other one is flagged
    assert len(results) == 10
    settled = [r for r in results if r in ("posted", "released")]
    assert len(settled) == 1
    withdrawal.refresh_from_db()
    if settled[0] == "posted":
        assert withdrawal.status == "succeeded" and money(wallet) == (60_000, 0) and payouts_balance() == 40_000
    else:
        assert withdrawal.status == "failed" and money(wallet) == (100_000, 0) and payouts_balance() == 0
    assert results.count("flagged") == 5 and results.count("already_settled") == 4
    assert Entry.objects.filter(account_id=wallet.account_id, type="withdrawal").count() == (
        1 if settled[0] == "posted" else 0
    )
    assert BankEvent.objects.count() == 10
    assert_ledger_consistent()


@pytest.mark.django_db(transaction=True)
def test_ten_copies_of_one_callback_settle_once():
    # given
    wallet, withdrawal = funded_withdrawal(amount=40_000, funds=100_000)
    event = bank_event(withdrawal, "succeeded")
    results: list[str] = []
    barrier = threading.Barrier(10)

    def deliver():
        try:
            barrier.wait()
            results.append(bank_event_process(event=event).result)
        finally:
            connection.close()

    # when
    threads = [threading.Thread(target=deliver) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then
    assert sorted(results) == ["duplicate"] * 9 + ["posted"]
    assert money(wallet) == (60_000, 0)
    assert_ledger_consistent()
