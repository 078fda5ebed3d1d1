"""The bank's payout API as this service uses it, over HTTP, with a timeout on every call and
one circuit breaker (walletsite.breaker) for the bank.

Every payout carries the withdrawal id as its `reference`, which the bank treats as an
idempotency key: a second submission of one reference is answered with the first payout,
never paid again. Calls:

- POST {BANK_URL}/payouts {reference, amount, currency, account_number, ifsc, holder_name}
  -> 200/201 {reference, status, ...}
- GET {BANK_URL}/payouts/{reference} -> 200 {reference, status, ...}, or 404 when the bank
  never received it
- POST {BANK_URL}/payouts/{reference}/cancel -> 200 {status} (cancelled, or the status it
  settled with first), or 404

A payout's status at the bank: processing, succeeded, failed or cancelled.

Errors say what is known about the request, which is what the caller must decide on:
`BankUnreachable` — the request never reached the bank (the connection failed, or the
breaker refused to send it): safe to send again later; `BankError` — anything else (a
timeout after the request was sent, a 5xx, an answer we do not understand): the bank may
have the payout, so it must be asked before anything is sent again. Neither carries the
account number.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from walletsite.breaker import CircuitBreaker, CircuitOpen, breaker_get

STATUSES = ("processing", "succeeded", "failed", "cancelled")
# The bank is this service's own sandbox by default (PUBLIC_URL), which an HTTP(S)_PROXY
# from the environment must not route elsewhere; a real bank is reached directly too.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BankError(Exception):
    """The call failed in a way that leaves it unknown whether the bank acted on it."""


class BankUnreachable(BankError):
    """The request never reached the bank: nothing was received there."""


@dataclass(frozen=True)
class Payout:
    """The bank's view of one payout."""

    reference: str
    status: str
    body: dict


def bank_base_url() -> str:
    configured = settings.WALLET.get("BANK_URL") or ""
    return configured or f"{settings.WALLET['PUBLIC_URL']}/sandbox/bank"


def bank_breaker() -> CircuitBreaker:
    return breaker_get(
        name="bank",
        failure_threshold=settings.WALLET["BANK_BREAKER_FAILURES"],
        cooldown_seconds=settings.WALLET["BANK_BREAKER_COOLDOWN_SECONDS"],
    )


def _counts_against_bank(exc: BaseException) -> bool:
    # A 4xx answer proves the bank is up (it refused this request): only failures of the
    # bank itself open the breaker.
    return isinstance(exc, BankError)


def _read(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _send(method: str, path: str, body: dict | None) -> tuple[int, Any]:
    url = f"{bank_base_url()}{path}"
    data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
    request = urllib.request.Request(  # noqa: S310 (BANK_URL is validated as http(s) in config)
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "wallet/1"},
    )
    timeout = settings.WALLET["BANK_TIMEOUT_SECONDS"]
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as answer:
        with answer:
            status, raw = answer.code, answer.read()
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError | socket.gaierror):
            raise BankUnreachable(f"the bank refused the connection ({type(exc.reason).__name__})") from None
        raise BankError(f"the bank call failed: {type(exc.reason).__name__}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise BankError(f"the bank did not answer in {timeout} s ({type(exc).__name__})") from None
    if status >= 500:
        raise BankError(f"the bank answered {status}")
    return status, _read(raw)


def _call(method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
    try:
        return bank_breaker().call(lambda: _send(method, path, body), is_failure=_counts_against_bank)
    except CircuitOpen as exc:
        raise BankUnreachable(str(exc)) from None


def _payout(status: int, body: Any, *, expected: tuple[int, ...]) -> Payout:
    if status not in expected or not isinstance(body, dict) or body.get("status") not in STATUSES:
        raise BankError(f"the bank answered {status} with a body we do not understand")
    return Payout(reference=str(body.get("reference", "")), status=body["status"], body=body)


def bank_payout_submit(
    *, reference: str, amount: int, currency: str, account_number: str, ifsc: str, holder_name: str
) -> Payout:
    """Send a payout (idempotent at the bank by `reference`)."""
    status, body = _call(
        "POST",
        "/payouts",
        {
            "reference": reference,
            "amount": amount,
            "currency": currency,
            "account_number": account_number,
            "ifsc": ifsc,
            "holder_name": holder_name,
        },
    )
    return _payout(status, body, expected=(200, 201, 202))


def _path(reference: str) -> str:
    return f"/payouts/{urllib.parse.quote(reference, safe='')}"


def bank_payout_status(*, reference: str) -> Payout | None:
    """The bank's view of a payout; None when the bank never received it."""
    status, body = _call("GET", _path(reference))
    if status == 404:
        return None
    return _payout(status, body, expected=(200,))


def bank_payout_cancel(*, reference: str) -> Payout | None:
    """Ask the bank to cancel; its status afterwards (cancelled, unless it settled first).
    None when the bank never received it."""
    status, body = _call("POST", f"{_path(reference)}/cancel")
    if status == 404:
        return None
    return _payout(status, body, expected=(200, 409))
