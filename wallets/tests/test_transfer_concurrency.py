"""Transfers under real concurrency: threads, each with its own PostgreSQL connection,
hitting the API at once. Then the ledger invariants."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient

from ledger.models import Entry
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import IdempotencyKey
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import balance_of, fund, transfer

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


def _until_definitive(client, auth, **kwargs):
    """Retry 409 idempotency_key_in_use, as API.md tells clients to."""
    for _ in range(200):
        response = transfer(client, auth, **kwargs)
        if response.status_code != 409:
            return response
        time.sleep(0.01)
    raise AssertionError("still in use after 200 tries")


def test_a_hundred_transfers_out_of_a_wallet_that_affords_ten():
    # given
    user, wallet = register_user()
    auth = auth_header(user)
    fund(wallet, 10 * 700)
    recipients = [register_user()[1] for _ in range(4)]
    # when
    responses = _in_threads(100, lambda i: transfer(APIClient(), auth, to=recipients[i % 4].handle, amount=700))
    # then
    codes = Counter((r.status_code, r.json().get("code")) for r in responses)
    assert codes == {(201, None): 10, (422, "insufficient_funds"): 90}, codes
    assert balance_of(wallet) == 0
    assert sum(balance_of(r) for r in recipients) == 7_000
    assert_ledger_consistent()


def test_twenty_requests_with_one_key_move_money_once_and_agree():
    user, wallet = register_user()
    auth = auth_header(user)
    _, recipient = register_user()
    fund(wallet, 5_000)
    key = f"same-{uuid.uuid4()}"

    responses = _in_threads(
        20, lambda i: _until_definitive(APIClient(), auth, to=recipient.handle, amount=1_234, key=key)
    )

    assert {r.status_code for r in responses} == {201}
    bodies = [r.json() for r in responses]
    assert all(body == bodies[0] for body in bodies)
    assert sum(1 for r in responses if "Idempotent-Replayed" not in r) == 1
    assert balance_of(recipient) == 1_234
    assert Entry.objects.filter(account_id=recipient.account_id).count() == 1
    assert IdempotencyKey.objects.filter(key=key).count() == 1
    assert_ledger_consistent()


def test_a_key_in_flight_answers_409():
    # given a request holding the key's lock (its transaction still open)
    user, wallet = register_user()
    auth = auth_header(user)
    _, recipient = register_user()
    fund(wallet, 5_000)
    from wallets.idempotency import IdempotentRequest, _advisory_key

    holder_ready, release = threading.Event(), threading.Event()

    def hold():
        from ledger.posting import atomic

        try:
            request = IdempotentRequest(user_id=user.id, key="busy", fingerprint="x")
            with atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_advisory_key(request)])
                holder_ready.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holder_ready.wait(timeout=30)
    # when
    try:
        response = transfer(APIClient(), auth, to=recipient.handle, amount=10, key="busy")
    finally:
        release.set()
        holder.join()
    # then
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_in_use"
    assert balance_of(recipient) == 0
    assert transfer(APIClient(), auth, to=recipient.handle, amount=10, key="busy").status_code == 201


def test_opposite_transfers_at_once_never_deadlock():
    # given two wallets sending to each other from many threads at once
    a_user, a_wallet = register_user()
    b_user, b_wallet = register_user()
    fund(a_wallet, 100_000)
    fund(b_wallet, 100_000)
    auth = {a_wallet.handle: auth_header(a_user), b_wallet.handle: auth_header(b_user)}

    def ping_pong(i):
        sender, to = (a_wallet.handle, b_wallet.handle) if i % 2 else (b_wallet.handle, a_wallet.handle)
        client = APIClient()
        return [transfer(client, auth[sender], to=to, amount=1 + (i + n) % 7).status_code for n in range(15)]

    # when
    results = _in_threads(16, ping_pong)
    # then: every transfer went through (no 500 from a deadlock), money only moved between them
    assert {code for codes in results for code in codes} == {201}
    assert balance_of(a_wallet) + balance_of(b_wallet) == 200_000
    assert_ledger_consistent()
