"""A hypothesis state machine against a simple model: random registrations, top-ups whose
success webhook arrives several times (also under new event ids), transfers retried with
the same Idempotency-Key, and key reuse with another body. Everything goes through the HTTP
API on real PostgreSQL; after every step each wallet's balance must equal the model's and
every ledger invariant must hold."""

from __future__ import annotations

import json
import uuid

import pytest
from django.conf import settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from rest_framework.test import APIClient

from ledger.tests.invariants import assert_ledger_consistent
from wallets.gateway import signature_header
from wallets.models import Wallet
from wallets.tests.factories import auth_header, register_user

pytestmark = pytest.mark.django_db

AMOUNTS = st.integers(min_value=1, max_value=5_000)


def _webhook(client: APIClient, *, payment_id: str, amount: int, event_id: str):
    body = json.dumps(
        {
            "id": event_id,
            "type": "payment.succeeded",
            "data": {"payment_id": payment_id, "amount": amount, "currency": "INR", "gateway_reference": "gw"},
        }
    ).encode()
    signature = signature_header(secrets=settings.WALLET["GATEWAY_WEBHOOK_SECRET"], body=body)
    return client.generic(
        "POST", "/api/v1/webhooks/gateway", body, content_type="application/json", HTTP_GATEWAY_SIGNATURE=signature
    )


class WalletMachine(RuleBasedStateMachine):
    wallets = Bundle("wallets")

    def __init__(self):
        super().__init__()
        self.client = APIClient()
        self.balance: dict[str, int] = {}
        self.auth: dict[str, dict] = {}
        # key -> (sender, body) of every transfer answered, to retry and to reuse.
        self.sent: dict[str, tuple[str, dict, int, dict]] = {}

    def _register(self) -> str:
        user, wallet = register_user()
        self.balance[wallet.handle] = 0
        self.auth[wallet.handle] = auth_header(user)
        return wallet.handle

    @initialize(target=wallets)
    def first_wallet(self):
        return self._register()

    @rule(target=wallets)
    def register(self):
        return self._register()

    @rule(handle=wallets, amount=AMOUNTS, deliveries=st.integers(1, 3), new_event_ids=st.booleans())
    def top_up(self, handle, amount, deliveries, new_event_ids):
        response = self.client.post(
            "/api/v1/wallet/add-money",
            {"amount": amount},
            format="json",
            HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
            **self.auth[handle],
        )
        assert response.status_code == 201, response.json()
        payment_id = response.json()["payment_id"]
        event_id = f"evt_{uuid.uuid4().hex}"
        for _ in range(deliveries):
            answer = _webhook(self.client, payment_id=payment_id, amount=amount, event_id=event_id)
            assert answer.status_code == 200, answer.json()
            if new_event_ids:
                event_id = f"evt_{uuid.uuid4().hex}"
        self.balance[handle] += amount

    @rule(sender=wallets, recipient=wallets, amount=AMOUNTS, retries=st.integers(0, 2))
    def transfer(self, sender, recipient, amount, retries):
        key = uuid.uuid4().hex
        body = {"to": recipient, "amount": amount, "pin": "1234"}
        first = self._post_transfer(sender, key, body)
        if sender == recipient:
            assert (first.status_code, first.json()["code"]) == (422, "same_wallet")
        elif amount > self.balance[sender]:
            assert (first.status_code, first.json()["code"]) == (422, "insufficient_funds")
        else:
            assert first.status_code == 201, first.json()
            assert first.json()["balance"] == self.balance[sender] - amount
            self.balance[sender] -= amount
            self.balance[recipient] += amount
        for _ in range(retries):
            again = self._post_transfer(sender, key, body)
            assert again.status_code == first.status_code
            assert again.json() == first.json()
            assert again["Idempotent-Replayed"] == "true"
        self.sent[key] = (sender, body, first.status_code, first.json())

    @rule(data=st.data())
    def reuse_a_key_with_another_body(self, data):
        if not self.sent:
            return
        key = data.draw(st.sampled_from(sorted(self.sent)))
        sender, body, _, _ = self.sent[key]
        changed = dict(body, amount=body["amount"] + 1)
        response = self._post_transfer(sender, key, changed)
        assert (response.status_code, response.json()["code"]) == (422, "idempotency_key_reused")

    def _post_transfer(self, sender, key, body):
        return self.client.post(
            "/api/v1/wallet/transfer", body, format="json", HTTP_IDEMPOTENCY_KEY=key, **self.auth[sender]
        )

    @invariant()
    def balances_match_the_model(self):
        if not self.balance:
            return
        actual = dict(Wallet.objects.filter(handle__in=self.balance).values_list("handle", "account__balance"))
        assert actual == self.balance

    @invariant()
    def ledger_is_consistent(self):
        assert_ledger_consistent()


def test_random_operations_keep_every_balance_and_invariant():
    run_state_machine_as_test(
        WalletMachine,
        settings=hypothesis_settings(
            max_examples=40,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
