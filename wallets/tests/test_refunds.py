"""POST /merchant/payments/{transaction_id}/refund: full and partial refunds, the fee given
back in proportion, every refusal changes nothing, and a replay of a successful refund
returns its 201 (never a 422 "exceeds", the Blnk #374 class of bug)."""

from __future__ import annotations

import uuid

import pytest

from ledger.models import Entry, OutboxEvent
from ledger.posting import system_account
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import Payment, Refund
from wallets.services import wallet_freeze
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import balance_of, fund, transfer
from wallets.tests.test_payments import fees_balance, merchant, pay, refund, snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def paid(api):
    """A payment of 10_000 to a merchant charging 333 bps: fee 333."""
    customer, customer_wallet = register_user(name="carol")
    fund(customer_wallet, 50_000)
    merchant_user, merchant_wallet = merchant(fee_bps=333)
    auth = auth_header(customer)
    body = pay(api, auth, merchant=merchant_wallet.handle, amount=10_000).json()
    return {
        "customer": customer,
        "wallet": customer_wallet,
        "auth": auth,
        "merchant": merchant_user,
        "merchant_wallet": merchant_wallet,
        "merchant_auth": auth_header(merchant_user),
        "txn": body["transaction"]["id"],
        "payment": Payment.objects.get(transaction_id=body["transaction"]["id"]),
    }


def test_a_full_refund_gives_back_everything_and_the_whole_fee(api, paid):
    # given
    fees_before = fees_balance()
    # when
    response = refund(api, paid["merchant_auth"], paid["txn"], reason="out of stock")
    # then
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["amount"] == 10_000
    assert body["fee_refunded"] == 333
    assert body["reason"] == "out of stock"
    assert body["payment"]["refunded_total"] == 10_000
    assert body["payment"]["refundable"] == 0
    assert body["payment"]["transaction_id"] == paid["txn"]
    item = body["transaction"]
    assert (item["type"], item["direction"], item["amount"]) == ("refund", "debit", 9_667)
    assert item["counterparty"]["handle"] == paid["wallet"].handle
    assert item["balance_after"] == body["balance"] == 0
    assert balance_of(paid["wallet"]) == 50_000
    assert balance_of(paid["merchant_wallet"]) == 0
    assert fees_balance() == fees_before - 333
    refund_row = Refund.objects.get(id=body["refund_id"])
    assert (refund_row.amount, refund_row.fee_refunded, refund_row.reason) == (10_000, 333, "out of stock")
    entries = dict(Entry.objects.filter(transaction_id=item["id"]).values_list("account_id", "amount"))
    assert entries == {
        paid["merchant_wallet"].account_id: -9_667,
        system_account("fees").id: -333,
        paid["wallet"].account_id: 10_000,
    }
    assert_ledger_consistent()


def test_partial_refunds_give_back_the_fee_in_proportion_and_the_last_one_the_rest(api, paid):
    # when: three refunds of 3_000, 3_000 and the rest (4_000)
    first = refund(api, paid["merchant_auth"], paid["txn"], amount=3_000).json()
    second = refund(api, paid["merchant_auth"], paid["txn"], amount=3_000).json()
    last = refund(api, paid["merchant_auth"], paid["txn"]).json()
    # then: cumulative floor(333 * refunded / 10000) = 99, 199, then all 333
    assert [first["fee_refunded"], second["fee_refunded"], last["fee_refunded"]] == [99, 100, 134]
    assert [first["amount"], second["amount"], last["amount"]] == [3_000, 3_000, 4_000]
    assert last["payment"]["refunded_total"] == 10_000
    assert last["payment"]["fee_refunded"] == 333
    paid["payment"].refresh_from_db()
    assert (paid["payment"].refunded, paid["payment"].fee_refunded) == (10_000, 333)
    assert balance_of(paid["wallet"]) == 50_000
    assert balance_of(paid["merchant_wallet"]) == 0
    assert_ledger_consistent()


def test_refund_created_is_emitted(api, paid):
    # when
    body = refund(api, paid["merchant_auth"], paid["txn"], amount=1_000).json()
    # then
    event = OutboxEvent.objects.get(type="refund.created")
    assert event.payload == {
        "transaction_id": body["transaction"]["id"],
        "wallet_ids": [str(paid["merchant_wallet"].id), str(paid["wallet"].id)],
        "amount": 1_000,
        "currency": "INR",
        "refund_id": body["refund_id"],
        "payment_id": str(paid["payment"].id),
    }
    assert_ledger_consistent()


def test_the_customer_sees_the_refund_as_a_credit(api, paid):
    # given
    refund(api, paid["merchant_auth"], paid["txn"], amount=2_500)
    # when
    response = api.get("/api/v1/wallet/transactions?type=refund", **paid["auth"])
    # then
    (item,) = response.json()["data"]
    assert (item["direction"], item["amount"]) == ("credit", 2_500)
    assert item["counterparty"]["handle"] == paid["merchant_wallet"].handle
    assert_ledger_consistent()


def test_a_replay_of_a_successful_refund_returns_the_original_201_and_moves_nothing(api, paid):
    # given: a full refund, so that anything re-run would exceed the payment
    first = refund(api, paid["merchant_auth"], paid["txn"], key="refund-1")
    assert first.status_code == 201
    before = snapshot()
    # when
    replay = refund(api, paid["merchant_auth"], paid["txn"], key="refund-1")
    # then
    assert replay.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert snapshot() == before
    # and a new key is refused: nothing is left
    again = refund(api, paid["merchant_auth"], paid["txn"], key="refund-2")
    assert again.status_code == 422
    assert again.json()["code"] == "refund_exceeds_payment"
    assert again.json()["refundable"] == 0
    assert snapshot() == before
    assert_ledger_consistent()


def _refused(api, paid, status: int, code: str, *, auth=None, txn=None, **body):
    before = snapshot()
    response = refund(api, auth or paid["merchant_auth"], txn or paid["txn"], **body)
    assert response.status_code == status, response.json()
    assert response.json()["code"] == code
    assert snapshot() == before
    assert_ledger_consistent()
    return response


def test_more_than_is_left_is_422_refund_exceeds_payment(api, paid):
    # given
    refund(api, paid["merchant_auth"], paid["txn"], amount=6_000)
    # then
    response = _refused(api, paid, 422, "refund_exceeds_payment", amount=4_001)
    assert response.json()["refundable"] == 4_000


def test_a_merchant_without_the_money_is_422_insufficient_funds(api, paid):
    # given: the merchant spent what it was paid
    _, elsewhere = register_user()
    transfer(api, paid["merchant_auth"], to=elsewhere.handle, amount=9_000)
    # then
    _refused(api, paid, 422, "insufficient_funds")


def test_another_merchants_payment_is_404_transaction_not_found(api, paid):
    # given
    other_user, _ = merchant()
    # then
    _refused(api, paid, 404, "transaction_not_found", auth=auth_header(other_user))
    _refused(api, paid, 404, "transaction_not_found", txn=str(uuid.uuid4()))
    _refused(api, paid, 404, "transaction_not_found", txn="not-a-uuid")


def test_a_customer_cannot_refund_403(api, paid):
    _refused(api, paid, 403, "forbidden", auth=paid["auth"])


def test_a_frozen_customer_cannot_receive_a_refund_423(api, paid):
    # given
    wallet_freeze(wallet_id=paid["wallet"].id, actor=None, reason="review")
    # then
    _refused(api, paid, 423, "wallet_frozen")


@pytest.mark.parametrize(
    "body", [{"amount": 0}, {"amount": "100"}, {"amount": 1.5}, {"amount": -1}, {"amont": 5}, {"reason": 5}]
)
def test_bad_bodies_are_400(api, paid, body):
    _refused(api, paid, 400, "validation_failed", **body)


def test_no_idempotency_key_is_400(api, paid):
    _refused(api, paid, 400, "idempotency_key_required", key="")


def test_the_same_key_for_another_payment_is_422_reused(api, paid):
    # given
    second = pay(api, paid["auth"], merchant=paid["merchant_wallet"].handle, amount=500).json()
    refund(api, paid["merchant_auth"], paid["txn"], key="k", amount=100)
    # then
    _refused(api, paid, 422, "idempotency_key_reused", txn=second["transaction"]["id"], key="k", amount=100)
