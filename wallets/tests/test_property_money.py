"""A hypothesis state machine over every money flow at once, against a model: top-ups with
duplicate webhooks; payments to two merchants with random fees (one of them under a cashback
campaign of random rate, cap and budget, paid from a pool funded as it goes), retried with
the same Idempotency-Key; full, partial and excessive refunds (fee and cashback given back in
proportion); merchants spending what they were paid; withdrawals that the bank settles,
rejects or leaves pending, with duplicate and contradicting callbacks. Everything goes
through the HTTP API on real PostgreSQL. After every step each wallet's balance and held
amount, the fees account, the cashback pool and the campaign's spending equal the model, and
every ledger invariant holds."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from rest_framework.test import APIClient

from ledger.models import Account
from ledger.posting import Leg, PostingCommand, atomic, system_account, transaction_post
from ledger.tests.invariants import assert_ledger_consistent
from wallets.cashback import campaign_create
from wallets.gateway import signature_header
from wallets.models import CashbackCampaign, Wallet
from wallets.payments import merchant_fee_set
from wallets.tests.factories import auth_header, register_user
from wallets.tests.test_property import _webhook
from wallets.withdrawals import EVENT_FAILED, EVENT_SUCCEEDED

pytestmark = pytest.mark.django_db

AMOUNTS = st.integers(min_value=1, max_value=4_000)


def _system_balance(code: str) -> int:
    return system_account(code).balance


class MoneyMachine(RuleBasedStateMachine):
    customers = Bundle("customers")
    payments = Bundle("payments")
    withdrawals = Bundle("withdrawals")

    @initialize(
        fees=st.lists(st.integers(0, 10_000), min_size=2, max_size=2),
        bps=st.integers(1, 10_000),
        cap=st.integers(1, 2_000),
        budget=st.integers(1, 5_000),
        pool=st.integers(0, 3_000),
    )
    def open_the_shops(self, fees, bps, cap, budget, pool):
        self.client = APIClient()
        self.balance: dict[str, int] = {}
        self.held: dict[str, int] = {}
        self.auth: dict[str, dict] = {}
        self.bank_account: dict[str, str] = {}
        self.payment: dict[str, dict] = {}
        self.withdrawal: dict[str, dict] = {}
        self.fee_bps: dict[str, int] = {}
        self.merchants: list[str] = []
        for number, fee in enumerate(fees):
            merchant_user, merchant = register_user(role="merchant", business_name=f"Model Shop {number}")
            merchant_fee_set(merchant=merchant, fee_bps=fee)
            self.merchants.append(merchant.handle)
            self.fee_bps[merchant.handle] = fee
            self.balance[merchant.handle] = 0
            self.held[merchant.handle] = 0
            self.auth[merchant.handle] = auth_header(merchant_user)
        # The campaign covers the first merchant only, so payments to the second one show
        # that cashback is not paid outside a campaign. Examples share one database; a
        # campaign bound to this example's merchant cannot reach another example's.
        staff = register_user()[0]
        now = timezone.now()
        self.campaign = campaign_create(
            actor=staff,
            name="Model cashback",
            bps=bps,
            cap_per_payment=cap,
            budget=budget,
            starts_at=now - timedelta(hours=1),
            ends_at=now + timedelta(days=1),
            merchant=self.merchants[0],
        )
        self.spent = 0
        if pool:
            self._fund_pool(pool)
        self.pool = _system_balance("cashback_pool")
        self.fees = _system_balance("fees")

    def _fund_pool(self, amount: int) -> None:
        """As an approved adjustment would: adjustments -> cashback_pool."""
        with atomic():
            transaction_post(
                command=PostingCommand(
                    type="adjustment",
                    legs=(
                        Leg(system_account("adjustments").id, -amount),
                        Leg(system_account("cashback_pool").id, amount),
                    ),
                )
            )

    @rule(target=customers)
    def register(self):
        user, wallet = register_user()
        self.balance[wallet.handle] = 0
        self.held[wallet.handle] = 0
        self.auth[wallet.handle] = auth_header(user)
        return wallet.handle

    @rule(customer=customers, amount=st.integers(1_000, 20_000), deliveries=st.integers(1, 3))
    def top_up(self, customer, amount, deliveries):
        response = self._post(customer, "/api/v1/wallet/add-money", {"amount": amount})
        assert response.status_code == 201, response.json()
        event_id = f"evt_{uuid.uuid4().hex}"
        for _ in range(deliveries):
            answer = _webhook(self.client, payment_id=response.json()["payment_id"], amount=amount, event_id=event_id)
            assert answer.status_code == 200, answer.json()
        self.balance[customer] += amount

    def _available(self, handle: str) -> int:
        return self.balance[handle] - self.held[handle]

    @rule(
        target=payments,
        customer=customers,
        data=st.data(),
        amount=AMOUNTS,
        retries=st.integers(0, 2),
        order=st.booleans(),
    )
    def pay(self, customer, data, amount, retries, order):
        shop = data.draw(st.sampled_from(self.merchants))
        key = uuid.uuid4().hex
        body = {"merchant": shop, "amount": amount, "pin": "1234"}
        if order:
            body["order_id"] = f"o-{key[:6]}"
        response = self._post(customer, "/api/v1/wallet/pay", body, key=key)
        for _ in range(retries):
            again = self._post(customer, "/api/v1/wallet/pay", body, key=key)
            assert (again.status_code, again.json()) == (response.status_code, response.json())
        if amount > self._available(customer):
            assert (response.status_code, response.json()["code"]) == (422, "insufficient_funds")
            return None
        assert response.status_code == 201, response.json()
        answer = response.json()
        fee = amount * self.fee_bps[shop] // 10_000
        assert answer["fee"] == fee
        cashback = 0
        if shop == self.merchants[0]:
            earned = min(
                amount * self.campaign.bps // 10_000, self.campaign.cap_per_payment, self.campaign.budget - self.spent
            )
            cashback = earned if 0 < earned <= self.pool else 0
        assert answer.get("cashback", {}).get("amount", 0) == cashback
        self.balance[customer] += cashback - amount
        self.balance[shop] += amount - fee
        self.fees += fee
        self.pool -= cashback
        self.spent += cashback
        transaction_id = answer["transaction"]["id"]
        self.payment[transaction_id] = {
            "customer": customer,
            "merchant": shop,
            "amount": amount,
            "fee": fee,
            "refunded": 0,
            "fee_back": 0,
            "cashback": cashback,
            "cashback_back": 0,
        }
        assert answer["balance"] == self.balance[customer]
        return transaction_id

    @rule(payment=payments, amount=st.one_of(st.none(), st.integers(1, 6_000)), retries=st.integers(0, 2))
    def refund(self, payment, amount, retries):
        if payment is None:
            return
        p = self.payment[payment]
        shop = p["merchant"]
        key = uuid.uuid4().hex
        body = {} if amount is None else {"amount": amount}
        url = f"/api/v1/merchant/payments/{payment}/refund"
        response = self._post(shop, url, body, key=key)
        for _ in range(retries):
            again = self._post(shop, url, body, key=key)
            assert (again.status_code, again.json()) == (response.status_code, response.json())
        left = p["amount"] - p["refunded"]
        wanted = left if amount is None else amount
        refunded_after = p["refunded"] + wanted
        fee_back_after = p["fee"] if refunded_after >= p["amount"] else p["fee"] * refunded_after // p["amount"]
        fee_part = fee_back_after - p["fee_back"]
        if wanted == 0 or refunded_after > p["amount"]:
            assert response.status_code == 422, response.json()
            assert response.json()["code"] in ("refund_exceeds_payment", "validation_failed")
            return
        if wanted - fee_part > self._available(shop):
            assert (response.status_code, response.json()["code"]) == (422, "insufficient_funds")
            return
        assert response.status_code == 201, response.json()
        customer = p["customer"]
        self.balance[shop] -= wanted - fee_part
        self.fees -= fee_part
        self.balance[customer] += wanted
        target = p["cashback"] if refunded_after >= p["amount"] else p["cashback"] * refunded_after // p["amount"]
        reverse = min(max(0, target - p["cashback_back"]), self._available(customer))
        self.balance[customer] -= reverse
        self.pool += reverse
        p.update(refunded=refunded_after, fee_back=fee_back_after, cashback_back=p["cashback_back"] + reverse)
        answer = response.json()
        assert (answer["amount"], answer["fee_refunded"], answer["cashback_reversed"]) == (wanted, fee_part, reverse)
        assert answer["payment"]["refunded_total"] == refunded_after

    @rule(data=st.data(), customer=customers, amount=AMOUNTS)
    def merchant_spends(self, data, customer, amount):
        shop = data.draw(st.sampled_from(self.merchants))
        response = self._post(shop, "/api/v1/wallet/transfer", {"to": customer, "amount": amount, "pin": "1234"})
        if amount > self._available(shop):
            assert (response.status_code, response.json()["code"]) == (422, "insufficient_funds")
            return
        assert response.status_code == 201, response.json()
        self.balance[shop] -= amount
        self.balance[customer] += amount

    @rule(amount=st.integers(1, 2_000))
    def fund_the_pool(self, amount):
        self._fund_pool(amount)
        self.pool += amount

    @rule(target=withdrawals, customer=customers, amount=AMOUNTS)
    def withdraw(self, customer, amount):
        if customer not in self.bank_account:
            account = self._post(
                customer,
                "/api/v1/wallet/bank-accounts",
                {"account_number": "123456789012", "ifsc": "HDFC0001234", "holder_name": "Model Customer"},
                key=None,
            )
            assert account.status_code == 201, account.json()
            self.bank_account[customer] = account.json()["id"]
        response = self._post(
            customer,
            "/api/v1/wallet/withdraw",
            {"amount": amount, "pin": "1234", "bank_account": self.bank_account[customer]},
        )
        if amount > self._available(customer):
            assert (response.status_code, response.json()["code"]) == (422, "insufficient_funds")
            return None
        assert response.status_code == 202, response.json()
        self.held[customer] += amount
        withdrawal_id = response.json()["withdrawal_id"]
        self.withdrawal[withdrawal_id] = {"customer": customer, "amount": amount, "settled": None}
        return withdrawal_id

    @rule(
        withdrawal=withdrawals,
        succeeded=st.booleans(),
        deliveries=st.integers(1, 3),
        contradict=st.booleans(),
    )
    def bank_callback(self, withdrawal, succeeded, deliveries, contradict):
        if withdrawal is None:
            return
        w = self.withdrawal[withdrawal]
        event_id = f"bank_{uuid.uuid4().hex}"
        for _ in range(deliveries):
            answer = self._bank_event(event_id, withdrawal, w["amount"], succeeded)
            assert answer.status_code == 200, answer.json()
        if w["settled"] is None:
            w["settled"] = succeeded
            self.held[w["customer"]] -= w["amount"]
            if succeeded:
                self.balance[w["customer"]] -= w["amount"]
        if contradict:
            # The bank changes its mind: flagged, nothing moves.
            answer = self._bank_event(f"bank_{uuid.uuid4().hex}", withdrawal, w["amount"], not w["settled"])
            assert (answer.status_code, answer.json()["result"]) == (200, "flagged")

    def _bank_event(self, event_id: str, withdrawal: str, amount: int, succeeded: bool):
        body = json.dumps(
            {
                "id": event_id,
                "type": EVENT_SUCCEEDED if succeeded else EVENT_FAILED,
                "data": {"reference": withdrawal, "amount": amount, "currency": "INR"},
            }
        ).encode()
        signature = signature_header(secrets=settings.WALLET["BANK_WEBHOOK_SECRET"], body=body)
        return self.client.generic(
            "POST", "/api/v1/webhooks/bank", body, content_type="application/json", HTTP_BANK_SIGNATURE=signature
        )

    def _post(self, handle: str, url: str, body: dict, key: str | None = "new"):
        headers = dict(self.auth[handle])
        if key is not None:
            headers["HTTP_IDEMPOTENCY_KEY"] = uuid.uuid4().hex if key == "new" else key
        return self.client.post(url, body, format="json", **headers)

    @invariant()
    def wallets_match_the_model(self):
        rows = Wallet.objects.filter(handle__in=self.balance).values_list(
            "handle", "account__balance", "account__held_balance"
        )
        assert {h: (b, held) for h, b, held in rows} == {h: (self.balance[h], self.held[h]) for h in self.balance}

    @invariant()
    def system_accounts_match_the_model(self):
        assert _system_balance("fees") == self.fees
        assert _system_balance("cashback_pool") == self.pool
        assert Account.objects.get(code="cashback_pool").balance >= 0

    @invariant()
    def campaign_within_its_budget(self):
        campaign = CashbackCampaign.objects.get(id=self.campaign.id)
        assert campaign.spent == self.spent <= campaign.budget

    @invariant()
    def ledger_is_consistent(self):
        assert_ledger_consistent()


def test_random_money_flows_keep_every_balance_and_invariant():
    run_state_machine_as_test(
        MoneyMachine,
        settings=hypothesis_settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
