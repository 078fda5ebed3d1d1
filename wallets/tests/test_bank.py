"""The worker's payouts and recovery against the sandbox bank over real HTTP (pytest-django's
live_server, PUBLIC_URL pointed at it, so the bank's callbacks travel over HTTP too), and the
bank client's timeout and circuit breaker against small HTTP servers that play a failing bank.

What must hold: the bank is asked to pay each withdrawal once (the sandbox counts
submissions), whatever crashed where; recovery asks the bank before sending anything again;
a payout the bank never settles is cancelled and released after the timeout, and a late
success is flagged, not posted; while the bank is down, withdrawals wait without requests
piling up, and go out when it is back."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client
from django.utils import timezone

from ledger.tests.invariants import assert_ledger_consistent
from wallets.bank import BankError, BankUnreachable, bank_breaker, bank_payout_status, bank_payout_submit
from wallets.gateway import DeliverySkipped, webhook_deliver
from wallets.models import SandboxPayout, Withdrawal
from wallets.sandbox_bank import sandbox_payout_settle
from wallets.tests.factories import auth_header
from wallets.tests.test_withdrawals import ACCOUNT_NUMBER, bank_event, funded_withdrawal, money, payouts_balance
from wallets.withdrawals import _claim_next, withdrawals_recover, withdrawals_submit
from walletsite.breaker import CircuitBreaker, breakers_reset

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_breakers():
    breakers_reset()
    yield
    breakers_reset()


def _wallet_settings(settings, **changes) -> None:
    # settings.WALLET is one dict: replaced whole, so the settings fixture restores it.
    settings.WALLET = {**settings.WALLET, **changes}


@pytest.fixture
def bank(live_server, settings):
    """The service on a real port, its sandbox bank in manual mode, PUBLIC_URL at it."""
    _wallet_settings(settings, PUBLIC_URL=live_server.url, BANK_URL="", SANDBOX_BANK_MODE="manual")
    return live_server


def complete(withdrawal_id, outcome="succeeded"):
    return Client().post(
        f"/sandbox/payouts/{withdrawal_id}/complete", {"outcome": outcome}, content_type="application/json"
    )


def after(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


def submissions(withdrawal: Withdrawal) -> int:
    return SandboxPayout.objects.get(reference=str(withdrawal.id)).submissions


def status_of(withdrawal: Withdrawal) -> str:
    withdrawal.refresh_from_db()
    return withdrawal.status


class FakeBank:
    """A bank that answers every request with `status` after `delay` seconds, counting them."""

    def __init__(self, *, status: int = 503, delay: float = 0.0) -> None:
        fake = self
        self.requests = 0
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                with fake.lock:
                    fake.requests += 1
                time.sleep(delay)
                body = b'{"error": "unavailable"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # A client that timed out has gone; its answer has nowhere to go.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_bank():
    banks = []

    def make(**kwargs) -> FakeBank:
        banks.append(FakeBank(**kwargs))
        return banks[-1]

    yield make
    for made in banks:
        made.close()


# --- payouts -----------------------------------------------------------------------------


def test_the_worker_sends_a_payout_once_and_the_banks_callback_posts_it(bank, api):
    # given: a withdrawal made through the API
    wallet, withdrawal = funded_withdrawal(amount=40_000, funds=100_000)
    # when: the worker runs twice
    first = withdrawals_submit()
    second = withdrawals_submit()
    # then: the bank got it once, under the withdrawal id, and the customer sees pending
    assert first.results == {"submitted": 1} and second.sent == 0
    assert status_of(withdrawal) == "submitted" and withdrawal.submissions == 1
    payout = SandboxPayout.objects.get(reference=str(withdrawal.id))
    assert (payout.status, payout.submissions, payout.amount, payout.account_last4) == (
        "processing",
        1,
        40_000,
        ACCOUNT_NUMBER[-4:],
    )
    shown = api.get(f"/api/v1/wallet/withdrawals/{withdrawal.id}", **auth_header(wallet.user)).json()
    assert shown["status"] == "pending"
    # when: the bank pays
    response = complete(withdrawal.id)
    # then: the signed callback travelled over HTTP and posted the hold
    assert response.status_code == 200, response.content
    assert response.json()["webhook"] == {
        "status": 200,
        "body": {"received": True, "result": "posted", "withdrawal_id": str(withdrawal.id), "status": "succeeded"},
    }
    assert money(wallet) == (60_000, 0) and payouts_balance() == 40_000
    # a redelivery of the settled payout changes nothing
    assert complete(withdrawal.id, "failed").json()["webhook"]["body"]["result"] == "already_settled"
    assert money(wallet) == (60_000, 0)
    assert_ledger_consistent()


@pytest.mark.parametrize(
    ("mode", "status", "expected"), [("succeed", "succeeded", (60_000, 0)), ("fail", "failed", (100_000, 0))]
)
def test_a_bank_that_settles_at_once_settles_the_withdrawal(bank, settings, mode, status, expected):
    # given: the bank settles each new payout and calls back before it answers
    _wallet_settings(settings, SANDBOX_BANK_MODE=mode)
    wallet, withdrawal = funded_withdrawal(amount=40_000, funds=100_000)
    # when
    run = withdrawals_submit()
    # then: settled once, by whichever came first (the callback or the bank's answer)
    assert run.sent == 1
    assert status_of(withdrawal) == status
    assert money(wallet) == expected
    assert submissions(withdrawal) == 1
    assert not withdrawal.flagged_for_review
    assert_ledger_consistent()


def test_sandbox_complete_of_a_payout_the_bank_never_received_is_404(bank):
    # given
    _, withdrawal = funded_withdrawal()
    # when
    response = complete(withdrawal.id)
    # then
    assert response.status_code == 404 and response.json()["code"] == "withdrawal_not_found"
    assert status_of(withdrawal) == "pending"
    assert_ledger_consistent()


# --- crashes and recovery ----------------------------------------------------------------


def test_a_crash_before_the_bank_was_called_is_sent_once_by_recovery(bank):
    # given: a worker marked the withdrawal submitting, then died before calling the bank
    wallet, withdrawal = funded_withdrawal(amount=40_000, funds=100_000)
    assert _claim_next().id == withdrawal.id
    assert withdrawals_submit().sent == 0
    # when: recovery looks once the recheck interval has passed, and again later
    early = withdrawals_recover()
    first = withdrawals_recover(now=after(120))
    second = withdrawals_recover(now=after(240))
    # then: it asked the bank, which had nothing, so it sent the payout: once
    assert early.checked == 0
    assert first.results == {"submitted": 1}
    assert second.results == {"waiting": 1}
    assert submissions(withdrawal) == 1
    assert status_of(withdrawal) == "submitted"
    assert money(wallet) == (100_000, 40_000)
    assert_ledger_consistent()


def test_a_crash_after_the_bank_got_the_payout_does_not_send_it_again(bank):
    # given: the bank received the payout, then the worker died before recording it
    wallet, withdrawal = funded_withdrawal(amount=40_000, funds=100_000)
    claimed = _claim_next()
    bank_payout_submit(
        reference=str(claimed.id),
        amount=claimed.amount,
        currency=claimed.currency,
        account_number=claimed.bank_account.account_number,
        ifsc=claimed.bank_account.ifsc,
        holder_name=claimed.bank_account.holder_name,
    )
    # when
    run = withdrawals_recover(now=after(120))
    # then: recorded as the bank has it, not sent again
    assert run.results == {"waiting": 1}
    assert submissions(withdrawal) == 1
    assert status_of(withdrawal) == "submitted"
    # and the bank's callback still settles it
    assert complete(withdrawal.id).json()["webhook"]["body"]["result"] == "posted"
    assert money(wallet) == (60_000, 0)
    assert submissions(withdrawal) == 1
    assert_ledger_consistent()


@pytest.mark.parametrize(("outcome", "expected"), [("succeeded", (60_000, 0)), ("failed", (100_000, 0))])
def test_recovery_settles_what_the_bank_settled_silently(bank, outcome, expected):
    # given: sent, and settled at the bank, but its callback never arrived
    wallet, withdrawal = funded_withdrawal(amount=40_000, funds=100_000)
    withdrawals_submit()
    sandbox_payout_settle(reference=str(withdrawal.id), outcome=outcome)
    # when
    run = withdrawals_recover(now=after(120))
    # then
    assert run.results == {"posted" if outcome == "succeeded" else "released": 1}
    assert status_of(withdrawal) == outcome
    assert money(wallet) == expected
    assert submissions(withdrawal) == 1
    assert_ledger_consistent()


def test_a_bank_that_never_answers_is_cancelled_then_released_and_a_late_success_is_flagged(bank, settings):
    # given: the bank accepts payouts and never settles them
    _wallet_settings(settings, SANDBOX_BANK_MODE="never", WITHDRAWAL_TIMEOUT_SECONDS=3600)
    wallet, withdrawal = funded_withdrawal(amount=40_000, funds=100_000)
    withdrawals_submit()
    # when: before the timeout, recovery waits; after it, recovery cancels at the bank
    waiting = withdrawals_recover(now=after(120))
    timed_out = withdrawals_recover(now=after(3700))
    # then: cancelled at the bank, the hold released, nothing lost
    assert waiting.results == {"waiting": 1}
    assert timed_out.results == {"released": 1}
    assert SandboxPayout.objects.get(reference=str(withdrawal.id)).status == "cancelled"
    assert status_of(withdrawal) == "failed" and "in time" in withdrawal.failure_reason
    assert money(wallet) == (100_000, 0)
    # when: the bank calls back a success anyway (its cancel lost a race on its side)
    delivery = webhook_deliver(
        url=f"{bank.url}/api/v1/webhooks/bank",
        event=bank_event(withdrawal, "succeeded"),
        secret=settings.WALLET["BANK_WEBHOOK_SECRET"],
        header_name="Bank-Signature",
    )
    # then: flagged for review, not posted
    assert delivery.status == 200 and delivery.body["result"] == "flagged"
    withdrawal.refresh_from_db()
    assert withdrawal.status == "failed" and withdrawal.flagged_for_review
    assert money(wallet) == (100_000, 0) and payouts_balance() == 0
    assert submissions(withdrawal) == 1
    assert_ledger_consistent()


# --- timeouts and the circuit breaker ----------------------------------------------------


def test_a_bank_call_times_out(settings, fake_bank):
    # given: a bank that answers after 3 s, and a 1 s timeout
    slow = fake_bank(status=200, delay=3)
    _wallet_settings(settings, BANK_URL=slow.url, BANK_TIMEOUT_SECONDS=1)
    started = time.monotonic()
    # when / then
    with pytest.raises(BankError) as raised:
        bank_payout_status(reference="anything")
    assert not isinstance(raised.value, BankUnreachable)
    assert time.monotonic() - started < 2.5


def test_an_unreachable_bank_leaves_the_withdrawal_queued(settings, fake_bank):
    # given: nothing listens at the bank's address
    closed = fake_bank()
    closed.close()
    _wallet_settings(settings, BANK_URL=closed.url)
    wallet, withdrawal = funded_withdrawal(amount=1000, funds=1000)
    # when
    run = withdrawals_submit()
    # then: not sent, so back in the queue as it was
    assert run.results == {"unreachable": 1}
    assert status_of(withdrawal) == "pending" and withdrawal.submissions == 0
    assert money(wallet) == (1000, 1000)
    assert_ledger_consistent()


def test_while_the_bank_fails_withdrawals_wait_and_go_out_once_it_recovers(bank, settings, fake_bank, api):
    # given: a bank that answers 503 to everything, a breaker that opens after 2 failures
    down = fake_bank(status=503)
    _wallet_settings(settings, BANK_URL=down.url, BANK_BREAKER_FAILURES=2, BANK_BREAKER_COOLDOWN_SECONDS=0.5)
    made = [funded_withdrawal(amount=1000, funds=1000) for _ in range(5)]
    # when: the worker runs again and again while the bank is down
    first = withdrawals_submit()
    later = [withdrawals_submit() for _ in range(5)]
    recovered_early = withdrawals_recover(now=after(120))
    # then: two requests opened the breaker; after that nothing was sent
    assert first.results == {"error": 2}
    assert all(run.sent == 0 for run in later)
    assert recovered_early.checked == 0
    assert down.requests == 2
    assert bank_breaker().state == "open"
    for wallet, withdrawal in made:
        shown = api.get(f"/api/v1/wallet/withdrawals/{withdrawal.id}", **auth_header(wallet.user)).json()
        assert shown["status"] == "pending"
        assert money(wallet) == (1000, 1000)
    # when: the bank is back and the cool-down has passed
    _wallet_settings(settings, BANK_URL="")
    time.sleep(0.6)
    sent = withdrawals_submit()
    recovered = withdrawals_recover(now=after(120))
    # then: the waiting ones went out; the two sent into the outage were asked about first
    # and sent (the bank had no record of them), the other three are processing there:
    # every payout once
    assert sent.results == {"submitted": 3}
    assert recovered.results == {"submitted": 2, "waiting": 3}
    assert bank_breaker().state == "closed"
    assert down.requests == 2
    assert sorted(p.submissions for p in SandboxPayout.objects.all()) == [1] * 5
    assert {status_of(w) for _, w in made} == {"submitted"}
    assert_ledger_consistent()


def test_a_slow_bank_holds_a_payout_run_no_longer_than_its_budget(settings, fake_bank):
    """Found by the chaos suite: a run sent up to 50 payouts to a bank that took its whole
    timeout for each, holding the worker (and the outbox behind it) for minutes."""
    # given: three pending withdrawals, and a bank that takes 0.8 s over every call
    slow = fake_bank(status=200, delay=0.8)
    _wallet_settings(settings, BANK_URL=slow.url, BANK_TIMEOUT_SECONDS=5)
    made = [funded_withdrawal(amount=1000, funds=1000) for _ in range(3)]
    # when: a run with a budget shorter than one call
    run = withdrawals_submit(budget_seconds=0.3)
    # then: one payout went out (its answer unknown); the others were not started and wait
    assert run.sent == 1 and run.results == {"error": 1} and slow.requests == 1
    assert sorted(status_of(withdrawal) for _, withdrawal in made) == ["pending", "pending", "submitting"]
    assert_ledger_consistent()


def test_a_slow_bank_holds_a_recovery_run_no_longer_than_its_budget(settings, fake_bank):
    # given: three withdrawals in flight long enough to be asked about, and a slow bank
    slow = fake_bank(status=200, delay=0.8)
    _wallet_settings(settings, BANK_URL=slow.url, BANK_TIMEOUT_SECONDS=5)
    made = [funded_withdrawal(amount=1000, funds=1000) for _ in range(3)]
    Withdrawal.objects.update(status=Withdrawal.Status.SUBMITTED)
    # when
    run = withdrawals_recover(now=after(3600), budget_seconds=0.3)
    # then: the bank was asked about one; the others are the next run's
    assert run.checked == 1 and run.results == {"error": 1} and slow.requests == 1
    assert [status_of(withdrawal) for _, withdrawal in made] == ["submitted"] * 3
    assert_ledger_consistent()


def test_gateway_deliveries_time_out_and_stop_while_the_receiver_fails(fake_bank):
    # given: a receiver that answers 503, one that answers too late, and a breaker of 2
    failing_receiver = fake_bank(status=503)
    slow_receiver = fake_bank(status=200, delay=3)
    breaker = CircuitBreaker(name="test_receiver", failure_threshold=2, cooldown_seconds=60)
    event = {"id": "evt_1", "type": "payment.succeeded", "data": {}}
    # when
    answers = [
        webhook_deliver(url=failing_receiver.url, event=event, secret="s" * 32, breaker=breaker) for _ in range(2)
    ]
    # then: after two failures nothing more is sent
    assert [a.status for a in answers] == [503, 503]
    with pytest.raises(DeliverySkipped):
        webhook_deliver(url=failing_receiver.url, event=event, secret="s" * 32, breaker=breaker)
    assert failing_receiver.requests == 2
    # and a receiver that does not answer in time is a failure after the timeout
    started = time.monotonic()
    with pytest.raises(OSError):
        webhook_deliver(url=slow_receiver.url, event=event, secret="s" * 32, timeout=1)
    assert time.monotonic() - started < 2.5


def test_the_worker_runs_the_payout_and_recovery_jobs(bank):
    # given
    from wallets.worker import Worker, default_jobs

    wallet, withdrawal = funded_withdrawal(amount=40_000, funds=100_000)
    names = [job.name for job in default_jobs()]
    # when
    Worker(jobs=[job for job in default_jobs() if "withdrawals" in job.name]).run_once()
    # then
    assert {"submit_withdrawals", "recover_withdrawals"} <= set(names)
    assert status_of(withdrawal) == "submitted" and submissions(withdrawal) == 1
    assert money(wallet) == (100_000, 40_000)
    assert_ledger_consistent()
