"""Every setting of the service, read once from the environment and validated.

`settings.py` calls `load()` once; nothing else in the project reads `os.environ` for
configuration. A bad value stops the process with a message that names the variable, so a
typo in a deployment fails at start instead of at the first payment.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_NAMES = (
    "DJANGO_SECRET_KEY",
    "JWT_SIGNING_KEY",
    "PIN_PEPPER",
    "GATEWAY_WEBHOOK_SECRET",
    "BANK_WEBHOOK_SECRET",
)
MIN_SECRET_LENGTH = 32
# Django's deployment check (security.W009) wants 50 characters for its own key.
MIN_LENGTHS = {"DJANGO_SECRET_KEY": 50}
ENVIRONMENTS = ("development", "production", "test")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# How the sandbox bank settles a payout it receives: when told (POST /sandbox/payouts/{id}/
# complete), at once as paid or as rejected, or never (it keeps the payout processing).
SANDBOX_BANK_MODES = ("manual", "succeed", "fail", "never")
RATE_LIMIT_NAMES = ("login", "register", "pin", "refresh", "webhook")
DEFAULT_RATE_LIMITS = {
    "login": "10/min",
    "register": "5/min",
    "pin": "20/min",
    "refresh": "30/min",
    "webhook": "600/min",
}


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Database:
    name: str
    user: str
    password: str
    host: str
    port: str
    # True when the database is the embedded PostgreSQL under DATA_DIR, which the project
    # starts itself.
    embedded: bool


@dataclass(frozen=True)
class Config:
    env: str
    debug: bool
    data_dir: Path
    secret_key: str
    jwt_signing_key: str
    pin_pepper: str
    gateway_webhook_secret: str
    bank_webhook_secret: str
    database: Database
    redis_url: str | None
    host: str
    port: int
    web_concurrency: int
    web_threads: int
    log_level: str
    # None when RATE_LIMITS=off; otherwise DRF throttle rates by scope.
    rate_limits: dict[str, str] | None
    gateway_sandbox: bool
    public_url: str
    allowed_hosts: tuple[str, ...]
    max_transaction_amount: int
    body_limit_bytes: int
    currency: str
    access_token_seconds: int
    refresh_token_seconds: int
    payment_attempt_ttl_seconds: int
    webhook_tolerance_seconds: int
    pin_max_failures: int
    pin_lock_seconds: int
    idempotency_retention_hours: int
    # The merchant fee in basis points (1/100 of a percent) for merchants without a fee of
    # their own; 0-10000.
    merchant_fee_bps: int = 0
    # Money out (wallets.withdrawals, wallets.bank): where the bank's payout API is (empty:
    # this service's own sandbox bank at PUBLIC_URL/sandbox/bank), how the sandbox bank
    # settles payouts, the timeout of every bank call, the circuit breaker, when a payout
    # counts as stuck (recovery asks the bank) and when an unsettled one is cancelled.
    bank_url: str = ""
    sandbox_bank_mode: str = "manual"
    bank_timeout_seconds: int = 5
    bank_breaker_failures: int = 5
    bank_breaker_cooldown_seconds: int = 30
    withdrawal_recheck_seconds: int = 60
    withdrawal_timeout_seconds: int = 86400
    # Notifications (wallets.notifications): the sender of users' emails, and merchant
    # webhooks: attempts before a delivery is dead-lettered, and the timeout of each POST.
    default_from_email: str = "wallet@localhost"
    webhook_max_attempts: int = 8
    webhook_timeout_seconds: int = 5
    # How long a request waits for a free connection of its process's pool before it is
    # answered 503 database_unavailable.
    database_pool_timeout_seconds: int = 10
    # Rate limits (walletsite.throttles): the networks of the reverse proxies in front of the
    # service. Only a request whose REMOTE_ADDR is in one of them has its client address read
    # from X-Forwarded-For; empty: REMOTE_ADDR is the client.
    trusted_proxies: tuple[str, ...] = ()
    # Group commit (ledger.batcher): transfers that arrive while a batch is in flight share
    # one database transaction; GROUP_COMMIT=off runs each in its own (for comparison).
    group_commit: bool = True


def _text(env: dict[str, str], name: str, default: str) -> str:
    value = env.get(name, "")
    return value if value != "" else default


def _integer(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    if not re.fullmatch(r"[0-9]+", raw):
        raise ConfigError(f"{name} must be a whole number, got {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _email(env: dict[str, str], name: str, default: str) -> str:
    value = _text(env, name, default)
    local, at, domain = value.rpartition("<")[2].rstrip(">").partition("@")
    if not at or not local or not domain or any(ch.isspace() for ch in local + domain):
        raise ConfigError(f"{name} must be an email address (or Name <address>), got {value!r}")
    return value


def _boolean(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be on or off, got {env[name]!r}")


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "")
    if raw == "":
        return default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _database(env: dict[str, str], data_dir: Path) -> Database:
    url = env.get("DATABASE_URL", "")
    if url == "":
        from walletsite import embedded_pg

        return Database(
            name="wallet",
            user="postgres",
            password="",
            host=str(embedded_pg.socket_dir(data_dir / "pg")),
            port=str(embedded_pg.PORT),
            embedded=True,
        )
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.path.strip("/"):
        raise ConfigError(
            f"DATABASE_URL must look like postgresql://user:password@host:5432/dbname, got scheme {parts.scheme!r}"
        )
    try:
        port = str(parts.port or 5432)
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL has a bad port: {exc}") from None
    # As in libpq, ?host=/path/to/dir names a Unix socket directory.
    socket = parse_qs(parts.query).get("host", [""])[0]
    return Database(
        name=unquote(parts.path.strip("/")),
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        host=socket or unquote(parts.hostname or ""),
        port=port,
        embedded=False,
    )


def _rate_limits(env: dict[str, str]) -> dict[str, str] | None:
    """RATE_LIMITS is `off`, or overrides such as `login=5/min,pin=10/min`."""
    raw = env.get("RATE_LIMITS", "").strip()
    if raw.lower() == "off":
        return None
    rates = dict(DEFAULT_RATE_LIMITS)
    if raw in ("", "on"):
        return rates
    for part in raw.split(","):
        scope, _, rate = part.strip().partition("=")
        if scope not in RATE_LIMIT_NAMES or not re.fullmatch(
            r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", rate
        ):
            raise ConfigError(
                "RATE_LIMITS must be off, on, or comma-separated scope=count/period with "
                f"scope in {', '.join(RATE_LIMIT_NAMES)} and period s/min/hour/day, got {part!r}"
            )
        rates[scope] = rate
    return rates


def _trusted_proxies(env: dict[str, str]) -> tuple[str, ...]:
    """TRUSTED_PROXIES: comma-separated addresses or networks, `10.0.0.0/8,192.0.2.7`."""
    networks = []
    for part in env.get("TRUSTED_PROXIES", "").split(","):
        if not part.strip():
            continue
        try:
            networks.append(str(ipaddress.ip_network(part.strip(), strict=False)))
        except ValueError:
            raise ConfigError(
                f"TRUSTED_PROXIES must be comma-separated IP addresses or networks such as 10.0.0.0/8, got {part!r}"
            ) from None
    return tuple(networks)


def _secrets(env: dict[str, str], production: bool, data_dir: Path) -> dict[str, str]:
    """Production: every secret set and long. Development: missing ones generated once.

    Generated secrets live in DATA_DIR/secrets.json (mode 0600), so tokens and PIN hashes
    stay valid across restarts of a development server.
    """
    values = {name: env.get(name, "") for name in SECRET_NAMES}
    for name, value in values.items():
        minimum = MIN_LENGTHS.get(name, MIN_SECRET_LENGTH)
        if value and len(value) < minimum:
            raise ConfigError(f"{name} must be at least {minimum} characters long")
    missing = [name for name, value in values.items() if not value]
    if not missing:
        return values
    if production:
        raise ConfigError(f"{missing[0]} must be set when DJANGO_ENV=production")
    path = data_dir / "secrets.json"
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    generated = [name for name in missing if name not in stored]
    if generated:
        data_dir.mkdir(parents=True, exist_ok=True)
        stored.update({name: secrets.token_urlsafe(48) for name in generated})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(stored, out)
        print(
            f"warning: generated development secrets {', '.join(generated)} into {path}; "
            "set them in the environment for production",
            file=sys.stderr,
        )
    values.update({name: stored[name] for name in missing})
    return values


def _bank_url(env: dict[str, str]) -> str:
    """BANK_URL: the bank's payout API, http(s)://host[:port][/path]; empty for the sandbox bank."""
    raw = env.get("BANK_URL", "").strip().rstrip("/")
    if raw and not re.fullmatch(r"https?://[^/\s]+(/[^\s]*)?", raw):
        raise ConfigError(f"BANK_URL must be http(s)://host[:port][/path], got {raw!r}")
    return raw


def load(environ: dict[str, str] | None = None) -> Config:
    env = dict(os.environ if environ is None else environ)
    name = _choice(env, "DJANGO_ENV", ENVIRONMENTS, "development")
    production = name == "production"
    data_dir = Path(_text(env, "DATA_DIR", str(BASE_DIR / ".data"))).resolve()
    values = _secrets(env, production, data_dir)
    host = _text(env, "HOST", "127.0.0.1")
    port = _integer(env, "PORT", 8000, 1, 65535)
    public_url = _text(env, "PUBLIC_URL", f"http://{host}:{port}").rstrip("/")
    if not re.fullmatch(r"https?://[^/\s]+", public_url):
        raise ConfigError(f"PUBLIC_URL must be http(s)://host[:port], got {public_url!r}")
    allowed = _text(env, "ALLOWED_HOSTS", "")
    allowed_hosts = tuple(h.strip() for h in allowed.split(",") if h.strip()) or (
        urlsplit(public_url).hostname or host,
        "127.0.0.1",
        "localhost",
        "testserver",
    )
    redis_url = env.get("REDIS_URL") or None
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"REDIS_URL must start with redis://, rediss:// or unix://, got {redis_url!r}")
    return Config(
        env=name,
        debug=_boolean(env, "DJANGO_DEBUG", False) and not production,
        data_dir=data_dir,
        secret_key=values["DJANGO_SECRET_KEY"],
        jwt_signing_key=values["JWT_SIGNING_KEY"],
        pin_pepper=values["PIN_PEPPER"],
        gateway_webhook_secret=values["GATEWAY_WEBHOOK_SECRET"],
        bank_webhook_secret=values["BANK_WEBHOOK_SECRET"],
        database=_database(env, data_dir),
        redis_url=redis_url,
        host=host,
        port=port,
        web_concurrency=_integer(env, "WEB_CONCURRENCY", 2, 1, 64),
        web_threads=_integer(env, "WEB_THREADS", 32, 1, 64),
        log_level=_choice(env, "LOG_LEVEL", LOG_LEVELS, "INFO"),
        rate_limits=_rate_limits(env),
        gateway_sandbox=_boolean(env, "GATEWAY_SANDBOX", not production),
        public_url=public_url,
        allowed_hosts=allowed_hosts,
        max_transaction_amount=_integer(env, "MAX_TRANSACTION_AMOUNT", 10_000_000, 1, 2**53 - 1),
        body_limit_bytes=_integer(env, "BODY_LIMIT_BYTES", 65536, 1024, 10 * 2**20),
        currency=_choice(env, "CURRENCY", ("INR", "USD", "EUR", "GBP"), "INR"),
        access_token_seconds=_integer(env, "ACCESS_TOKEN_SECONDS", 900, 30, 86400),
        refresh_token_seconds=_integer(env, "REFRESH_TOKEN_SECONDS", 30 * 86400, 60, 365 * 86400),
        payment_attempt_ttl_seconds=_integer(env, "PAYMENT_ATTEMPT_TTL_SECONDS", 1800, 10, 7 * 86400),
        webhook_tolerance_seconds=300,
        pin_max_failures=5,
        pin_lock_seconds=900,
        # API.md: keys are kept at least 24 hours.
        idempotency_retention_hours=_integer(env, "IDEMPOTENCY_RETENTION_HOURS", 48, 24, 24 * 365),
        merchant_fee_bps=_integer(env, "MERCHANT_FEE_BPS", 0, 0, 10_000),
        bank_url=_bank_url(env),
        sandbox_bank_mode=_choice(env, "SANDBOX_BANK_MODE", SANDBOX_BANK_MODES, "manual"),
        bank_timeout_seconds=_integer(env, "BANK_TIMEOUT_SECONDS", 5, 1, 60),
        bank_breaker_failures=_integer(env, "BANK_BREAKER_FAILURES", 5, 1, 1000),
        bank_breaker_cooldown_seconds=_integer(env, "BANK_BREAKER_COOLDOWN_SECONDS", 30, 1, 3600),
        withdrawal_recheck_seconds=_integer(env, "WITHDRAWAL_RECHECK_SECONDS", 60, 1, 86400),
        withdrawal_timeout_seconds=_integer(env, "WITHDRAWAL_TIMEOUT_SECONDS", 86400, 1, 30 * 86400),
        default_from_email=_email(env, "DEFAULT_FROM_EMAIL", "wallet@localhost"),
        webhook_max_attempts=_integer(env, "WEBHOOK_MAX_ATTEMPTS", 8, 1, 50),
        webhook_timeout_seconds=_integer(env, "WEBHOOK_TIMEOUT_SECONDS", 5, 1, 30),
        database_pool_timeout_seconds=_integer(env, "DATABASE_POOL_TIMEOUT_SECONDS", 10, 1, 300),
        trusted_proxies=_trusted_proxies(env),
        group_commit=_boolean(env, "GROUP_COMMIT", True),
    )
