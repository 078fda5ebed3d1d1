"""The payment gateway's side of the wire: webhook signatures and the HTTP client that
delivers a signed event (used by the sandbox gateway and bank, which play outside systems,
and by the merchant webhooks).

A signature header reads `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`,
as Stripe's does. The bank's callbacks are signed the same way, so these helpers take the
secret as an argument instead of reading one setting.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from walletsite.breaker import CircuitBreaker, breaker_get
from walletsite.errors import InvalidSignature

SIGNATURE_HEADER = "Gateway-Signature"
SCHEME = "v1"
# A header carries one timestamp and a few signatures (more than one while a secret is being
# rotated); anything longer is not a header we wrote.
MAX_HEADER_LENGTH = 1024
DELIVERY_TIMEOUT_SECONDS = 5
# A delivery target that failed this many times in a row (network failure or 5xx) gets no
# request for the cool-down, then one probe (walletsite.breaker).
DELIVERY_BREAKER_FAILURES = 5
DELIVERY_BREAKER_COOLDOWN_SECONDS = 30


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook goes to the URL it names. A redirect is the receiver's answer (not 2xx, so a
    failure), never followed: a receiver must not bounce the request to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# The sandbox delivers to this service's own PUBLIC_URL: an HTTP(S)_PROXY from the
# environment (set for outbound traffic) must not route it elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


class DeliveryRefused(OSError):
    """A public-only delivery whose host is, or resolves to, an address that is not public
    (this machine, a private network, link-local cloud metadata): nothing was sent."""


def _public_address(url: str) -> str:
    """The address to connect to for `url`, when every address its host resolves to is
    public; else DeliveryRefused. Resolving here, not only when the URL was registered,
    catches a name that points inside the network (or is re-pointed there later)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DeliveryRefused(f"{parts.hostname} does not resolve ({exc.strerror})") from None
    addresses = [info[4][0] for info in found]
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses):
        raise DeliveryRefused(f"{parts.hostname} resolves to an address that is not public")
    return addresses[0]


def _pinned(connection_class: type, address: str) -> type:
    """`connection_class` connecting to `address` whatever the host resolves to by then, so
    the address checked is the address used (no DNS rebinding between the two). TLS still
    sends and verifies the URL's host name."""

    class Pinned(connection_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # http.client opens its socket through this attribute (set in __init__ for
            # exactly this kind of override); test_webhooks_merchant_ssrf checks it still is.
            self._create_connection = lambda target, *rest: socket.create_connection((address, target[1]), *rest)

    return Pinned


class _PinnedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, address: str):
        super().__init__()
        self.address = address

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_pinned(http_class, self.address), req, **kwargs)


class _PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, address: str):
        super().__init__()
        self.address = address

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_pinned(http_class, self.address), req, **kwargs)


def _public_opener(url: str) -> urllib.request.OpenerDirector:
    address = _public_address(url)
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), _NoRedirect(), _PinnedHTTPHandler(address), _PinnedHTTPSHandler(address)
    )


def signature_compute(*, secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(*, secrets: str | Sequence[str], body: bytes, timestamp: int | None = None) -> str:
    """The signature header for `body`: one v1 value per secret, so a sender rotating its
    secret can sign with the old and the new one until every receiver has the new one."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    parts = [f"t={timestamp}"] + [
        f"{SCHEME}={signature_compute(secret=k, timestamp=timestamp, body=body)}" for k in keys
    ]
    return ",".join(parts)


def _parse(header: str) -> tuple[int, list[str]]:
    """(timestamp, v1 signatures) of a header; InvalidSignature when it is malformed."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or not value:
            raise InvalidSignature("The signature header must read t=<unix seconds>,v1=<hex signature>")
        if name == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                raise InvalidSignature("The signature header needs exactly one t=<unix seconds>")
            timestamp = int(value)
        elif name == SCHEME:
            signatures.append(value.lower())
        # Other schemes (v0, a future v2) are skipped, as Stripe's receivers do, so a sender
        # can add one before receivers understand it.
    if timestamp is None or not signatures:
        raise InvalidSignature("The signature header needs t=<unix seconds> and at least one v1=<hex signature>")
    return timestamp, signatures


def signature_verify(
    *, header: str | None, body: bytes, secret: str, tolerance_seconds: int, now: float | None = None
) -> int:
    """Check a signature header against the raw request body; return its timestamp.

    Raises InvalidSignature (400) when the header is missing or malformed, when no v1 value
    matches, or when the timestamp is more than `tolerance_seconds` from now (a replayed
    old delivery). Signatures are compared in constant time."""
    if not header:
        raise InvalidSignature("The request has no signature header")
    if len(header) > MAX_HEADER_LENGTH:
        raise InvalidSignature("The signature header is too long")
    timestamp, candidates = _parse(header)
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_seconds:
        raise InvalidSignature(f"The signature timestamp is more than {tolerance_seconds} s from now")
    expected = signature_compute(secret=secret, timestamp=timestamp, body=body)
    # Every candidate is compared (no early exit on a match), so the time taken does not
    # reveal which position held the right signature.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected.encode("ascii"), candidate.encode("ascii", "replace"))
    if not matched:
        raise InvalidSignature("No signature in the header matches the body")
    return timestamp


@dataclass(frozen=True)
class Delivery:
    """What the receiver answered: its HTTP status and body (parsed when it is JSON)."""

    status: int
    body: Any


def _read_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def delivery_breaker(*, name: str) -> CircuitBreaker:
    """The process's breaker for deliveries to one receiver (`name` says which)."""
    return breaker_get(
        name=name, failure_threshold=DELIVERY_BREAKER_FAILURES, cooldown_seconds=DELIVERY_BREAKER_COOLDOWN_SECONDS
    )


class DeliverySkipped(OSError):
    """The circuit breaker refused the delivery: nothing was sent. An OSError, so callers
    treat it as the network failure it stands in for."""


def webhook_deliver(
    *,
    url: str,
    event: dict,
    secret: str,
    header_name: str = SIGNATURE_HEADER,
    timeout: float = DELIVERY_TIMEOUT_SECONDS,
    breaker: CircuitBreaker | None = None,
    public_only: bool = False,
) -> Delivery:
    """POST `event` as JSON to `url` with a fresh signature, over real HTTP, as a gateway
    would. A 4xx or 5xx answer is returned, not raised (a 3xx too: redirects are not
    followed); a network failure raises OSError (urllib.error.URLError is one).

    `public_only` (a URL someone outside gave us: a merchant's endpoint, in production):
    the host must resolve to public addresses only, and the connection goes to the address
    that was checked; otherwise DeliveryRefused (an OSError) and nothing is sent.

    With a `breaker`, a network failure or a 5xx answer counts against the receiver; while
    the breaker is open nothing is sent and DeliverySkipped is raised at once, so a caller
    retrying into an outage does not pile up requests that each wait for the timeout."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"webhooks are delivered over http(s) only, not to {url!r}")
    send = {"url": url, "event": event, "secret": secret, "header_name": header_name, "timeout": timeout}
    if breaker is None:
        return _deliver(**send, public_only=public_only)
    if not breaker.allow():
        raise DeliverySkipped(f"the {breaker.name} circuit is open; the delivery was not sent")
    try:
        delivery = _deliver(**send, public_only=public_only)
    except OSError:
        breaker.record_failure()
        raise
    if delivery.status >= 500:
        breaker.record_failure()
    else:
        breaker.record_success()
    return delivery


def _deliver(*, url: str, event: dict, secret: str, header_name: str, timeout: float, public_only: bool) -> Delivery:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"webhooks are delivered over http(s) only, not to {url!r}")
    opener = _public_opener(url) if public_only else _OPENER
    body = json.dumps(event, separators=(",", ":")).encode()
    request = urllib.request.Request(  # noqa: S310 (http(s) only, checked above)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "wallet-sandbox-gateway/1",
            header_name: signature_header(secrets=secret, body=body),
        },
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return Delivery(status=response.status, body=_read_body(response.read()))
    except urllib.error.HTTPError as answer:
        with answer:
            return Delivery(status=answer.code, body=_read_body(answer.read()))


def signed_event(request, *, header: str, secret: str, serializer_class) -> dict:
    """The event of a signed webhook request (the gateway's, the bank's): the signature in
    `header` checked on the raw body before anything parses it, then the JSON parsed from
    those same bytes (never from a second reading of the request) and validated strictly."""
    from django.conf import settings

    from walletsite.errors import ValidationFailed

    raw = request.body
    signature_verify(
        header=request.headers.get(header),
        body=raw,
        secret=secret,
        tolerance_seconds=settings.WALLET["WEBHOOK_TOLERANCE_SECONDS"],
    )
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("The body is not valid JSON") from None
    event = serializer_class(data=parsed)
    event.is_valid(raise_exception=True)
    return event.validated_data


def signature_parameter(header: str):
    """The OpenAPI description of a signature header."""
    from drf_spectacular.types import OpenApiTypes
    from drf_spectacular.utils import OpenApiParameter

    return OpenApiParameter(
        header,
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        required=True,
        description="t=<unix seconds>,v1=<hex signature>[,v1=...]; t within 300 s of now",
    )
