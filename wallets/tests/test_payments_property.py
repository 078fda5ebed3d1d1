"""A hypothesis state machine for merchant payments against a simple model: random payments
(retried with the same Idempotency-Key), partial, full and excessive refunds (retried too),
merchants spending what they were paid, and the cashback pool funded as it goes, with random
fees and a random campaign. Everything goes through the HTTP API on real PostgreSQL; after
every step each wallet, the fees account and the cashback pool must hold what the model
says, the campaign must be within its budget and every ledger invariant must hold."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from rest_framework.test import APIClient

from ledger.posting import system_account
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import CashbackCampaign, Wallet
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import fund
from wallets.tests.test_payments import campaign, fund_pool, merchant, pay, refund

pytestmark = pytest.mark.django_db

AMOUNTS = st.integers(min_value=1, max_value=5_000)


class PaymentMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.client = APIClient()
        self.balance: dict[str, int] = {}
        self.auth: dict[str, dict] = {}
        self.fee_bps: dict[str, int] = {}
        self.customers: list[str] = []
        self.merchants: list[str] = []
        # transaction id -> the model of one payment
        self.payments: dict[str, dict] = {}

    @initialize(
        fees=st.lists(st.integers(0, 10_000), min_size=2, max_size=2),
        bps=st.integers(1, 10_000),
        cap=st.integers(1, 2_000),
        budget=st.integers(1, 5_000),
        pool=st.integers(0, 3_000),
    )
    def open_the_shops(self, fees, bps, cap, budget, pool):
        # Examples share one database: earlier campaigns stop, system balances are read.
        CashbackCampaign.objects.update(status="paused")
        for _ in range(2):
            user, wallet = register_user()
            fund(wallet, 30_000)
            self._track(wallet, user, 30_000)
            self.customers.append(wallet.handle)
        for fee in fees:
            user, wallet = merchant(fee_bps=fee)
            self._track(wallet, user, 0)
            self.fee_bps[wallet.handle] = fee
            self.merchants.append(wallet.handle)
        self.campaign = campaign(bps=bps, cap_per_payment=cap, budget=budget)
        self.spent = 0
        if pool:
            fund_pool(pool)
        self.fees = system_account("fees").balance
        self.pool = system_account("cashback_pool").balance

    def _track(self, wallet: Wallet, user, balance: int) -> None:
        self.balance[wallet.handle] = balance
        self.auth[wallet.handle] = auth_header(user)

    @rule(data=st.data(), amount=AMOUNTS, retries=st.integers(0, 2), order=st.booleans())
    def pay(self, data, amount, retries, order):
        customer = data.draw(st.sampled_from(self.customers))
        shop = data.draw(st.sampled_from(self.merchants))
        key = uuid.uuid4().hex
        extra = {"order_id": f"o-{key[:6]}"} if order else {}
        first = pay(self.client, self.auth[customer], merchant=shop, amount=amount, key=key, **extra)
        if amount > self.balance[customer]:
            assert (first.status_code, first.json()["code"]) == (422, "insufficient_funds")
        else:
            assert first.status_code == 201, first.json()
            fee = amount * self.fee_bps[shop] // 10_000
            earned = min(
                amount * self.campaign.bps // 10_000, self.campaign.cap_per_payment, self.campaign.budget - self.spent
            )
            cashback = earned if 0 < earned <= self.pool else 0
            body = first.json()
            assert body["fee"] == fee
            assert body.get("cashback", {}).get("amount", 0) == cashback
            self.balance[customer] += cashback - amount
            self.balance[shop] += amount - fee
            self.fees += fee
            self.pool -= cashback
            self.spent += cashback
            assert body["balance"] == self.balance[customer]
            self.payments[body["transaction"]["id"]] = {
                "customer": customer,
                "merchant": shop,
                "amount": amount,
                "fee": fee,
                "refunded": 0,
                "fee_refunded": 0,
                "cashback": cashback,
                "reversed": 0,
            }
        for _ in range(retries):
            again = pay(self.client, self.auth[customer], merchant=shop, amount=amount, key=key, **extra)
            assert (again.status_code, again.json()) == (first.status_code, first.json())

    @precondition(lambda self: self.payments)
    @rule(data=st.data(), part=st.one_of(st.none(), st.integers(1, 6_000)), retries=st.integers(0, 2))
    def refund(self, data, part, retries):
        txn = data.draw(st.sampled_from(sorted(self.payments)))
        p = self.payments[txn]
        key = uuid.uuid4().hex
        body = {} if part is None else {"amount": part}
        first = refund(self.client, self.auth[p["merchant"]], txn, key=key, **body)
        left = p["amount"] - p["refunded"]
        amount = left if part is None else part
        refunded_after = p["refunded"] + amount
        if refunded_after >= p["amount"]:
            fee_total, cashback_total = p["fee"], p["cashback"]
        else:
            fee_total = p["fee"] * refunded_after // p["amount"]
            cashback_total = p["cashback"] * refunded_after // p["amount"]
        fee_back = fee_total - p["fee_refunded"]
        if amount <= 0 or amount > left:
            assert (first.status_code, first.json()["code"]) == (422, "refund_exceeds_payment")
        elif amount - fee_back > self.balance[p["merchant"]]:
            assert (first.status_code, first.json()["code"]) == (422, "insufficient_funds")
        else:
            assert first.status_code == 201, first.json()
            reversal = cashback_total - p["reversed"]
            answer = first.json()
            assert (answer["amount"], answer["fee_refunded"], answer["cashback_reversed"]) == (
                amount,
                fee_back,
                reversal,
            )
            self.balance[p["merchant"]] -= amount - fee_back
            self.balance[p["customer"]] += amount - reversal
            self.fees -= fee_back
            self.pool += reversal
            p.update(refunded=refunded_after, fee_refunded=fee_total, reversed=cashback_total)
            assert answer["payment"]["refunded_total"] == refunded_after
        for _ in range(retries):
            again = refund(self.client, self.auth[p["merchant"]], txn, key=key, **body)
            assert (again.status_code, again.json()) == (first.status_code, first.json())

    @rule(data=st.data(), amount=AMOUNTS)
    def merchant_spends(self, data, amount):
        shop = data.draw(st.sampled_from(self.merchants))
        if amount > self.balance[shop]:
            return
        to = data.draw(st.sampled_from(self.customers))
        response = self.client.post(
            "/api/v1/wallet/transfer",
            {"to": to, "amount": amount, "pin": "1234"},
            format="json",
            HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
            **self.auth[shop],
        )
        assert response.status_code == 201, response.json()
        self.balance[shop] -= amount
        self.balance[to] += amount

    @rule(amount=st.integers(1, 2_000))
    def fund_the_pool(self, amount):
        fund_pool(amount)
        self.pool += amount

    @invariant()
    def balances_match_the_model(self):
        if not self.balance:
            return
        actual = dict(Wallet.objects.filter(handle__in=self.balance).values_list("handle", "account__balance"))
        assert actual == self.balance
        assert system_account("fees").balance == self.fees
        assert system_account("cashback_pool").balance == self.pool >= 0
        self.campaign.refresh_from_db()
        assert self.campaign.spent == self.spent <= self.campaign.budget

    @invariant()
    def ledger_is_consistent(self):
        assert_ledger_consistent()


def test_random_payments_refunds_and_cashback_keep_every_balance_and_invariant():
    run_state_machine_as_test(
        PaymentMachine,
        settings=hypothesis_settings(
            max_examples=15,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
