"""Transfers under group commit (wallets.transfers.TRANSFERS, ledger.batcher), through the
HTTP API: requests queued while a batch is in flight form one batch, in one database
transaction, and each still succeeds or fails on its own, exactly as it would alone."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import Pin, Tier
from accounts.tiers import user_tier_change
from accounts.tokens import session_logout
from ledger.models import Entry, OutboxEvent
from ledger.tests.batching import queue_in_order
from ledger.tests.faults import backend_killer
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import IdempotencyKey
from wallets.tests.factories import DEFAULT_PIN, auth_header, register_user
from wallets.tests.money import balance_of, fund, transfer
from wallets.transfers import TRANSFERS

pytestmark = pytest.mark.django_db(transaction=True)


def _funded(amount: int = 1_000):
    """A registered user with `amount` in their wallet: (user, wallet, bearer header)."""
    user, wallet = register_user()
    fund(wallet, amount)
    return user, wallet, auth_header(user)


@pytest.fixture
def holder():
    """A funded wallet whose transfer holds the batcher (see _as_one_batch)."""
    _, _, auth = _funded()
    return auth, register_user()[1]


# The sizes of the batches _as_one_batch saw, the holder's first.
BATCHES: list[int] = []


def _as_one_batch(monkeypatch, holder, calls: list) -> list:
    """Send the holder's transfer and hold its batch just before COMMIT; send `calls`
    (functions making one request each) meanwhile, so they queue behind it in that order; release. The
    queued requests then run as the next batch(es). Returns their responses in order."""
    entered, release = threading.Event(), threading.Event()

    def hold():
        if not entered.is_set():
            entered.set()
            assert release.wait(30)

    monkeypatch.setattr(TRANSFERS, "before_commit", hold)
    execute = TRANSFERS.execute
    BATCHES.clear()

    def recorded(commands):
        BATCHES.append(len(commands))
        return execute(commands)

    monkeypatch.setattr(TRANSFERS, "execute", recorded)
    h_auth, h_to = holder

    def run(call):
        try:
            return call()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(calls) + 1) as pool:
        first = pool.submit(run, lambda: transfer(APIClient(), h_auth, to=h_to.handle, amount=1))
        assert entered.wait(30)
        futures = queue_in_order(pool, TRANSFERS, [lambda call=call: run(call) for call in calls])
        release.set()
        assert first.result(timeout=60).status_code == 201
        return [f.result(timeout=60) for f in futures]


def test_one_batch_many_senders_one_short_of_money(monkeypatch, holder):
    # given: six senders, the fourth holding less than it sends
    senders = []
    for i in range(6):
        _, wallet, auth = _funded(50 if i == 3 else 1_000)
        senders.append((auth, wallet))
    recipient = register_user()[1]
    # when
    responses = _as_one_batch(
        monkeypatch,
        holder,
        [lambda auth=auth: transfer(APIClient(), auth, to=recipient.handle, amount=100) for auth, _ in senders],
    )
    # then: one refusal, five transfers, and they were one batch (a sum of 6 commands)
    codes = [(r.status_code, r.json().get("code")) for r in responses]
    assert codes == [(201, None)] * 3 + [(422, "insufficient_funds")] + [(201, None)] * 2, codes
    assert balance_of(recipient) == 500
    assert [balance_of(w) for _, w in senders] == [900, 900, 900, 50, 900, 900]
    assert BATCHES == [1, 6]
    assert OutboxEvent.objects.filter(type="transfer.posted").count() == 6  # the holder's and five
    # the refusal is the request's answer: stored with its key
    assert IdempotencyKey.objects.filter(response_status=422).count() == 1
    assert_ledger_consistent()


def test_everyone_paying_one_wallet_in_one_batch(monkeypatch, holder):
    # given: twenty senders and one merchant
    senders = []
    for _ in range(20):
        senders.append(_funded()[2])
    _, merchant = register_user(role="merchant")
    # when
    responses = _as_one_batch(
        monkeypatch,
        holder,
        [
            lambda auth=auth, n=n: transfer(APIClient(), auth, to=merchant.handle, amount=10 + n)
            for n, auth in enumerate(senders)
        ],
    )
    # then: one batch; every transfer posted, each entry with the merchant's running balance
    assert BATCHES == [1, 20]
    assert [r.status_code for r in responses] == [201] * 20
    assert balance_of(merchant) == sum(10 + n for n in range(20))
    credits = list(
        Entry.objects.filter(account_id=merchant.account_id).order_by("id").values_list("amount", "balance_after")
    )
    running = 0
    for amount, balance_after in credits:
        running += amount
        assert balance_after == running
    assert_ledger_consistent()


def test_the_balance_ceiling_counts_earlier_credits_of_the_same_batch(monkeypatch, holder):
    # given: a receiver with a ceiling of 5,000 holding 4,700, and three senders of 200 each
    small = Tier.objects.create(
        code="small",
        name="Small",
        per_transaction_limit=10_000,
        daily_outgoing_limit=10_000,
        monthly_outgoing_limit=10_000,
        balance_ceiling=5_000,
    )
    r_user, receiver = register_user()
    user_tier_change(user=r_user, tier=small, actor=None, reason="test tier")
    fund(receiver, 4_700)
    senders = []
    for _ in range(3):
        senders.append(_funded()[2])
    # when: all three in one batch
    responses = _as_one_batch(
        monkeypatch,
        holder,
        [lambda auth=auth: transfer(APIClient(), auth, to=receiver.handle, amount=200) for auth in senders],
    )
    # then: the first fits (4,900); the second would make 5,100 and is refused; the third too
    assert BATCHES == [1, 3]
    codes = [(r.status_code, r.json().get("code")) for r in responses]
    assert codes == [(201, None), (422, "limit_exceeded"), (422, "limit_exceeded")], codes
    assert balance_of(receiver) == 4_900
    assert_ledger_consistent()


def _count_pipelines(monkeypatch, each=None) -> list[tuple[int, bool]]:
    """Record every pipeline the batches send, (statements, whether COMMIT goes with them):
    transfers_execute's own and the batcher's writes; `each` runs before each is sent."""
    import ledger.batcher
    import wallets.transfers

    trips: list[tuple[int, bool]] = []
    run = wallets.transfers.pipelined

    def counted(*queries, commit=False):
        trips.append((len(queries), commit))
        if each is not None:
            each(len(trips))
        return run(*queries, commit=commit)

    monkeypatch.setattr(wallets.transfers, "pipelined", counted)
    monkeypatch.setattr(ledger.batcher, "pipelined", counted)
    return trips


def test_a_batch_is_two_round_trips_and_its_answers_are_what_it_stored(monkeypatch, holder):
    # given: three senders, one of them with a wrong PIN (so a PIN row is saved too)
    senders = [_funded() for _ in range(3)]
    recipient = register_user()[1]
    trips = _count_pipelines(monkeypatch)
    # when
    responses = _as_one_batch(
        monkeypatch,
        holder,
        [
            lambda auth=auth, n=n: transfer(
                APIClient(), auth, to=recipient.handle, amount=10, pin="9999" if n == 1 else DEFAULT_PIN
            )
            for n, (_, _, auth) in enumerate(senders)
        ],
    )
    # then: each batch was two pipelines: the reads and locks (key locks, stored answers,
    # logins, PINs, wallets, accounts, statuses, outgoing totals, the clock), then the writes
    # (the posting, its events, the stored answers; for the batch with the wrong PIN, the PIN
    # state too) with the COMMIT
    assert BATCHES == [1, 3]
    assert trips == [(9, False), (3, True), (9, False), (4, True)]
    assert [r.status_code for r in responses] == [201, 403, 201]
    # and: each answer carries the rows as the database holds them, and is the stored answer
    for (user, _, _), response in zip(senders, responses, strict=True):
        if response.status_code != 201:
            continue
        body = response.json()
        entry = Entry.objects.select_related("transaction").get(
            transaction_id=body["transaction"]["id"], account__wallet__user=user
        )
        assert body["transaction"]["created_at"] == entry.created_at.isoformat().replace("+00:00", "Z")
        assert entry.transaction.created_at == entry.created_at
        assert body["balance"] == entry.balance_after == balance_of(user.wallet)
        stored = IdempotencyKey.objects.get(user=user)
        assert (stored.response_status, stored.response_body) == (201, body)
    assert Pin.objects.get(user=senders[1][0]).failed_attempts == 1
    assert_ledger_consistent()


def test_one_sender_twice_never_shares_a_batch_and_a_repeated_key_replays(monkeypatch, holder):
    # given: a sender with 1,000 sending 700 three times: twice with one key, once with another
    _, wallet, auth = _funded()
    recipient = register_user()[1]
    key = uuid.uuid4().hex
    # when: all three queued together
    responses = _as_one_batch(
        monkeypatch,
        holder,
        [
            lambda: transfer(APIClient(), auth, to=recipient.handle, amount=700, key=key),
            lambda: transfer(APIClient(), auth, to=recipient.handle, amount=700, key=key),
            lambda: transfer(APIClient(), auth, to=recipient.handle, amount=700),
        ],
    )
    # then: three batches; the first moved the money, the second replays its answer (it ran
    # in a later batch, after the first committed), the third sees the first's debit
    assert BATCHES == [1, 1, 1, 1]
    first, second, third = responses
    assert first.status_code == 201 and second.status_code == 201
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.json() == first.json()
    assert (third.status_code, third.json()["code"]) == (422, "insufficient_funds")
    assert (balance_of(wallet), balance_of(recipient)) == (300, 700)
    assert_ledger_consistent()


def test_a_wrong_pin_in_a_batch_counts_and_is_not_stored(monkeypatch, holder):
    # given
    user, wallet, auth = _funded()
    _, _, other_auth = _funded()
    recipient = register_user()[1]
    key = uuid.uuid4().hex
    # when: a wrong PIN beside a good transfer, in one batch
    wrong, good = _as_one_batch(
        monkeypatch,
        holder,
        [
            lambda: transfer(APIClient(), auth, to=recipient.handle, amount=100, pin="9999", key=key),
            lambda: transfer(APIClient(), other_auth, to=recipient.handle, amount=100),
        ],
    )
    # then: the wrong PIN counted (committed with the batch), the other transfer went through
    assert (wrong.status_code, wrong.json()["code"], wrong.json()["attempts_left"]) == (403, "invalid_pin", 4)
    assert good.status_code == 201
    assert Pin.objects.get(user=user).failed_attempts == 1
    # and: the refusal was not stored, so the same key with the right PIN moves the money
    assert not IdempotencyKey.objects.filter(user=user, key=key).exists()
    retried = transfer(APIClient(), auth, to=recipient.handle, amount=100, key=key)
    assert retried.status_code == 201
    assert Pin.objects.get(user=user).failed_attempts == 0
    assert balance_of(wallet) == 900
    assert_ledger_consistent()


def test_an_ended_login_in_a_batch_answers_401_and_leaves_no_trace(monkeypatch, holder):
    # given: a token whose login has ended
    user, wallet, auth = _funded()
    token = auth["HTTP_AUTHORIZATION"].split()[1]
    from rest_framework_simplejwt.tokens import AccessToken

    session_logout(family_id=AccessToken(token)["fam"])
    recipient = register_user()[1]
    # when
    (response,) = _as_one_batch(
        monkeypatch, holder, [lambda: transfer(APIClient(), auth, to=recipient.handle, amount=100)]
    )
    # then
    assert (response.status_code, response.json()["code"]) == (401, "invalid_token")
    assert not IdempotencyKey.objects.filter(user=user).exists()
    assert balance_of(wallet) == 1_000
    assert_ledger_consistent()


def test_a_lost_commit_answers_503_and_the_retry_moves_the_money_once(monkeypatch):
    # given: the batcher's connection dies after the batch's work, just before its COMMIT
    _, wallet, auth = _funded()
    recipient = register_user()[1]

    monkeypatch.setattr(TRANSFERS, "before_commit", backend_killer())
    key = uuid.uuid4().hex
    # when
    lost = transfer(APIClient(), auth, to=recipient.handle, amount=300, key=key)
    # then: the outcome is unknown to the service, so it says so
    assert (lost.status_code, lost.json()["code"]) == (503, "service_unavailable")
    assert lost.headers["Retry-After"] == "1"
    # and: the client's retry with the same key finds out (here: nothing had committed)
    retried = transfer(APIClient(), auth, to=recipient.handle, amount=300, key=key)
    again = transfer(APIClient(), auth, to=recipient.handle, amount=300, key=key)
    assert retried.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert (balance_of(wallet), balance_of(recipient)) == (700, 300)
    assert_ledger_consistent()


def test_a_backend_dying_before_the_reads_splits_the_batch_and_moves_money_once(monkeypatch, holder):
    # given: four senders queued as one batch, whose database session is terminated just
    # before its first pipeline (the reads and locks) is sent
    senders = [_funded() for _ in range(4)]
    recipient = register_user()[1]
    kill = backend_killer()
    # the holder's batch sends pipelines 1-2; pipeline 3 is the batch's reads
    _count_pipelines(monkeypatch, each=lambda n: kill() if n == 3 else None)
    # when
    responses = _as_one_batch(
        monkeypatch,
        holder,
        [lambda auth=auth: transfer(APIClient(), auth, to=recipient.handle, amount=25) for _, _, auth in senders],
    )
    # then: nothing had been sent to COMMIT, so the batch ran again as two halves on a new
    # connection, and every transfer moved its money once
    assert BATCHES == [1, 4, 2, 2]
    assert [r.status_code for r in responses] == [201] * 4
    assert balance_of(recipient) == 100
    assert [balance_of(wallet) for _, wallet, _ in senders] == [975] * 4
    assert IdempotencyKey.objects.filter(user__in=[user for user, _, _ in senders]).count() == 4
    assert Entry.objects.filter(account__wallet=recipient).count() == 4
    assert_ledger_consistent()


def test_a_backend_dying_with_the_writes_and_commit_on_their_way_answers_503_and_retries_move_money_once(
    monkeypatch, holder
):
    # given: four senders queued as one batch, whose session is terminated just as its writes
    # and COMMIT are sent
    senders = [_funded() for _ in range(4)]
    recipient = register_user()[1]
    kill = backend_killer()
    # the holder's batch sends pipelines 1-2; pipeline 4 is the batch's writes and COMMIT
    trips = _count_pipelines(monkeypatch, each=lambda n: kill() if n == 4 else None)
    keys = [uuid.uuid4().hex for _ in senders]
    # when
    responses = _as_one_batch(
        monkeypatch,
        holder,
        [
            lambda auth=auth, key=key: transfer(APIClient(), auth, to=recipient.handle, amount=25, key=key)
            for (_, _, auth), key in zip(senders, keys, strict=True)
        ],
    )
    # then: the COMMIT may have committed, so the batch is not run again and every transfer
    # of it says its outcome is unknown
    assert BATCHES == [1, 4]
    assert trips[3] == (3, True)
    assert [(r.status_code, r.json()["code"]) for r in responses] == [(503, "service_unavailable")] * 4
    # and: each client's retry with its key finds out (here: nothing had committed), once
    retried = [
        transfer(APIClient(), auth, to=recipient.handle, amount=25, key=key)
        for (_, _, auth), key in zip(senders, keys, strict=True)
    ]
    again = [
        transfer(APIClient(), auth, to=recipient.handle, amount=25, key=key)
        for (_, _, auth), key in zip(senders, keys, strict=True)
    ]
    assert [r.status_code for r in retried] == [201] * 4
    assert [r.headers.get("Idempotent-Replayed") for r in again] == ["true"] * 4
    assert balance_of(recipient) == 100
    assert [balance_of(wallet) for _, wallet, _ in senders] == [975] * 4
    assert Entry.objects.filter(account__wallet=recipient).count() == 4
    assert_ledger_consistent()


def test_hammering_one_merchant_from_many_threads_with_retries():
    # given: 40 senders with 500 each, all paying one merchant, every request sent twice
    senders = []
    for _ in range(40):
        _, wallet, auth = _funded(500)
        senders.append((auth, wallet))
    _, merchant = register_user(role="merchant")

    def pay(i):
        auth, _ = senders[i % 40]
        key = f"pay-{i}"
        try:
            first = transfer(APIClient(), auth, to=merchant.handle, amount=100, key=key)
            second = transfer(APIClient(), auth, to=merchant.handle, amount=100, key=key)
            return first.status_code, second.status_code
        finally:
            connection.close()

    # when: 240 payments (6 per sender: one too many for each) from 16 threads
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(pay, range(240)))
    # then: each sender paid exactly 5 times; every retry got the first answer
    firsts = Counter(first for first, _ in results)
    assert firsts == {201: 200, 422: 40}, firsts
    assert all(first == second or second == 409 for first, second in results)
    assert balance_of(merchant) == 200 * 100
    assert all(balance_of(w) == 0 for _, w in senders)
    assert IdempotencyKey.objects.count() == 240
    assert_ledger_consistent()
