"""Rate limits (walletsite.throttles) in process, on both stores: PostgreSQL (no REDIS_URL) and a
real Redis (REDIS_URL or redis://127.0.0.1:6379; skipped with the reason printed where there is
none, a failure under REQUIRE_REDIS=1).

Every scope answers 429 rate_limited with Retry-After past its rate and changes nothing; keys
are independent (user, address, account); RATE_LIMITS=off turns them off; windows end;
concurrent requests get exactly the rate; a failing store lets payments through with a metric
and one log line without secrets. Sharing between processes: test_throttles_shared.py.

The suite runs with RATE_LIMITS=off (walletsite.pytest_plugin); each test here sets the rates
it needs through the `rates` fixture.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection, transaction
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from accounts.models import Pin, TokenFamily, User
from accounts.tokens import session_start
from ledger.models import Entry
from ledger.tests.invariants import assert_ledger_consistent
from wallets.gateway import signature_header
from wallets.models import GatewayEvent, IdempotencyKey, ThrottleCounter
from wallets.tests.factories import DEFAULT_PASSWORD, DEFAULT_PIN, auth_header, register_user
from wallets.tests.money import balance_of, fund, transfer
from wallets.topups import payment_attempt_create
from walletsite import throttles
from walletsite.breaker import breakers_reset
from walletsite.config import DEFAULT_RATE_LIMITS
from walletsite.logs import JsonFormatter
from walletsite.testing import redis_cache_settings, redis_url_or_skip

pytestmark = pytest.mark.django_db

LOGIN = "/api/v1/auth/login"
REGISTER = "/api/v1/auth/register"
REFRESH = "/api/v1/auth/refresh"
GATEWAY_WEBHOOK = "/api/v1/webhooks/gateway"
BANK_WEBHOOK = "/api/v1/webhooks/bank"


def _sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def _fresh_throttle_state():
    # The breaker and the log line's gate live in the process; each test starts closed.
    breakers_reset()
    throttles.throttle_log_reset()
    yield
    breakers_reset()
    throttles.throttle_log_reset()


@pytest.fixture
def rates(settings):
    """rates(login="2/hour", ...): rate limits on, with these rates over the defaults."""

    def turn_on(**overrides: str) -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {**DEFAULT_RATE_LIMITS, **overrides},
        }

    return turn_on


def _use_redis(settings, url: str) -> str:
    """Point the default cache (so the throttles) at `url` with a prefix of this test's own;
    return the prefix."""
    prefix = f"test-throttles-{uuid.uuid4().hex}"
    settings.CACHES = redis_cache_settings(url, key_prefix=prefix)
    return prefix


@pytest.fixture
def redis_store(settings):
    url = redis_url_or_skip()
    prefix = _use_redis(settings, url)
    yield url
    # Leave nothing behind in a Redis that other runs share.
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(params=["postgresql", "redis"])
def store(request) -> str:
    """Each test that takes it runs once per store."""
    if request.param == "redis":
        request.getfixturevalue("redis_store")
    assert throttles.throttle_store().name == request.param
    return request.param


def assert_rate_limited(response, *, period: int) -> int:
    """429 rate_limited as problem+json, Retry-After in the header and the body; returns it."""
    assert response.status_code == 429, (response.status_code, response.content)
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "rate_limited"
    assert body["status"] == 429
    retry_after = int(response["Retry-After"])
    assert body["retry_after"] == retry_after
    assert 1 <= retry_after <= period
    return retry_after


WRONG_PASSWORD = "not the password"


def _login(client, email: str, password: str = WRONG_PASSWORD, ip: str = "127.0.0.1"):
    return client.post(LOGIN, {"email": email, "password": password}, format="json", REMOTE_ADDR=ip)


def _register(client, ip: str = "127.0.0.1", email: str | None = None):
    email = email or f"new.{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": DEFAULT_PASSWORD, "pin": DEFAULT_PIN}
    return client.post(REGISTER, body, format="json", REMOTE_ADDR=ip)


def _refresh(client, token: str, ip: str = "127.0.0.1"):
    return client.post(REFRESH, {"refresh_token": token}, format="json", REMOTE_ADDR=ip)


def _gateway_event(attempt) -> bytes:
    data = {
        "payment_id": str(attempt.id),
        "amount": attempt.amount,
        "currency": attempt.currency,
        "gateway_reference": "gw_ref_throttle",
    }
    return json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "payment.succeeded", "data": data}).encode()


# -- every scope ------------------------------------------------------------------------------


def test_login_past_its_rate_is_refused_even_with_the_right_password(api, rates, store):
    # given: 2 logins an hour; an account, and two wrong passwords spent
    rates(login="2/hour")
    user, _ = register_user()
    assert [_login(api, user.email).status_code for _ in range(2)] == [401, 401]
    # when: the third, with the right password
    response = _login(api, user.email, DEFAULT_PASSWORD)
    # then: refused before the password is checked; no login was opened
    assert_rate_limited(response, period=3600)
    assert not TokenFamily.objects.filter(user=user).exists()


def test_registration_past_its_rate_creates_nobody(api, rates, store):
    # given
    rates(register="2/hour")
    assert [_register(api).status_code for _ in range(2)] == [201, 201]
    users = User.objects.count()
    email = f"late.{uuid.uuid4().hex[:8]}@example.com"
    # when
    response = _register(api, email=email)
    # then
    assert_rate_limited(response, period=3600)
    assert User.objects.count() == users
    assert not User.objects.filter(email=email).exists()


def test_refresh_past_its_rate_leaves_the_token_working(api, rates, store):
    # given: a login, refreshed twice (the rate)
    rates(refresh="2/hour")
    user, _ = register_user()
    token = session_start(user=user)["refresh_token"]
    for _ in range(2):
        response = _refresh(api, token)
        assert response.status_code == 200
        token = response.json()["refresh_token"]
    family = TokenFamily.objects.get(user=user)
    # when
    response = _refresh(api, token)
    # then: refused; the token was neither rotated nor taken as a reuse
    assert_rate_limited(response, period=3600)
    family.refresh_from_db()
    assert family.revoked_at is None
    from rest_framework_simplejwt.tokens import UntypedToken

    assert family.current_jti == UntypedToken(token)["jti"]


def test_pin_routes_past_their_rate_move_no_money_and_store_no_key(api, rates, store):
    # given: 2 PIN-authorized requests an hour, both spent on transfers
    rates(pin="2/hour")
    user, wallet = register_user()
    fund(wallet, 10_000)
    auth = auth_header(user)
    _, recipient = register_user()
    assert [transfer(api, auth, to=recipient.handle, amount=100).status_code for _ in range(2)] == [201, 201]
    before = (balance_of(wallet), balance_of(recipient), Entry.objects.count(), IdempotencyKey.objects.count())
    failures = Pin.objects.get(user=user).failed_attempts
    # when: a transfer (with a wrong PIN, even), a payment and a withdrawal
    responses = [
        transfer(api, auth, to=recipient.handle, amount=100, pin="9999", key="throttled-transfer"),
        api.post(
            "/api/v1/wallet/pay",
            {"merchant": "shop@wallet", "amount": 100, "pin": DEFAULT_PIN},
            format="json",
            HTTP_IDEMPOTENCY_KEY="throttled-pay",
            **auth,
        ),
        api.post(
            "/api/v1/wallet/withdraw",
            {"amount": 100, "pin": DEFAULT_PIN, "bank_account": str(uuid.uuid4())},
            format="json",
            HTTP_IDEMPOTENCY_KEY="throttled-withdraw",
            **auth,
        ),
    ]
    # then: the pin scope covers all three; nothing moved, no key stored, no PIN guess spent
    for response in responses:
        assert_rate_limited(response, period=3600)
    after = (balance_of(wallet), balance_of(recipient), Entry.objects.count(), IdempotencyKey.objects.count())
    assert after == before
    assert not IdempotencyKey.objects.filter(key__startswith="throttled-").exists()
    assert Pin.objects.get(user=user).failed_attempts == failures
    assert_ledger_consistent()


def test_webhooks_past_their_rate_credit_nothing(api, rates, store, settings):
    # given: 2 webhook calls an hour from this address, spent on badly signed ones
    rates(webhook="2/hour")
    _, wallet = register_user()
    attempt = payment_attempt_create(wallet=wallet, amount=5_000)
    for _ in range(2):
        response = api.post(GATEWAY_WEBHOOK, data=b"{}", content_type="application/json", HTTP_GATEWAY_SIGNATURE="x")
        assert response.status_code == 400
    body = _gateway_event(attempt)
    header = signature_header(secrets=settings.WALLET["GATEWAY_WEBHOOK_SECRET"], body=body)
    # when: a correctly signed success, and a bank callback
    gateway = api.post(GATEWAY_WEBHOOK, data=body, content_type="application/json", HTTP_GATEWAY_SIGNATURE=header)
    bank = api.post(BANK_WEBHOOK, data=b"{}", content_type="application/json", HTTP_BANK_SIGNATURE="x")
    # then: both refused (one scope per address); the gateway retries later, nothing credited
    assert_rate_limited(gateway, period=3600)
    assert_rate_limited(bank, period=3600)
    attempt.refresh_from_db()
    assert attempt.status == "pending"
    assert balance_of(wallet) == 0
    assert not GatewayEvent.objects.exists()


def test_routes_without_a_throttle_are_not_limited(api, rates, store):
    # given: every rate at 1 an hour
    rates(**dict.fromkeys(DEFAULT_RATE_LIMITS, "1/hour"))
    user, _ = register_user()
    auth = auth_header(user)
    # when / then: reads and logout are not throttled
    assert [api.get("/api/v1/wallet/balance", **auth).status_code for _ in range(5)] == [200] * 5
    assert api.post("/api/v1/auth/logout", {}, format="json", **auth).status_code == 204


# -- independent keys -------------------------------------------------------------------------


def test_pin_rate_counts_per_user_and_per_address_independently(api, rates, store):
    # given: 2 an hour; user A spends them from address 1
    rates(pin="2/hour")
    a, a_wallet = register_user()
    b, b_wallet = register_user()
    fund(a_wallet, 10_000)
    fund(b_wallet, 10_000)
    _, recipient = register_user()
    a_auth, b_auth = auth_header(a), auth_header(b)

    def send(auth, ip):
        body = {"to": recipient.handle, "amount": 100, "pin": DEFAULT_PIN}
        key = uuid.uuid4().hex
        return api.post(
            "/api/v1/wallet/transfer", body, format="json", REMOTE_ADDR=ip, HTTP_IDEMPOTENCY_KEY=key, **auth
        ).status_code

    assert [send(a_auth, "198.51.100.1"), send(a_auth, "198.51.100.1")] == [201, 201]
    # when / then: A is out of allowance from anywhere (per user) ...
    assert send(a_auth, "198.51.100.2") == 429
    # ... address 1 is out of allowance for anyone (per address) ...
    assert send(b_auth, "198.51.100.1") == 429
    # ... and B from a fresh address is fine (B's one refused request counted once)
    assert send(b_auth, "198.51.100.3") == 201
    assert balance_of(recipient) == 300


def test_login_rate_counts_per_account_so_many_addresses_cannot_guess_one(api, rates, store):
    # given: 2 an hour; one account tried from two addresses
    rates(login="2/hour")
    victim, _ = register_user()
    assert [_login(api, victim.email, ip=f"203.0.113.{n}").status_code for n in (1, 2)] == [401, 401]
    # when: a third address tries it, in another case
    response = _login(api, victim.email.upper(), ip="203.0.113.3")
    # then: refused (per account), while that address may still log in to another account
    assert_rate_limited(response, period=3600)
    other, _ = register_user()
    assert _login(api, other.email, DEFAULT_PASSWORD, ip="203.0.113.3").status_code == 200


def test_login_rate_counts_per_address_across_accounts(api, rates, store):
    # given
    rates(login="2/hour")
    emails = [register_user()[0].email for _ in range(3)]
    # when: one address tries three accounts
    codes = [_login(api, email, ip="192.0.2.10").status_code for email in emails]
    # then
    assert codes == [401, 401, 429]


def test_refresh_rate_counts_per_user_of_a_genuine_token_only(api, rates, store):
    # given: 2 an hour; user A refreshes twice from address 1
    rates(refresh="2/hour")
    a, _ = register_user()
    b, _ = register_user()
    token = session_start(user=a)["refresh_token"]
    for _ in range(2):
        token = _refresh(api, token, ip="198.51.100.10").json()["refresh_token"]
    # when / then: A is out from another address (per user) ...
    assert _refresh(api, token, ip="198.51.100.11").status_code == 429
    # ... a forged token naming A is refused as invalid, not counted against A ...
    assert _refresh(api, token[:-4] + "AAAA", ip="198.51.100.12").status_code == 401
    # ... and B, from a fresh address, refreshes
    assert _refresh(api, session_start(user=b)["refresh_token"], ip="198.51.100.13").status_code == 200


# -- on and off, windows ----------------------------------------------------------------------


def test_rate_limits_off_never_refuse(api, settings, store):
    # given: RATE_LIMITS=off, which leaves DRF no rates at all
    from walletsite import config

    assert config.load({**os.environ, "RATE_LIMITS": "off"}).rate_limits is None
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {}}
    user, _ = register_user()
    # when
    codes = Counter(_login(api, user.email).status_code for _ in range(30))
    # then: nothing was counted either
    assert codes == {401: 30}
    assert not ThrottleCounter.objects.exists()


def test_a_window_ends_and_the_next_request_starts_a_new_one(api, rates, store):
    # given: 1 registration a second, spent
    rates(register="1/s")
    assert _register(api).status_code == 201
    assert_rate_limited(_register(api), period=1)
    # when: the window runs out (each refused try counts, but never past the window's end)
    deadline = time.monotonic() + 10
    while (response := _register(api)).status_code == 429:
        assert time.monotonic() < deadline, "the window never ended"
        time.sleep(0.1)
    # then
    assert response.status_code == 201


def test_retry_after_is_the_rest_of_the_window(api, rates, monkeypatch):
    # given: the PostgreSQL store on a clock the test moves; 1 login a minute, spent
    now = [1_800_000_000.0]
    monkeypatch.setattr(throttles, "clock", lambda: now[0])
    rates(login="1/min")
    email = "clock@example.com"
    assert _login(api, email).status_code == 401
    # when / then: refused with the rest of the window, as the clock moves
    assert assert_rate_limited(_login(api, email), period=60) == 60
    now[0] += 45
    assert assert_rate_limited(_login(api, email), period=60) == 15
    now[0] += 15
    assert _login(api, email).status_code == 401
    assert assert_rate_limited(_login(api, email), period=60) == 60


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_get_exactly_the_rate(rates, store):
    # given: 5 logins an hour, and 12 at once from one address (unknown emails: 401 each), each
    # thread on its own connection, so the counter rows are committed (and flushed after)
    import threading
    from concurrent.futures import ThreadPoolExecutor

    rates(login="5/hour")
    barrier = threading.Barrier(12)

    def attempt(i: int) -> int:
        try:
            barrier.wait(timeout=30)
            return _login(APIClient(), f"racer{i}@example.com").status_code
        finally:
            connection.close()

    # when
    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = Counter(pool.map(attempt, range(12)))
    # then
    assert codes == {401: 5, 429: 7}, codes


# -- the stores -------------------------------------------------------------------------------


def test_the_postgresql_counter_table_is_unlogged_and_purged_of_ended_windows():
    # given
    with connection.cursor() as cursor:
        cursor.execute("SELECT relpersistence FROM pg_class WHERE relname = 'wallets_throttlecounter'")
        assert cursor.fetchone() == ("u",)
    store = throttles.PostgresStore()
    store.hit("test:ended", 1)
    store.hit("test:running", 3600)
    # when: a purge two seconds on
    from datetime import UTC, datetime, timedelta

    purged = throttles.throttle_counters_purge(now=datetime.now(UTC) + timedelta(seconds=2))
    # then
    assert purged == 1
    assert list(ThrottleCounter.objects.values_list("key", flat=True)) == ["test:running"]


def test_the_worker_purges_the_counters():
    from wallets.worker import Worker, default_jobs

    job = next(job for job in default_jobs() if job.name == "purge_throttle_counters")
    assert Worker(jobs=[job]).run_job(job) == "ok"


def test_a_check_inside_a_ledger_transaction_is_refused():
    # given / when / then: the counter's row lock must never wait for a ledger commit
    with pytest.raises(RuntimeError, match="ledger transaction"), transaction.atomic(durable=True):
        throttles.counter_hit(key="test:inside", period=60)


# -- failing stores ---------------------------------------------------------------------------


@pytest.fixture
def closed_port():
    """A local port nothing listens on (bound, never listening, so nobody else gets it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def log_lines():
    """The JSON log lines of walletsite.throttles, formatted as production formats them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("walletsite.throttles")
    log.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        log.removeHandler(handler)


def test_payments_go_through_while_redis_is_down(api, rates, settings, closed_port, log_lines):
    # given: Redis (with a password in its URL) at a port where nothing answers
    rates(pin="1/hour")
    password = "redis-password-" + uuid.uuid4().hex
    _use_redis(settings, f"redis://:{password}@127.0.0.1:{closed_port}/0")
    user, wallet = register_user()
    fund(wallet, 10_000)
    _, recipient = register_user()
    auth = auth_header(user)
    errors = _sample("wallet_throttle_store_errors_total", store="redis")
    fail_open = _sample("wallet_throttle_fail_open_total", store="redis")
    # when: three transfers, past the rate of 1
    codes = [transfer(api, auth, to=recipient.handle, amount=1_000).status_code for _ in range(3)]
    # then: all moved money; one store call failed and opened the breaker, so the other checks
    # (two per request: user and address) skipped the store at once
    assert codes == [201, 201, 201]
    assert balance_of(recipient) == 3_000
    assert _sample("wallet_throttle_store_errors_total", store="redis") == errors + 1
    assert _sample("wallet_throttle_fail_open_total", store="redis") == fail_open + 6
    (line,) = log_lines()
    assert line["level"] == "error"
    assert line["store"] == "redis"
    assert line["error_type"] == "ConnectionError"
    assert line["failures"] == 1
    assert password not in json.dumps(line)
    assert_ledger_consistent()


def test_the_outage_log_line_is_rate_limited_while_failures_are_counted(
    api, rates, settings, closed_port, log_lines, monkeypatch
):
    # given: Redis down, and a breaker that lets every request probe it
    rates(register="5/hour")
    _use_redis(settings, f"redis://127.0.0.1:{closed_port}/0")
    monkeypatch.setattr(throttles, "BREAKER_COOLDOWN_SECONDS", 0)
    errors = _sample("wallet_throttle_store_errors_total", store="redis")
    # when: many requests in a row, each failing against the store
    codes = [_register(api).status_code for _ in range(8)]
    # then: all served, every failure counted, one log line
    assert codes == [201] * 8
    assert _sample("wallet_throttle_store_errors_total", store="redis") == errors + 8
    assert len(log_lines()) == 1


def _start_redis_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port, socket_connect_timeout=0.2).ping()
            return proc
        except redis.ConnectionError:
            assert proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


def test_a_redis_that_dies_and_comes_back(api, rates, settings, monkeypatch):
    # given: a redis-server of this test's own, counting transfers
    if shutil.which("redis-server") is None:
        if os.environ.get("REQUIRE_REDIS"):
            pytest.fail("REQUIRE_REDIS is set but redis-server is not installed")
        print("skipping: redis-server is not installed (apt-get install redis-server)")
        pytest.skip("redis-server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = _start_redis_server(port)
    try:
        rates(pin="100/hour")
        prefix = _use_redis(settings, f"redis://127.0.0.1:{port}/0")
        user, wallet = register_user()
        fund(wallet, 10_000)
        _, recipient = register_user()
        auth = auth_header(user)
        key = f"{prefix}:1:throttle:pin:user:{user.id}"
        import redis

        client = redis.Redis(port=port)
        assert transfer(api, auth, to=recipient.handle, amount=100).status_code == 201
        assert client.get(key) == b"1"
        # when: the server dies, with the pool's connection to it open
        server.send_signal(signal.SIGKILL)
        server.wait()
        down = transfer(api, auth, to=recipient.handle, amount=100)
        # and comes back, empty, once the breaker's cool-down is over
        server = _start_redis_server(port)
        monkeypatch.setattr(throttles, "BREAKER_COOLDOWN_SECONDS", 0)
        back = transfer(api, auth, to=recipient.handle, amount=100)
        # then: the payment during the outage went through, and counting resumed after it
        assert down.status_code == 201
        assert back.status_code == 201
        assert client.get(key) == b"1"
        assert balance_of(recipient) == 300
        assert_ledger_consistent()
    finally:
        server.kill()
        server.wait()


def test_a_failing_postgresql_store_fails_open_too(api, rates, log_lines):
    # given: the counter table gone (inside this test's transaction, rolled back after it)
    rates(login="1/hour")
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE wallets_throttlecounter RENAME TO wallets_throttlecounter_away")
    user, _ = register_user()
    errors = _sample("wallet_throttle_store_errors_total", store="postgresql")
    # when: a login past the rate
    codes = [_login(api, user.email, DEFAULT_PASSWORD).status_code for _ in range(2)]
    # then: both let through, the failure counted and logged; the test's transaction is intact
    assert codes == [200, 200]
    assert _sample("wallet_throttle_store_errors_total", store="postgresql") == errors + 1
    assert [line["store"] for line in log_lines()] == ["postgresql"]
    assert TokenFamily.objects.filter(user=user).count() == 2


# -- client address ---------------------------------------------------------------------------


def _ip(rf, settings, remote: str, forwarded: str | None = None, trusted: tuple[str, ...] = ()) -> str:
    settings.TRUSTED_PROXIES = trusted
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return throttles.client_ip(rf.get("/", **extra))


def test_x_forwarded_for_is_ignored_without_trusted_proxies(rf, settings):
    assert _ip(rf, settings, "203.0.113.5", "198.51.100.77") == "203.0.113.5"


def test_behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client(rf, settings):
    trusted = ("10.0.0.0/8",)
    # the client's own header value (a spoof) is left of the address the proxy saw
    assert _ip(rf, settings, "10.0.0.2", "6.6.6.6, 203.0.113.9", trusted) == "203.0.113.9"
    # through two proxies
    assert _ip(rf, settings, "10.0.0.2", "203.0.113.9, 10.1.1.1", trusted) == "203.0.113.9"
    # a request that did not come through a trusted proxy: its header means nothing
    assert _ip(rf, settings, "192.0.2.1", "203.0.113.9", trusted) == "192.0.2.1"
    # no header, or garbage in it: the last address known to be real
    assert _ip(rf, settings, "10.0.0.2", None, trusted) == "10.0.0.2"
    assert _ip(rf, settings, "10.0.0.2", "203.0.113.9, nonsense", trusted) == "10.0.0.2"


def test_ipv6_clients_are_keyed_by_their_64(rf, settings):
    assert _ip(rf, settings, "2001:db8:1:2::10") == _ip(rf, settings, "2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert _ip(rf, settings, "::ffff:203.0.113.5") == "203.0.113.5"


# -- the rules around it ----------------------------------------------------------------------


def test_nothing_about_money_reads_the_cache():
    # The cache may be down or wrong at any time; money code must not look at it.
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for app in ("ledger", "wallets", "accounts"):
        for path in (root / app).rglob("*.py"):
            if "tests" in path.parts:
                continue
            text = path.read_text()
            if any(word in text for word in ("django.core.cache", "django_redis", "get_redis_connection")):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_every_throttled_route_documents_429_with_retry_after():
    # given: the schema, and every /api/v1 route's throttles
    from django.urls import get_resolver
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    throttled, documented = set(), set()
    api = next(p for p in get_resolver().url_patterns if str(p.pattern) == "api/v1/")
    for pattern in api.url_patterns:
        view = pattern.callback
        path = "/api/v1/" + str(pattern.pattern).replace("<str:", "{").replace(">", "}")
        for method, action in view.actions.items():
            if method == "head":
                continue
            handler = getattr(view.cls, action)
            classes = getattr(handler, "kwargs", {}).get("throttle_classes", view.cls.throttle_classes)
            if classes:
                throttled.add((path, method))
            operation = schema["paths"][path][method]
            if "429" in operation["responses"]:
                documented.add((path, method))
                assert "Retry-After" in operation["responses"]["429"].get("headers", {}), (path, method)
    # then
    assert len(throttled) == 8
    assert throttled == documented


def test_without_redis_the_redis_tests_skip_unless_required(monkeypatch, closed_port):
    # given: a REDIS_URL where nothing answers
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{closed_port}/0")
    # when / then: a skip with the reason, and under REQUIRE_REDIS (CI) a failure
    monkeypatch.delenv("REQUIRE_REDIS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Redis at"):
        redis_url_or_skip()
    monkeypatch.setenv("REQUIRE_REDIS", "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_REDIS is set but no Redis at"):
        redis_url_or_skip()
