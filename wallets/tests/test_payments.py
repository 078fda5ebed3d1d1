"""POST /wallet/pay: a customer pays a merchant, with the merchant's fee as a third leg to the
fees account; every refusal changes nothing; merchants see payments in their history.

The helpers at the top are shared by the refund and cashback tests."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from ledger.models import Account, Entry, OutboxEvent, Transaction
from ledger.posting import Leg, PostingCommand, atomic, system_account, transaction_post
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import CashbackCampaign, CashbackGrant, IdempotencyKey, Payment, Refund, Wallet
from wallets.payments import fee_for, merchant_fee_set
from wallets.services import wallet_freeze
from wallets.tests.factories import DEFAULT_PIN, auth_header, register_user
from wallets.tests.money import balance_of, fund

PAY_URL = "/api/v1/wallet/pay"


# -- helpers shared with test_refunds and test_cashback --------------------------------------


def merchant(fee_bps: int | None = None, **kwargs) -> tuple:
    """A registered merchant (user, wallet), with a fee of its own when fee_bps is given."""
    user, wallet = register_user(role="merchant", **kwargs)
    if fee_bps is not None:
        merchant_fee_set(merchant=wallet, fee_bps=fee_bps)
    return user, wallet


def fund_pool(amount: int) -> None:
    """Fund the cashback pool as an approved adjustment would: adjustments -> cashback_pool."""
    with atomic():
        transaction_post(
            command=PostingCommand(
                type="adjustment",
                legs=(Leg(system_account("adjustments").id, -amount), Leg(system_account("cashback_pool").id, amount)),
                reference=f"test:{uuid.uuid4()}",
            )
        )


def pool_balance() -> int:
    return system_account("cashback_pool").balance


def fees_balance() -> int:
    return system_account("fees").balance


def campaign(**kwargs) -> CashbackCampaign:
    now = timezone.now()
    values = {
        "name": "Ten percent",
        "bps": 1000,
        "cap_per_payment": 10_000,
        "budget": 1_000_000,
        "starts_at": now - timedelta(hours=1),
        "ends_at": now + timedelta(hours=1),
    }
    values.update(kwargs)
    return CashbackCampaign.objects.create(**values)


def pay(client, headers: dict, *, merchant: str, amount, pin: str = DEFAULT_PIN, key: str | None = None, **extra):
    body = {"merchant": merchant, "amount": amount, "pin": pin, **extra}
    key_header = {} if key == "" else {"HTTP_IDEMPOTENCY_KEY": key or uuid.uuid4().hex}
    return client.post(PAY_URL, body, format="json", **headers, **key_header)


def refund(client, headers: dict, transaction_id: str, *, key: str | None = None, **body):
    key_header = {} if key == "" else {"HTTP_IDEMPOTENCY_KEY": key or uuid.uuid4().hex}
    url = f"/api/v1/merchant/payments/{transaction_id}/refund"
    return client.post(url, body, format="json", **headers, **key_header)


def snapshot() -> dict:
    """Everything a refused request must leave as it was."""
    return {
        "balances": dict(Account.objects.values_list("id", "balance")),
        "transactions": Transaction.objects.count(),
        "entries": Entry.objects.count(),
        "payments": list(Payment.objects.values_list("id", "refunded", "fee_refunded")),
        "refunds": Refund.objects.count(),
        "grants": list(CashbackGrant.objects.values_list("id", "reversed")),
        "campaigns": list(CashbackCampaign.objects.values_list("id", "spent", "status")),
        "events": OutboxEvent.objects.count(),
    }


@pytest.fixture
def shop(db):
    """A customer with 100_000 and a merchant charging 250 bps (2.5%)."""
    customer, customer_wallet = register_user(name="carol")
    fund(customer_wallet, 100_000)
    merchant_user, merchant_wallet = merchant(fee_bps=250, business_name="Corner Shop")
    return {
        "customer": customer,
        "wallet": customer_wallet,
        "auth": auth_header(customer),
        "merchant": merchant_user,
        "merchant_wallet": merchant_wallet,
        "merchant_auth": auth_header(merchant_user),
    }


# -- the fee ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "bps", "fee"),
    [(10_000, 250, 250), (999, 250, 24), (1, 250, 0), (39, 250, 0), (40, 250, 1), (7, 10_000, 7), (12_345, 0, 0)],
)
def test_the_fee_is_the_floor_of_amount_times_bps(amount, bps, fee):
    assert fee_for(amount=amount, fee_bps=bps) == fee


# -- paying -------------------------------------------------------------------------------------


def test_a_payment_debits_the_customer_credits_the_merchant_net_and_the_fee_account(api, shop):
    # given
    fees_before = fees_balance()
    # when
    response = pay(api, shop["auth"], merchant=shop["merchant_wallet"].handle, amount=10_000, order_id="A-17")
    # then
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["balance"] == 90_000
    assert body["fee"] == 250
    assert "cashback" not in body
    item = body["transaction"]
    assert item["type"] == "payment"
    assert item["direction"] == "debit"
    assert item["amount"] == 10_000
    assert item["balance_after"] == 90_000
    assert item["counterparty"] == {"handle": shop["merchant_wallet"].handle, "name": "Corner Shop"}
    assert item["note"] == "Order A-17"
    entries = dict(Entry.objects.filter(transaction_id=item["id"]).values_list("account_id", "amount"))
    assert entries == {
        shop["wallet"].account_id: -10_000,
        shop["merchant_wallet"].account_id: 9_750,
        system_account("fees").id: 250,
    }
    assert sum(entries.values()) == 0
    assert balance_of(shop["merchant_wallet"]) == 9_750
    assert fees_balance() == fees_before + 250
    payment = Payment.objects.get(transaction_id=item["id"])
    assert (payment.amount, payment.fee, payment.fee_bps, payment.refunded, payment.order_id) == (
        10_000,
        250,
        250,
        0,
        "A-17",
    )
    assert str(payment.id) == body["payment_id"]
    assert_ledger_consistent()


def test_a_payment_without_a_fee_has_two_legs(api, shop, settings):
    # given: a merchant without a fee of its own, and a default fee of 0
    settings.WALLET = {**settings.WALLET, "MERCHANT_FEE_BPS": 0}
    _, free = merchant()
    # when
    response = pay(api, shop["auth"], merchant=str(free.id), amount=5_000)
    # then
    assert response.status_code == 201, response.json()
    entries = Entry.objects.filter(transaction_id=response.json()["transaction"]["id"])
    assert sorted(entries.values_list("amount", flat=True)) == [-5_000, 5_000]
    assert Payment.objects.get(merchant_wallet=free).fee == 0
    assert_ledger_consistent()


def test_a_merchant_without_a_fee_of_its_own_pays_the_default_fee(api, shop, settings):
    # given
    settings.WALLET = {**settings.WALLET, "MERCHANT_FEE_BPS": 100}
    _, plain = merchant()
    # when
    response = pay(api, shop["auth"], merchant=plain.handle, amount=5_000)
    # then
    assert response.status_code == 201
    assert response.json()["fee"] == 50
    assert balance_of(plain) == 4_950
    assert_ledger_consistent()


def test_the_merchant_sees_the_payment_in_its_history_as_a_credit_from_the_customer(api, shop):
    # given
    paid = pay(api, shop["auth"], merchant=shop["merchant_wallet"].handle, amount=2_000).json()
    # when
    response = api.get("/api/v1/wallet/transactions?type=payment", **shop["merchant_auth"])
    # then
    assert response.status_code == 200
    (item,) = response.json()["data"]
    assert item["id"] == paid["transaction"]["id"]
    assert item["direction"] == "credit"
    assert item["amount"] == 1_950
    assert item["counterparty"]["handle"] == shop["wallet"].handle
    assert_ledger_consistent()


def test_payment_received_is_emitted_with_the_contract_payload(api, shop):
    # when
    body = pay(api, shop["auth"], merchant=shop["merchant_wallet"].handle, amount=4_000, order_id="X1").json()
    # then
    event = OutboxEvent.objects.get(type="payment.received")
    payment = Payment.objects.get()
    assert event.payload == {
        "transaction_id": body["transaction"]["id"],
        "wallet_ids": [str(shop["wallet"].id), str(shop["merchant_wallet"].id)],
        "amount": 4_000,
        "currency": "INR",
        "payment_id": str(payment.id),
        "merchant_wallet_id": str(shop["merchant_wallet"].id),
        "customer_wallet_id": str(shop["wallet"].id),
        "fee": 100,
        "order_id": "X1",
    }
    assert_ledger_consistent()


def test_a_retry_with_the_same_key_replays_and_pays_once(api, shop):
    # given
    key = "pay-once"
    first = pay(api, shop["auth"], merchant=shop["merchant_wallet"].handle, amount=3_000, key=key)
    # when
    second = pay(api, shop["auth"], merchant=shop["merchant_wallet"].handle, amount=3_000, key=key)
    # then
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert Payment.objects.count() == 1
    assert balance_of(shop["wallet"]) == 97_000
    assert_ledger_consistent()


# -- refusals: each changes nothing -------------------------------------------------------------


def _refused(api, shop, expected_status: int, expected_code: str, **kwargs):
    before = snapshot()
    kwargs.setdefault("merchant", shop["merchant_wallet"].handle)
    kwargs.setdefault("amount", 1_000)
    response = pay(api, kwargs.pop("auth", shop["auth"]), **kwargs)
    assert response.status_code == expected_status, response.json()
    assert response.json()["code"] == expected_code
    assert response["Content-Type"] == "application/problem+json"
    after = snapshot()
    # A refusal that reached the operation stores its answer under the key; nothing else.
    assert after == before
    assert_ledger_consistent()
    return response


def test_unknown_merchant_is_404_merchant_not_found(api, shop):
    _refused(api, shop, 404, "merchant_not_found", merchant="nobody@wallet")
    _refused(api, shop, 404, "merchant_not_found", merchant=str(uuid.uuid4()))


def test_a_customer_wallet_is_not_a_merchant(api, shop):
    # given
    _, other = register_user()
    # then
    _refused(api, shop, 404, "merchant_not_found", merchant=other.handle)


def test_a_merchant_paying_itself_is_422_same_wallet(api, shop):
    # given
    fund(shop["merchant_wallet"], 5_000)
    # then
    _refused(api, shop, 422, "same_wallet", auth=shop["merchant_auth"])


def test_not_enough_money_is_422_insufficient_funds(api, shop):
    _refused(api, shop, 422, "insufficient_funds", amount=100_001)


def test_a_frozen_customer_or_merchant_is_423(api, shop):
    # given
    wallet_freeze(wallet_id=shop["merchant_wallet"].id, actor=None, reason="review")
    # then
    _refused(api, shop, 423, "wallet_frozen")
    # given
    Wallet.objects.filter(id=shop["merchant_wallet"].id).update(status="active")
    wallet_freeze(wallet_id=shop["wallet"].id, actor=None, reason="review")
    # then
    _refused(api, shop, 423, "wallet_frozen")


def test_a_payment_above_the_tier_limit_is_422_limit_exceeded(api, shop):
    # given: basic tier, 10_000_00 per transaction
    fund(shop["wallet"], 2_000_000)
    # when
    response = _refused(api, shop, 422, "limit_exceeded", amount=1_000_001)
    # then
    assert response.json()["limit"] == "per_transaction"


def test_a_wrong_pin_is_403(api, shop):
    _refused(api, shop, 403, "invalid_pin", pin="9999")


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 100, "pin": DEFAULT_PIN},
        {"merchant": "x@wallet", "pin": DEFAULT_PIN},
        {"merchant": "x@wallet", "amount": "100", "pin": DEFAULT_PIN},
        {"merchant": "x@wallet", "amount": 1.5, "pin": DEFAULT_PIN},
        {"merchant": "x@wallet", "amount": 0, "pin": DEFAULT_PIN},
        {"merchant": "x@wallet", "amount": -5, "pin": DEFAULT_PIN},
        {"merchant": "x@wallet", "amount": 100, "pin": 1234},
        {"merchant": "x@wallet", "amount": 100, "pin": DEFAULT_PIN, "ammount": 1},
        {"merchant": "x@wallet", "amount": 100, "pin": DEFAULT_PIN, "order_id": "x" * 65},
    ],
)
def test_bad_bodies_are_400_validation_failed(api, shop, body):
    # given
    before = snapshot()
    # when
    response = api.post(PAY_URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k", **shop["auth"])
    # then
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"
    assert snapshot() == before
    assert not IdempotencyKey.objects.exists()


def test_no_idempotency_key_is_400(api, shop):
    # given
    before = snapshot()
    # when
    response = pay(api, shop["auth"], merchant=shop["merchant_wallet"].handle, amount=100, key="")
    # then
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_required"
    assert snapshot() == before


def test_the_same_key_with_another_body_is_422_reused(api, shop):
    # given
    pay(api, shop["auth"], merchant=shop["merchant_wallet"].handle, amount=100, key="k1")
    before = snapshot()
    # when
    response = pay(api, shop["auth"], merchant=shop["merchant_wallet"].handle, amount=200, key="k1")
    # then
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert snapshot() == before
    assert_ledger_consistent()


def test_pay_needs_a_token(api):
    response = api.post(PAY_URL, {}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_required"
