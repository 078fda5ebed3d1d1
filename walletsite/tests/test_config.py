"""walletsite.config: every variable validated with a message naming it, secrets required in
production and generated once in development, and the production settings passing Django's
deployment check."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys

import pytest
from django.conf import settings

from walletsite import config
from walletsite.config import SECRET_NAMES, ConfigError

ROOT = settings.BASE_DIR


def _secrets() -> dict[str, str]:
    # 64 characters: long enough for config (32) and for Django's deployment check (50).
    return {name: secrets.token_urlsafe(48) for name in SECRET_NAMES}


@pytest.fixture
def dev_env(tmp_path) -> dict[str, str]:
    return {"DJANGO_ENV": "development", "DATA_DIR": str(tmp_path / "data")}


@pytest.fixture
def prod_env(tmp_path) -> dict[str, str]:
    return {
        "DJANGO_ENV": "production",
        "DATA_DIR": str(tmp_path / "data"),
        "PUBLIC_URL": "https://wallet.example.com",
        "DATABASE_URL": "postgresql://wallet:secret@db.example.com:5432/wallet",
        **_secrets(),
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "0"),
        ("PORT", "65536"),
        ("PORT", "-1"),
        ("WEB_CONCURRENCY", "0"),
        ("WEB_CONCURRENCY", "two"),
        ("WEB_THREADS", "0"),
        ("DATABASE_POOL_TIMEOUT_SECONDS", "0"),
        ("DATABASE_POOL_TIMEOUT_SECONDS", "ten"),
        ("LOG_LEVEL", "loud"),
        ("LOG_LEVEL", "info "),
        ("RATE_LIMITS", "bad"),
        ("RATE_LIMITS", "login=fast"),
        ("RATE_LIMITS", "nosuchscope=5/min"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
        ("TRUSTED_PROXIES", "proxy.internal"),
        ("GATEWAY_SANDBOX", "maybe"),
        ("DJANGO_DEBUG", "sometimes"),
        ("DJANGO_ENV", "staging"),
        ("DATABASE_URL", "mysql://wallet:pw@localhost:3306/wallet"),
        ("DATABASE_URL", "postgresql://wallet:pw@localhost:5432"),
        ("DATABASE_URL", "postgresql://wallet:pw@localhost:port/wallet"),
        ("REDIS_URL", "http://localhost:6379"),
        ("PUBLIC_URL", "ftp://wallet.example.com"),
        ("PUBLIC_URL", "https://wallet.example.com/path"),
        ("BODY_LIMIT_BYTES", "10"),
        ("MAX_TRANSACTION_AMOUNT", "1.5"),
        ("MAX_TRANSACTION_AMOUNT", "0"),
        ("CURRENCY", "XYZ"),
        ("ACCESS_TOKEN_SECONDS", "5"),
        ("PAYMENT_ATTEMPT_TTL_SECONDS", "soon"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(dev_env, name, value):
    # given
    env = {**dev_env, name: value}
    # when / then
    with pytest.raises(ConfigError, match=name):
        config.load(env)


def test_defaults_for_development(dev_env):
    # when
    cfg = config.load(dev_env)
    # then
    assert (cfg.env, cfg.debug, cfg.host, cfg.port) == ("development", False, "127.0.0.1", 8000)
    assert (cfg.web_concurrency, cfg.web_threads) == (2, 32)
    assert cfg.database.embedded is True
    assert cfg.redis_url is None
    assert cfg.gateway_sandbox is True
    assert cfg.public_url == "http://127.0.0.1:8000"
    assert "127.0.0.1" in cfg.allowed_hosts and "localhost" in cfg.allowed_hosts
    assert cfg.rate_limits == config.DEFAULT_RATE_LIMITS


def test_production_is_complete_with_its_secrets(prod_env):
    # when
    cfg = config.load({**prod_env, "DJANGO_DEBUG": "on"})
    # then: never DEBUG in production, no sandbox unless asked, hosts from PUBLIC_URL
    assert cfg.env == "production"
    assert cfg.debug is False
    assert cfg.gateway_sandbox is False
    assert cfg.allowed_hosts[0] == "wallet.example.com"
    assert cfg.secret_key == prod_env["DJANGO_SECRET_KEY"]
    assert cfg.database.embedded is False
    assert (cfg.database.host, cfg.database.port, cfg.database.name) == ("db.example.com", "5432", "wallet")
    # and nothing was generated on disk
    assert not (config.Path(prod_env["DATA_DIR"]) / "secrets.json").exists()


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_production_refuses_a_missing_secret(prod_env, name):
    # given
    env = {k: v for k, v in prod_env.items() if k != name}
    # when / then
    with pytest.raises(ConfigError, match=f"{name} must be set when DJANGO_ENV=production"):
        config.load(env)


@pytest.mark.parametrize("name", SECRET_NAMES)
@pytest.mark.parametrize("environment", ["production", "development"])
def test_a_short_secret_is_refused_anywhere(prod_env, name, environment):
    # given
    minimum = config.MIN_LENGTHS.get(name, 32)
    env = {**prod_env, "DJANGO_ENV": environment, name: "x" * (minimum - 1)}
    # when / then
    with pytest.raises(ConfigError, match=f"{name} must be at least {minimum} characters"):
        config.load(env)
    assert config.load({**env, name: "x" * minimum})


def test_the_django_secret_key_is_as_long_as_the_deploy_check_wants():
    assert config.MIN_LENGTHS["DJANGO_SECRET_KEY"] == 50


def test_development_generates_missing_secrets_once(dev_env, capsys):
    # when
    first = config.load(dev_env)
    warning = capsys.readouterr().err
    second = config.load(dev_env)
    # then: stored privately, with one warning, and the same on every load
    path = config.Path(dev_env["DATA_DIR"]) / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "warning: generated development secrets" in warning
    for name in SECRET_NAMES:
        assert name in warning
    assert capsys.readouterr().err == ""
    assert first == second
    assert len(first.secret_key) >= 50 and first.secret_key != first.jwt_signing_key


def test_a_secret_from_the_environment_wins_over_a_generated_one(dev_env):
    # given
    generated = config.load(dev_env)
    mine = "m" * 40
    # when
    cfg = config.load({**dev_env, "PIN_PEPPER": mine})
    # then
    assert cfg.pin_pepper == mine
    assert cfg.secret_key == generated.secret_key


def test_rate_limits_off_and_overrides(dev_env):
    # when
    off = config.load({**dev_env, "RATE_LIMITS": "off"})
    custom = config.load({**dev_env, "RATE_LIMITS": "login=5/min, pin=3/hour"})
    # then
    assert off.rate_limits is None
    assert custom.rate_limits == {**config.DEFAULT_RATE_LIMITS, "login": "5/min", "pin": "3/hour"}


def test_trusted_proxies_are_networks(dev_env):
    # when
    none = config.load(dev_env)
    some = config.load({**dev_env, "TRUSTED_PROXIES": " 10.0.0.7/8, 192.0.2.7 ,2001:db8::/32,"})
    # then: empty by default (REMOTE_ADDR is the client); addresses become networks
    assert none.trusted_proxies == ()
    assert some.trusted_proxies == ("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32")


def test_database_url_with_quoted_password_and_a_socket_directory(dev_env):
    # when
    tcp = config.load({**dev_env, "DATABASE_URL": "postgresql://app:p%40ss%2Fw@db:6543/wallet_prod"}).database
    unix = config.load({**dev_env, "DATABASE_URL": "postgres://app@localhost/wallet?host=/run/postgresql"}).database
    # then
    assert (tcp.user, tcp.password, tcp.host, tcp.port, tcp.name) == ("app", "p@ss/w", "db", "6543", "wallet_prod")
    assert (unix.host, unix.port, unix.embedded) == ("/run/postgresql", "5432", False)


def _manage(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in (*SECRET_NAMES, "DJANGO_ENV", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deployment_check(prod_env):
    # given: the variables the README documents for production; the database host does not
    # exist, since the check does not connect
    env = {**prod_env, "ALLOWED_HOSTS": "wallet.example.com", "DATABASE_URL": "postgresql://w:pw@db.invalid/wallet"}
    # when
    done = _manage(["check", "--deploy", "--fail-level", "WARNING"], env)
    # then
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_settings_stop_with_a_configuration_error_naming_the_variable(dev_env):
    # when
    done = _manage(["check"], {**dev_env, "PORT": "abc"})
    # then: one line, no traceback
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == "configuration error: PORT must be a whole number, got 'abc'"
    assert "Traceback" not in done.stderr
