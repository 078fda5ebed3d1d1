"""A circuit breaker for calls to an outside system (the bank, the gateway's webhook target).

While the outside system keeps failing, callers stop sending it requests for a cool-down
instead of piling up timeouts: after `failure_threshold` consecutive failures the breaker
opens and refuses calls at once (`CircuitOpen`). When the cool-down has passed, ONE caller
is let through as a probe (half-open); its success closes the breaker, its failure opens it
for another cool-down. Any success resets the count of consecutive failures.

The state lives in the process (as pybreaker's default storage does): each web or worker
process learns for itself that the bank is down, which costs at most `failure_threshold`
failed calls per process. The money state never depends on it: a refused call is a call that
was never sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitOpen(Exception):
    """The breaker refused the call: nothing was sent."""


class CircuitBreaker:
    def __init__(
        self,
        *,
        name: str,
        failure_threshold: int,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or cooldown_seconds < 0:
            raise ValueError("a breaker needs a threshold of at least 1 and a non-negative cool-down")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._current_state()

    def _current_state(self) -> str:
        # Open turns half-open by the passing of time alone, without a call to notice it.
        if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown_seconds:
            self._state = HALF_OPEN
            self._probe_in_flight = False
        return self._state

    def would_allow(self) -> bool:
        """Whether a call now would be let through, without claiming the half-open probe:
        a caller about to take work off a queue asks first, so it leaves the work queued
        while the breaker is open."""
        with self._lock:
            state = self._current_state()
            return state == CLOSED or (state == HALF_OPEN and not self._probe_in_flight)

    def allow(self) -> bool:
        """Claim the right to make one call; False when the breaker refuses it."""
        with self._lock:
            state = self._current_state()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state == HALF_OPEN or self._failures >= self.failure_threshold:
                self._state = OPEN
                self._opened_at = self._clock()
                self._probe_in_flight = False

    def call(self, function: Callable[[], T], *, is_failure: Callable[[BaseException], bool]) -> T:
        """Run `function` if the breaker allows it (else raise CircuitOpen). An exception
        for which `is_failure` is true counts against the outside system; any other
        exception (a refusal that proves the system is up) counts as a success."""
        if not self.allow():
            raise CircuitOpen(f"the {self.name} circuit is open; the call was not sent")
        try:
            result = function()
        except BaseException as exc:
            if is_failure(exc):
                self.record_failure()
            else:
                self.record_success()
            raise
        self.record_success()
        return result

    def reset(self) -> None:
        """Back to closed with no failures (tests, and an operator who knows better)."""
        self.record_success()


_registry: dict[str, CircuitBreaker] = {}
_registry_lock = threading.Lock()


def breaker_get(*, name: str, failure_threshold: int, cooldown_seconds: float) -> CircuitBreaker:
    """The process's one breaker for `name`, created on first use. A changed threshold or
    cool-down (settings overridden in a test) applies to the existing breaker."""
    with _registry_lock:
        breaker = _registry.get(name)
        if breaker is None:
            breaker = _registry[name] = CircuitBreaker(
                name=name, failure_threshold=failure_threshold, cooldown_seconds=cooldown_seconds
            )
        breaker.failure_threshold = failure_threshold
        breaker.cooldown_seconds = cooldown_seconds
        return breaker


def breakers_reset() -> None:
    with _registry_lock:
        for breaker in _registry.values():
            breaker.reset()
