"""PIN brute force over HTTP: 50 wrong PINs sent at once, each from its own thread with its
own PostgreSQL connection, spread over the three PIN-authorized money routes (transfer, pay,
withdraw). The lockout is counted in the database under a row lock, so at most
PIN_MAX_FAILURES guesses are ever compared, whatever the concurrency, and no money moves.

accounts/tests/test_pin.py races pin_verify itself; this goes through the views, the
idempotency layer and the real request path. If rate limits are on, a 429 is one more refused
guess: it never counts as a compared one.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Pin
from ledger.models import Entry, Hold
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import IdempotencyKey
from wallets.tests.factories import DEFAULT_PIN, auth_header, register_user
from wallets.tests.money import balance_of, fund
from wallets.withdrawals import bank_account_create

pytestmark = pytest.mark.django_db(transaction=True)

GUESSES = 50


def _in_threads(count: int, work) -> list:
    """Run work(i) in `count` threads released together; each closes its own connection."""
    barrier = threading.Barrier(count)

    def run(i):
        try:
            barrier.wait(timeout=60)
            return work(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def _money_request(route: str, *, pin: str, to: str, merchant: str, bank_account: str, headers: dict):
    bodies = {
        "transfer": {"to": to, "amount": 100, "pin": pin},
        "pay": {"merchant": merchant, "amount": 100, "pin": pin},
        "withdraw": {"bank_account": bank_account, "amount": 100, "pin": pin},
    }
    return APIClient().post(
        f"/api/v1/wallet/{route}",
        bodies[route],
        format="json",
        HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
        **headers,
    )


def test_fifty_parallel_wrong_pins_evaluate_at_most_the_lockouts_worth_and_move_nothing():
    # given: a funded victim whose access token the attacker holds, and every PIN route's target
    victim, wallet = register_user(pin=DEFAULT_PIN)
    fund(wallet, 100_000)
    _, recipient = register_user()
    _, shop = register_user(role="merchant")
    account = bank_account_create(wallet=wallet, account_number="001122334455", ifsc="HDFC0001234", holder_name="V")
    headers = auth_header(victim)
    targets = {"to": recipient.handle, "merchant": shop.handle, "bank_account": str(account.id)}
    routes = ("transfer", "pay", "withdraw")
    entries_before = Entry.objects.count()
    maximum = settings.WALLET["PIN_MAX_FAILURES"]

    # when: 50 different wrong PINs at once (none is the real one)
    responses = _in_threads(
        GUESSES,
        lambda i: _money_request(routes[i % 3], pin=f"{5000 + i:04d}", headers=headers, **targets),
    )

    # then: each guess is refused; no more than the lockout's worth were compared
    codes = Counter((r.status_code, r.json()["code"]) for r in responses)
    assert set(codes) <= {(403, "invalid_pin"), (423, "pin_locked"), (429, "rate_limited")}, codes
    compared = codes[(403, "invalid_pin")]
    assert 1 <= compared <= maximum, codes
    if not codes[(429, "rate_limited")]:
        # Nothing else refused them: the lockout stopped every guess after the fifth.
        assert compared == maximum and codes[(423, "pin_locked")] == GUESSES - maximum, codes
        record = Pin.objects.get(user=victim)
        assert record.locked_until is not None and record.locked_until > timezone.now()
        # and now even the right PIN is refused, on every route
        for route in routes:
            right = _money_request(route, pin=DEFAULT_PIN, headers=headers, **targets)
            assert (right.status_code, right.json()["code"]) == (423, "pin_locked"), route
            assert int(right["Retry-After"]) > 0
    # no money moved, nothing was held, no refused guess was stored as an idempotent answer
    assert balance_of(wallet) == 100_000
    assert Entry.objects.count() == entries_before
    assert not Hold.objects.filter(account_id=wallet.account_id).exists()
    assert not IdempotencyKey.objects.filter(user=victim).exists()
    assert_ledger_consistent()
