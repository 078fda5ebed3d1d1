"""Rate limits: the DRF throttles of login, registration, refresh, PIN-authorized requests and
the gateway and bank webhooks, counted in one store that every gunicorn worker and every
instance share. A refusal is DRF's Throttled, rendered by walletsite.errors as 429
`rate_limited` with Retry-After.

Scopes and keys. Every key of a scope has the scope's rate (REST_FRAMEWORK
DEFAULT_THROTTLE_RATES, from RATE_LIMITS in walletsite.config), and a request is refused when
any of its keys is over:

- login: per client address, and per account: the email in the body (as the login backend
  compares it, case-insensitively), keyed by an HMAC so counters never hold an email. The
  per-account key stops a pool of addresses from guessing one account's password at the
  per-address rate times the pool. Its price: whoever floods one email's logins keeps its
  owner out too, for the rest of the window; a window is short and the flood gains nothing.
- register: per client address (there is no user yet).
- refresh: per client address, and per user of the refresh token when its signature checks
  out (a forged token must not spend someone else's allowance).
- pin (transfer, pay, withdraw: every route whose body carries the transaction PIN): per user
  and per client address. The PIN lockout (5 wrong in a row) guards one wallet; these stop one
  client from trying PINs across many stolen tokens, or hammering the money routes. The
  registration's PIN is a new one, not an authorization: register has its own scope.
- webhook (gateway and bank): per client address.

Counting: a fixed window per key that its first request starts, and that lasts the rate's
period; the first request after it starts the next one. Both stores do the same in one atomic
step, so concurrent requests in any number of processes each get a distinct count and exactly
`limit` of them pass in a window. (A window anchored at the first request, rather than at the
clock's minute, lets at most 2 x limit through across a window boundary, like any fixed
window; a sliding log would need a row per request.) Refused requests count too: a client
that keeps hammering stays refused until the window ends, and Retry-After says when.

Store: Redis through django-redis when REDIS_URL is set (the cache `default`), else the
UNLOGGED PostgreSQL table wallets_throttlecounter, one INSERT ... ON CONFLICT DO UPDATE ...
RETURNING per key in autocommit. Not locmem: each gunicorn worker would count alone.

Fail open: when the store cannot answer (Redis down, a timeout), the request is let through
uncounted, wallet_throttle_store_errors_total{store} and wallet_throttle_fail_open_total{store}
go up, and one error line is logged per store per minute at most (with how many failures it
stands for), not one per request. A failure opens a circuit breaker (walletsite.breaker) for
BREAKER_COOLDOWN_SECONDS, during which checks skip the store at once, so an outage costs a
request at most one socket timeout (0.5 s, settings.CACHES) per process per cool-down. Nothing
about money reads these counters or the cache: a throttle only ever refuses a request before
its view runs, and the money services never look at them.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection, transaction
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from walletsite import metrics
from walletsite.breaker import breaker_get

logger = logging.getLogger("walletsite.throttles")

# DRF's rate syntax, `count/period`, where the period's first letter counts (config.py only
# lets s/sec/second, m/min/minute, h/hour, d/day through).
PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# After a store failure, how long checks skip the store (and let requests through) before one
# request probes it again.
BREAKER_COOLDOWN_SECONDS = 10
# At most one "store unavailable" line per store and process this often.
LOG_INTERVAL_SECONDS = 60

# The PostgreSQL store's clock (seconds since the epoch). Instances' clocks are NTP-synced;
# a skew between them moves a window's end by that much, no more. Tests replace it to step
# over a window without waiting.
clock: Callable[[], float] = time.time


class StoreError(Exception):
    """The counter store could not answer; the cause is chained."""


@dataclass(frozen=True)
class Hit:
    """A counted request: its number in the key's current window, and the window's rest."""

    count: int
    seconds_left: float


class PostgresStore:
    name = "postgresql"
    # One statement, atomic under concurrency: the row's lock serializes the increments, and
    # a window that has ended restarts at 1 with a new end. In autocommit it is its own short
    # transaction on an UNLOGGED table, so it needs no WAL flush.
    SQL = """
        INSERT INTO wallets_throttlecounter AS c (key, hits, window_ends)
        VALUES (%(key)s, 1, %(ends)s)
        ON CONFLICT (key) DO UPDATE SET
            hits = CASE WHEN c.window_ends <= %(now)s THEN 1 ELSE c.hits + 1 END,
            window_ends = CASE WHEN c.window_ends <= %(now)s THEN EXCLUDED.window_ends ELSE c.window_ends END
        RETURNING hits, window_ends
    """

    def hit(self, key: str, period: int) -> Hit:
        # ATOMIC_REQUESTS is off and throttles run before the view, so this is never inside a
        # money service's transaction; refuse loudly if that ever changes, since a counter row
        # lock held until a ledger commit would serialize unrelated requests on it.
        if any(block.durable for block in connection.atomic_blocks):
            raise RuntimeError("a rate-limit check must not run inside a ledger transaction")
        now = datetime.fromtimestamp(clock(), UTC)
        try:
            # Only a test wraps requests in a transaction: there a savepoint keeps a failed
            # check from breaking the test's transaction, as autocommit does in production.
            savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
            with savepoint, connection.cursor() as cursor:
                cursor.execute(self.SQL, {"key": key, "now": now, "ends": now + timedelta(seconds=period)})
                hits, ends = cursor.fetchone()
        except DatabaseError as exc:
            raise StoreError(str(exc)) from exc
        return Hit(count=hits, seconds_left=(ends - now).total_seconds())


class RedisStore:
    name = "redis"
    # INCR, and the window's expiry when INCR created the key (PTTL -1: no expiry yet; also
    # repairs a key that somehow lost it), in one atomic script: one round trip, and no key
    # can be left without an expiry between two commands.
    SCRIPT = """
        local hits = redis.call('INCR', KEYS[1])
        local left = redis.call('PTTL', KEYS[1])
        if left < 0 then
            redis.call('PEXPIRE', KEYS[1], ARGV[1])
            left = tonumber(ARGV[1])
        end
        return {hits, left}
    """

    def __init__(self, cache) -> None:
        self.cache = cache

    def hit(self, key: str, period: int) -> Hit:
        from redis.exceptions import RedisError

        try:
            # The raw client, not cache.incr(): django-redis's IGNORE_EXCEPTIONS would turn
            # an outage into a silent None, and incr() cannot set the expiry atomically.
            client = self.cache.client.get_client(write=True)
            script = client.register_script(self.SCRIPT)
            hits, left_ms = script(keys=[self.cache.make_key(f"throttle:{key}")], args=[period * 1000])
        except (RedisError, OSError) as exc:
            raise StoreError(str(exc)) from exc
        return Hit(count=int(hits), seconds_left=int(left_ms) / 1000)


def throttle_store() -> PostgresStore | RedisStore:
    """Redis when the default cache is django-redis (REDIS_URL), else PostgreSQL."""
    from django_redis.cache import RedisCache

    cache = caches["default"]
    return RedisStore(cache) if isinstance(cache, RedisCache) else PostgresStore()


_log_lock = threading.Lock()
_last_logged: dict[str, float] = {}
_unlogged_failures: dict[str, int] = {}


def _redacted(message: str) -> str:
    """A store's error message without credentials: a URL's user:password part, and the
    configured Redis password wherever it appears."""
    message = re.sub(r"://[^@/\s]*@", "://[redacted]@", message)
    location = settings.CACHES.get("default", {}).get("LOCATION", "")
    password = urlsplit(location).password if isinstance(location, str) else None
    if password:
        message = message.replace(password, "[redacted]")
    return message[:300]


def _store_failed(store_name: str, error: StoreError) -> None:
    metrics.THROTTLE_STORE_ERRORS.labels(store_name).inc()
    metrics.THROTTLE_FAIL_OPEN.labels(store_name).inc()
    now = time.monotonic()
    with _log_lock:
        _unlogged_failures[store_name] = _unlogged_failures.get(store_name, 0) + 1
        last = _last_logged.get(store_name)
        if last is not None and now - last < LOG_INTERVAL_SECONDS:
            return
        _last_logged[store_name] = now
        failures = _unlogged_failures.pop(store_name)
    cause = error.__cause__ or error
    logger.error(
        "rate-limit store unavailable; requests pass unthrottled",
        extra={
            "store": store_name,
            "error_type": type(cause).__name__,
            "error": _redacted(str(error)),
            "failures": failures,
        },
    )


def counter_hit(*, key: str, period: int) -> Hit | None:
    """Count one request against `key`; None when the store failed (the caller lets the
    request through)."""
    store = throttle_store()
    breaker = breaker_get(name=f"throttle_{store.name}", failure_threshold=1, cooldown_seconds=BREAKER_COOLDOWN_SECONDS)
    if not breaker.allow():
        metrics.THROTTLE_FAIL_OPEN.labels(store.name).inc()
        return None
    try:
        hit = store.hit(key, period)
    except StoreError as exc:
        breaker.record_failure()
        _store_failed(store.name, exc)
        return None
    breaker.record_success()
    return hit


def throttle_log_reset() -> None:
    """Forget when the store's failure was last logged (tests)."""
    with _log_lock:
        _last_logged.clear()
        _unlogged_failures.clear()


def throttle_counters_purge(*, now: datetime | None = None) -> int:
    """Delete the PostgreSQL store's ended windows (the worker runs it); return how many.

    Safe beside concurrent checks: a row that a check restarts meanwhile no longer matches
    the condition when PostgreSQL re-reads it for the DELETE, so it stays."""
    from wallets.models import ThrottleCounter

    moment = now or datetime.fromtimestamp(clock(), UTC)
    deleted, _ = ThrottleCounter.objects.filter(window_ends__lte=moment).delete()
    return deleted


def scope_rate(scope: str) -> tuple[int, int] | None:
    """(requests, period in seconds) of a scope; None when rate limits are off."""
    rates = api_settings.DEFAULT_THROTTLE_RATES
    # RATE_LIMITS=off leaves no rates at all. With rates on, config.py fills in every scope,
    # so a missing one is a programming error, not a reason to let everything through.
    if not rates:
        return None
    if scope not in rates:
        raise ImproperlyConfigured(f"no rate for the throttle scope {scope!r}")
    if rates[scope] is None:
        return None
    count, _, period = rates[scope].partition("/")
    return int(count), PERIOD_SECONDS[period[0]]


@functools.lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(network) for network in trusted)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_ip(request) -> str:
    """The client's address as a throttle key.

    REMOTE_ADDR, unless it is one of TRUSTED_PROXIES: then X-Forwarded-For is read from the
    right (each proxy appends the address it got the request from), skipping trusted proxies,
    and the first address that is not one is the client. Anything left of it was written by
    the client and could say anything, so it is never believed; DRF's own get_ident, which
    takes the whole header when NUM_PROXIES is unset, would let every request pick a fresh
    key. An IPv6 client is keyed by its /64, which one subscriber usually holds whole."""
    remote = _address(request.META.get("REMOTE_ADDR", ""))
    client = remote
    networks = _networks(tuple(settings.TRUSTED_PROXIES))
    if remote is not None and any(remote in network for network in networks):
        for hop in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")):
            address = _address(hop)
            if address is None:
                # A malformed hop: the proxy to its right is the last address known to be real.
                break
            client = address
            if not any(address in network for network in networks):
                break
    if client is None:
        return "unknown"
    if isinstance(client, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((client, 64), strict=False))
    return str(client)


class ScopedThrottle(BaseThrottle, abc.ABC):
    """Counts a request against `<scope>:<kind>:<identity>` and refuses it when the count is
    over the scope's rate. No identity (e.g. no email in a login body): nothing to count."""

    scope = ""
    kind = ""

    @abc.abstractmethod
    def identity(self, request, view) -> str | None:
        """What this throttle counts the request by (an address, a user id, an account)."""

    def allow_request(self, request, view) -> bool:
        self.retry_after = None
        rate = scope_rate(self.scope)
        if rate is None:
            return True
        identity = self.identity(request, view)
        if identity is None:
            return True
        limit, period = rate
        hit = counter_hit(key=f"{self.scope}:{self.kind}:{identity}", period=period)
        if hit is None or hit.count <= limit:
            return True
        self.retry_after = max(1, math.ceil(hit.seconds_left))
        metrics.THROTTLED.labels(self.scope).inc()
        return False

    def wait(self) -> int | None:
        return self.retry_after


class ClientIpThrottle(ScopedThrottle):
    kind = "ip"

    def identity(self, request, view) -> str:
        return client_ip(request)


class UserThrottle(ScopedThrottle):
    kind = "user"

    def identity(self, request, view) -> str | None:
        user = getattr(request, "user", None)
        return str(user.id) if user is not None and user.is_authenticated else None


class LoginAccountThrottle(ScopedThrottle):
    scope = "login"
    kind = "email"

    def identity(self, request, view) -> str | None:
        data = request.data
        email = data.get("email") if isinstance(data, dict) else None
        if not isinstance(email, str) or not email.strip() or len(email) > 254:
            # The view refuses it (400) before any password is checked: nothing to guess.
            return None
        # The login backend matches emails with UPPER() on both sides (iexact), so all case
        # variants of an address are one account and share one counter.
        normalized = email.strip().upper().encode()
        return hmac.new(settings.SECRET_KEY.encode(), normalized, hashlib.sha256).hexdigest()[:32]


class RefreshUserThrottle(ScopedThrottle):
    scope = "refresh"
    kind = "user"

    def identity(self, request, view) -> str | None:
        from accounts.tokens import refresh_token_user_id

        data = request.data
        token = data.get("refresh_token") if isinstance(data, dict) else None
        return refresh_token_user_id(token) if isinstance(token, str) and len(token) <= 4096 else None


class LoginIpThrottle(ClientIpThrottle):
    scope = "login"


class RegisterIpThrottle(ClientIpThrottle):
    scope = "register"


class RefreshIpThrottle(ClientIpThrottle):
    scope = "refresh"


class PinUserThrottle(UserThrottle):
    scope = "pin"


class PinIpThrottle(ClientIpThrottle):
    scope = "pin"


class WebhookIpThrottle(ClientIpThrottle):
    scope = "webhook"


# What the views use, one tuple per scope.
LOGIN_THROTTLES = (LoginIpThrottle, LoginAccountThrottle)
REGISTER_THROTTLES = (RegisterIpThrottle,)
REFRESH_THROTTLES = (RefreshIpThrottle, RefreshUserThrottle)
PIN_THROTTLES = (PinUserThrottle, PinIpThrottle)
WEBHOOK_THROTTLES = (WebhookIpThrottle,)
