"""Payments and refunds under real concurrency: threads, each with its own PostgreSQL
connection, hitting the API at once. Racing partial refunds never exceed the payment; 50
qualifying payments at once grant exactly the campaign's budget, and the pool never goes
below zero."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient

from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import CashbackCampaign, CashbackGrant, Payment, Refund
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import balance_of, fund
from wallets.tests.test_payments import campaign, fees_balance, fund_pool, merchant, pay, pool_balance, refund

pytestmark = pytest.mark.django_db(transaction=True)


def _in_threads(count: int, work) -> list:
    """Run work(i) in `count` threads released together; each closes its connection."""
    barrier = threading.Barrier(count)

    def run(i):
        try:
            barrier.wait(timeout=30)
            return work(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def _definitive(send):
    """Retry 409 idempotency_key_in_use, as API.md tells clients to."""
    for _ in range(200):
        response = send()
        if response.status_code != 409:
            return response
        time.sleep(0.01)
    raise AssertionError("still in use after 200 tries")


def test_racing_partial_refunds_never_exceed_the_payment():
    # given: a payment of 10_000 (fee 3%) and a merchant with money to spare
    customer, wallet = register_user()
    fund(wallet, 10_000)
    merchant_user, merchant_wallet = merchant(fee_bps=300)
    fund(merchant_wallet, 50_000)
    fees_before = fees_balance()
    paid = pay(APIClient(), auth_header(customer), merchant=merchant_wallet.handle, amount=10_000).json()
    txn = paid["transaction"]["id"]
    auth = auth_header(merchant_user)
    # when: 20 refunds of 700 at once; 14 fit (9_800), the rest do not
    responses = _in_threads(20, lambda i: refund(APIClient(), auth, txn, amount=700))
    # then
    codes = Counter((r.status_code, r.json().get("code")) for r in responses)
    assert codes == {(201, None): 14, (422, "refund_exceeds_payment"): 6}, codes
    payment = Payment.objects.get(transaction_id=txn)
    assert payment.refunded == 9_800
    assert sum(Refund.objects.filter(payment=payment).values_list("amount", flat=True)) == 9_800
    # The fee given back so far is the cumulative floor: floor(300 * 9_800 / 10_000).
    assert payment.fee_refunded == 294
    assert fees_balance() == fees_before + 300 - 294
    assert balance_of(wallet) == 9_800
    # and the rest, raced by 5 full refunds: exactly one gets it, with the rest of the fee
    rest = _in_threads(5, lambda i: refund(APIClient(), auth, txn))
    assert sorted(r.status_code for r in rest) == [201, 422, 422, 422, 422]
    payment.refresh_from_db()
    assert (payment.refunded, payment.fee_refunded) == (10_000, 300)
    assert fees_balance() == fees_before
    assert_ledger_consistent()


def test_racing_retries_of_one_refund_move_money_once_and_all_answer_its_201():
    # given
    customer, wallet = register_user()
    fund(wallet, 5_000)
    merchant_user, merchant_wallet = merchant(fee_bps=0)
    txn = pay(APIClient(), auth_header(customer), merchant=merchant_wallet.handle, amount=5_000).json()
    txn = txn["transaction"]["id"]
    auth = auth_header(merchant_user)
    key = uuid.uuid4().hex
    # when: the same full refund sent 10 times at once with one key
    responses = _in_threads(10, lambda i: _definitive(lambda: refund(APIClient(), auth, txn, key=key)))
    # then
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["refund_id"] for r in responses}) == 1
    assert Refund.objects.count() == 1
    assert balance_of(wallet) == 5_000
    assert_ledger_consistent()


def test_fifty_concurrent_qualifying_payments_grant_exactly_the_budget():
    # given: 10% cashback capped at 100 per payment, a budget of 2_550 (25.5 payments' worth)
    fund_pool(1_000_000)
    running = campaign(bps=1000, cap_per_payment=100, budget=2_550)
    _, merchant_wallet = merchant(fee_bps=100)
    customers = []
    for _ in range(50):
        user, wallet = register_user()
        fund(wallet, 2_000)
        customers.append((auth_header(user), wallet))
    pool_before = pool_balance()
    # when
    responses = _in_threads(
        50, lambda i: pay(APIClient(), customers[i][0], merchant=merchant_wallet.handle, amount=1_000)
    )
    # then
    assert [r.status_code for r in responses] == [201] * 50
    granted = [r.json()["cashback"]["amount"] for r in responses if "cashback" in r.json()]
    assert sum(granted) == 2_550
    assert sorted(granted, reverse=True)[:26] == [100] * 25 + [50]
    running.refresh_from_db()
    assert running.spent == running.budget == 2_550
    assert sum(CashbackGrant.objects.values_list("amount", flat=True)) == 2_550
    assert pool_balance() == pool_before - 2_550
    assert balance_of(merchant_wallet) == 50 * 990
    assert_ledger_consistent()


def test_concurrent_payments_never_take_the_pool_below_zero():
    # given: a pool that pays for 7 cashbacks of 100, and a campaign that would pay 50
    fund_pool(700)
    campaign(bps=1000, cap_per_payment=100, budget=1_000_000)
    _, merchant_wallet = merchant(fee_bps=0)
    customers = []
    for _ in range(20):
        user, wallet = register_user()
        fund(wallet, 1_000)
        customers.append(auth_header(user))
    # when
    responses = _in_threads(20, lambda i: pay(APIClient(), customers[i], merchant=merchant_wallet.handle, amount=1_000))
    # then: every payment stands; 7 earn cashback, the pool is empty, never negative
    assert [r.status_code for r in responses] == [201] * 20
    assert sum(1 for r in responses if "cashback" in r.json()) == 7
    assert pool_balance() == 0
    assert CashbackCampaign.objects.get().spent == 700
    assert_ledger_consistent()
