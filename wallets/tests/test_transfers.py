"""POST /api/v1/wallet/transfer: the contract in API.md, every error code, bad input."""

from __future__ import annotations

import pytest

from ledger.models import Entry, OutboxEvent, Transaction
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import IdempotencyKey
from wallets.services import wallet_freeze
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import balance_of, fund, transfer

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    user, wallet = register_user(name="Alice")
    fund(wallet, 10_000)
    return user, wallet, auth_header(user)


@pytest.fixture
def bob():
    user, wallet = register_user(name="Bob")
    return user, wallet, auth_header(user)


def _ledger_snapshot():
    return Entry.objects.count(), Transaction.objects.count(), IdempotencyKey.objects.count()


def test_transfer_moves_money_and_answers_the_senders_history_item(api, alice, bob):
    # given
    _, a_wallet, a_auth = alice
    _, b_wallet, _ = bob
    # when
    response = transfer(api, a_auth, to=b_wallet.handle, amount=2_500, note="lunch")
    # then
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["balance"] == 7_500
    item = body["transaction"]
    assert item["type"] == "transfer"
    assert item["direction"] == "debit"
    assert item["amount"] == 2_500
    assert item["currency"] == "INR"
    assert item["balance_after"] == 7_500
    assert item["status"] == "posted"
    assert item["note"] == "lunch"
    assert item["counterparty"] == {"handle": b_wallet.handle, "name": "Bob"}
    assert item["created_at"].endswith("Z")
    assert balance_of(a_wallet) == 7_500
    assert balance_of(b_wallet) == 2_500
    assert OutboxEvent.objects.filter(type="transfer.posted", payload__transaction_id=item["id"]).count() == 1
    assert_ledger_consistent()


def test_transfer_by_wallet_id(api, alice, bob):
    _, _, a_auth = alice
    _, b_wallet, _ = bob
    response = transfer(api, a_auth, to=str(b_wallet.id), amount=100)
    assert response.status_code == 201
    assert balance_of(b_wallet) == 100


def test_handles_are_case_insensitive(api, alice, bob):
    _, _, a_auth = alice
    _, b_wallet, _ = bob
    response = transfer(api, a_auth, to=b_wallet.handle.upper(), amount=100)
    assert response.status_code == 201


def test_the_recipient_sees_a_credit_with_the_sender_as_counterparty(api, alice, bob):
    _, a_wallet, a_auth = alice
    _, _, b_auth = bob
    transfer(api, a_auth, to=bob[1].handle, amount=300)
    page = api.get("/api/v1/wallet/transactions", **b_auth).json()
    (item,) = page["data"]
    assert item["direction"] == "credit"
    assert item["amount"] == 300
    assert item["balance_after"] == 300
    assert item["counterparty"]["handle"] == a_wallet.handle


@pytest.mark.parametrize(
    ("amount", "why"),
    [
        (0, "zero"),
        (-5, "negative"),
        (1.5, "fractional"),
        (100.0, "a float that is whole"),
        ("100", "a string"),
        (True, "a boolean"),
        (None, "null"),
        (10**30, "huge"),
        (10_000_001, "above the per-transaction maximum"),
        ([100], "a list"),
    ],
)
def test_bad_amounts_are_refused_and_change_nothing(api, alice, bob, amount, why):
    _, a_wallet, a_auth = alice
    before = _ledger_snapshot()
    response = transfer(api, a_auth, to=bob[1].handle, amount=amount)
    assert response.status_code == 400, why
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "validation_failed"
    assert body["errors"][0]["field"] == "amount"
    assert _ledger_snapshot() == before
    assert balance_of(a_wallet) == 10_000


@pytest.mark.parametrize(
    "body",
    [
        {"to": "x@wallet", "amount": 1, "pin": "1234", "ammount": 1},
        {"amount": 1, "pin": "1234"},
        {"to": "x@wallet", "pin": "1234"},
        {"to": "x@wallet", "amount": 1},
        {"to": "x@wallet", "amount": 1, "pin": "12"},
        {"to": "x@wallet", "amount": 1, "pin": "1234567"},
        {"to": "x@wallet", "amount": 1, "pin": 1234},
        {"to": "x@wallet", "amount": 1, "pin": "١٢٣٤"},
        {"to": 5, "amount": 1, "pin": "1234"},
        {"to": "", "amount": 1, "pin": "1234"},
        {"to": "x@wallet", "amount": 1, "pin": "1234", "note": "n" * 281},
        [1, 2],
        "just a string",
    ],
)
def test_malformed_bodies_are_refused(api, alice, body):
    _, _, a_auth = alice
    before = _ledger_snapshot()
    response = api.post("/api/v1/wallet/transfer", body, format="json", HTTP_IDEMPOTENCY_KEY="k1", **a_auth)
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"
    assert _ledger_snapshot() == before


def test_a_body_that_is_not_json_is_refused(api, alice):
    _, _, a_auth = alice
    response = api.post(
        "/api/v1/wallet/transfer", b"{not json", content_type="application/json", HTTP_IDEMPOTENCY_KEY="k", **a_auth
    )
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"


def test_a_body_that_is_not_declared_json_is_refused(api, alice):
    _, _, a_auth = alice
    response = api.post(
        "/api/v1/wallet/transfer",
        b"to=a&amount=1",
        content_type="application/x-www-form-urlencoded",
        HTTP_IDEMPOTENCY_KEY="k",
        **a_auth,
    )
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_idempotency_key_is_required(api, alice, bob):
    _, _, a_auth = alice
    response = transfer(api, a_auth, to=bob[1].handle, amount=1, key="")
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_required"


@pytest.mark.parametrize("key", ["k" * 256, "has space", "tab\there", "ключ"])
def test_malformed_idempotency_keys_are_refused(api, alice, bob, key):
    _, _, a_auth = alice
    response = api.post(
        "/api/v1/wallet/transfer",
        {"to": bob[1].handle, "amount": 1, "pin": "1234"},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
        **a_auth,
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_idempotency_key"


def test_a_retry_replays_the_first_answer_and_moves_money_once(api, alice, bob):
    _, a_wallet, a_auth = alice
    first = transfer(api, a_auth, to=bob[1].handle, amount=1_000, key="retry-1")
    again = transfer(api, a_auth, to=bob[1].handle, amount=1_000, key="retry-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert balance_of(a_wallet) == 9_000
    assert_ledger_consistent()


def test_a_replay_needs_no_pin_and_does_not_count_a_guess(api, alice, bob):
    a_user, _, a_auth = alice
    transfer(api, a_auth, to=bob[1].handle, amount=1_000, key="retry-2")
    again = transfer(api, a_auth, to=bob[1].handle, amount=1_000, key="retry-2", pin="9999")
    assert again.status_code == 201
    a_user.pin.refresh_from_db()
    assert a_user.pin.failed_attempts == 0


def test_the_same_key_with_another_body_is_refused(api, alice, bob):
    _, a_wallet, a_auth = alice
    transfer(api, a_auth, to=bob[1].handle, amount=1_000, key="retry-3")
    other = transfer(api, a_auth, to=bob[1].handle, amount=1_001, key="retry-3")
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    assert balance_of(a_wallet) == 9_000


def test_keys_are_scoped_to_the_caller(api, alice, bob):
    _, b_wallet, b_auth = bob
    fund(b_wallet, 500)
    first = transfer(api, alice[2], to=b_wallet.handle, amount=100, key="shared")
    second = transfer(api, b_auth, to=alice[1].handle, amount=100, key="shared")
    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in second


def test_a_stored_refusal_replays_as_the_same_refusal(api, alice, bob):
    _, a_wallet, a_auth = alice
    first = transfer(api, a_auth, to=bob[1].handle, amount=20_000, key="poor")
    assert first.status_code == 422
    assert first.json()["code"] == "insufficient_funds"
    fund(a_wallet, 50_000)
    again = transfer(api, a_auth, to=bob[1].handle, amount=20_000, key="poor")
    assert again.status_code == 422
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert balance_of(bob[1]) == 0


def test_a_wrong_pin_is_not_stored_so_the_key_can_be_retried(api, alice, bob):
    _, _, a_auth = alice
    wrong = transfer(api, a_auth, to=bob[1].handle, amount=100, key="pin-typo", pin="0000")
    assert wrong.status_code == 403
    assert wrong.json()["code"] == "invalid_pin"
    right = transfer(api, a_auth, to=bob[1].handle, amount=100, key="pin-typo")
    assert right.status_code == 201
    assert balance_of(bob[1]) == 100


def test_five_wrong_pins_lock_pin_requests(api, alice, bob):
    _, _, a_auth = alice
    codes = [transfer(api, a_auth, to=bob[1].handle, amount=1, pin="0000").json()["code"] for _ in range(6)]
    assert codes == ["invalid_pin"] * 5 + ["pin_locked"]
    locked = transfer(api, a_auth, to=bob[1].handle, amount=1)
    assert locked.status_code == 423
    assert locked.json()["code"] == "pin_locked"
    assert balance_of(bob[1]) == 0


def test_insufficient_funds(api, alice, bob):
    _, a_wallet, a_auth = alice
    response = transfer(api, a_auth, to=bob[1].handle, amount=10_001)
    assert response.status_code == 422
    assert response.json()["code"] == "insufficient_funds"
    assert balance_of(a_wallet) == 10_000
    assert_ledger_consistent()


def test_sending_the_whole_balance_leaves_zero(api, alice, bob):
    _, a_wallet, a_auth = alice
    assert transfer(api, a_auth, to=bob[1].handle, amount=10_000).status_code == 201
    assert balance_of(a_wallet) == 0


def test_paying_yourself_is_refused(api, alice):
    _, a_wallet, a_auth = alice
    response = transfer(api, a_auth, to=a_wallet.handle, amount=1)
    assert response.status_code == 422
    assert response.json()["code"] == "same_wallet"


@pytest.mark.parametrize("to", ["nobody@wallet", "00000000-0000-0000-0000-000000000000", "not-a-handle"])
def test_unknown_recipient(api, alice, to):
    _, _, a_auth = alice
    response = transfer(api, a_auth, to=to, amount=1)
    assert response.status_code == 404
    assert response.json()["code"] == "wallet_not_found"


@pytest.mark.parametrize("side", ["sender", "recipient"])
def test_a_frozen_wallet_neither_sends_nor_receives(api, alice, bob, side):
    _, a_wallet, a_auth = alice
    _, b_wallet, _ = bob
    wallet_freeze(wallet_id=(a_wallet if side == "sender" else b_wallet).id, actor=None, reason="fraud review")
    response = transfer(api, a_auth, to=b_wallet.handle, amount=100)
    assert response.status_code == 423
    assert response.json()["code"] == "wallet_frozen"
    assert balance_of(a_wallet) == 10_000
    assert balance_of(b_wallet) == 0


def test_no_token_and_bad_token(api, bob):
    response = transfer(api, {}, to=bob[1].handle, amount=1)
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_required"
    response = transfer(api, {"HTTP_AUTHORIZATION": "Bearer nope"}, to=bob[1].handle, amount=1)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


def test_staff_without_a_wallet_are_refused(api, bob):
    from accounts.models import User

    staff = User.objects.create_user(email="ops@example.com", password="x" * 12, is_staff=True)
    response = transfer(api, auth_header(staff), to=bob[1].handle, amount=1)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


def test_wrong_method(api, alice):
    response = api.get("/api/v1/wallet/transfer", **alice[2])
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
