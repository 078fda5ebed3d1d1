"""Concurrent transfers at a daily limit: checked under the sender's account lock, so they
never overshoot it."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import Tier
from accounts.tiers import user_tier_change
from ledger.tests.invariants import assert_ledger_consistent
from wallets.limits import outgoing_totals
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import balance_of, fund, transfer

pytestmark = pytest.mark.django_db(transaction=True)


def _in_threads(count: int, work) -> list:
    barrier = threading.Barrier(count)

    def run(i):
        try:
            barrier.wait(timeout=30)
            return work(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_twenty_concurrent_transfers_of_thirty_percent_of_the_daily_limit():
    # given: a daily limit of 1,000 with 100 already sent; 20 transfers of 270 (30% of the
    # remaining 900) race, to four recipients, from a wallet that could afford them all
    tier = Tier.objects.create(
        code="racing",
        name="Racing",
        per_transaction_limit=1_000,
        daily_outgoing_limit=1_000,
        monthly_outgoing_limit=10_000,
        balance_ceiling=100_000,
    )
    user, wallet = register_user()
    user_tier_change(user=user, tier=tier, actor=None, reason="test tier")
    fund(wallet, 50_000)
    auth = auth_header(user)
    recipients = [register_user()[1] for _ in range(4)]
    assert transfer(APIClient(), auth, to=recipients[0].handle, amount=100).status_code == 201
    # when
    responses = _in_threads(20, lambda i: transfer(APIClient(), auth, to=recipients[i % 4].handle, amount=270))
    # then: exactly the three that fit (100 + 3 * 270 = 910 <= 1,000 < 1,180)
    outcomes = Counter((r.status_code, r.json().get("limit")) for r in responses)
    assert outcomes == {(201, None): 3, (422, "daily"): 17}, outcomes
    assert outgoing_totals(account_id=wallet.account_id).today == 910
    assert balance_of(wallet) == 50_000 - 910
    assert sum(balance_of(r) for r in recipients) == 910
    assert_ledger_consistent()
