"""The sandbox bank's own routes (it plays an outside system): payouts deduplicated by
reference and counted, status, cancel, complete and its refusals; and the circuit breaker's
states, which the bank client relies on."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client

from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import SandboxPayout
from walletsite.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen

PAYOUT = {
    "amount": 1500,
    "currency": "INR",
    "account_number": "001234567890",
    "ifsc": "HDFC0001234",
    "holder_name": "Asha Rao",
}


def submit(client, reference: str, **changes):
    return client.post(
        "/sandbox/bank/payouts", {"reference": reference, **PAYOUT, **changes}, content_type="application/json"
    )


@pytest.mark.django_db
def test_a_payout_is_received_once_per_reference_and_counted(client):
    # given
    reference = str(uuid.uuid4())
    # when
    first = submit(client, reference)
    second = submit(client, reference)
    status = client.get(f"/sandbox/bank/payouts/{reference}")
    # then
    assert first.status_code == 201 and first.json()["status"] == "processing"
    assert second.status_code == 200 and second.json()["submissions"] == 2
    assert status.json() == {
        "reference": reference,
        "status": "processing",
        "amount": 1500,
        "currency": "INR",
        "submissions": 2,
    }
    payout = SandboxPayout.objects.get()
    assert payout.account_last4 == "7890"
    # The sandbox keeps no full account number anywhere.
    assert "001234567890" not in str(SandboxPayout.objects.values().get())


@pytest.mark.django_db
def test_cancel_stops_a_processing_payout_only(client):
    # given
    reference = str(uuid.uuid4())
    submit(client, reference)
    # when
    cancelled = client.post(f"/sandbox/bank/payouts/{reference}/cancel")
    again = client.post(f"/sandbox/bank/payouts/{reference}/cancel")
    completed = client.post(
        f"/sandbox/payouts/{reference}/complete", {"outcome": "succeeded"}, content_type="application/json"
    )
    # then
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert completed.status_code == 400 and completed.json()["code"] == "validation_failed"
    assert SandboxPayout.objects.get().status == "cancelled"


@pytest.mark.django_db
def test_unknown_payouts_and_bad_requests_are_refused(client):
    unknown = str(uuid.uuid4())
    assert client.get(f"/sandbox/bank/payouts/{unknown}").json()["code"] == "withdrawal_not_found"
    assert client.post(f"/sandbox/bank/payouts/{unknown}/cancel").status_code == 404
    complete_unknown = client.post(
        f"/sandbox/payouts/{unknown}/complete", {"outcome": "failed"}, content_type="application/json"
    )
    assert complete_unknown.status_code == 404
    for changes in [{"amount": 0}, {"ifsc": "bad"}, {"account_number": "12"}, {"extra": 1}]:
        assert submit(client, unknown, **changes).status_code == 400, changes
    bad_outcome = client.post(
        f"/sandbox/payouts/{unknown}/complete", {"outcome": "maybe"}, content_type="application/json"
    )
    assert bad_outcome.status_code == 400 and bad_outcome.json()["code"] == "validation_failed"
    assert SandboxPayout.objects.count() == 0
    assert_ledger_consistent()


@pytest.mark.django_db
def test_the_sandbox_bank_is_not_routed_without_sandbox_mode():
    # given: the URL configuration as production builds it
    import importlib

    from django.conf import settings
    from django.test import override_settings
    from django.urls import clear_url_caches

    import walletsite.urls

    try:
        with override_settings(WALLET={**settings.WALLET, "GATEWAY_SANDBOX": False}):
            importlib.reload(walletsite.urls)
            clear_url_caches()
            # when
            response = Client().get(f"/sandbox/bank/payouts/{uuid.uuid4()}")
            # then
            assert response.status_code == 404 and response.json()["code"] == "not_found"
    finally:
        importlib.reload(walletsite.urls)
        clear_url_caches()


# --- the circuit breaker -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def failing():
    raise OSError("down")


def test_the_breaker_opens_after_consecutive_failures_and_probes_once_after_the_cooldown():
    # given
    clock = Clock()
    breaker = CircuitBreaker(name="test", failure_threshold=3, cooldown_seconds=10, clock=clock)
    is_failure = lambda exc: isinstance(exc, OSError)  # noqa: E731
    # when: two failures, a success (the count starts again), then three failures
    for _ in range(2):
        with pytest.raises(OSError):
            breaker.call(failing, is_failure=is_failure)
    assert breaker.call(lambda: "ok", is_failure=is_failure) == "ok"
    for _ in range(2):
        with pytest.raises(OSError):
            breaker.call(failing, is_failure=is_failure)
    assert breaker.state == CLOSED
    with pytest.raises(OSError):
        breaker.call(failing, is_failure=is_failure)
    # then: open, refusing without calling
    assert breaker.state == OPEN and not breaker.would_allow()
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: pytest.fail("called while open"), is_failure=is_failure)
    # when: the cool-down passes, one probe goes through and fails
    clock.now += 10
    assert breaker.state == HALF_OPEN and breaker.would_allow()
    assert breaker.allow()
    assert not breaker.allow() and not breaker.would_allow()
    breaker.record_failure()
    # then: open again for another cool-down
    assert breaker.state == OPEN
    clock.now += 10
    # when: the next probe succeeds
    assert breaker.call(lambda: "back", is_failure=is_failure) == "back"
    # then
    assert breaker.state == CLOSED and breaker.would_allow()


def test_a_refusal_that_proves_the_system_is_up_is_not_a_failure():
    # given
    breaker = CircuitBreaker(name="test", failure_threshold=1, cooldown_seconds=10)
    # when
    with pytest.raises(ValueError):
        breaker.call(lambda: int("x"), is_failure=lambda exc: isinstance(exc, OSError))
    # then
    assert breaker.state == CLOSED
