"""Helpers for the test suite only."""

import contextlib

from django.contrib.auth.hashers import BCryptSHA256PasswordHasher


class FastBCryptSHA256PasswordHasher(BCryptSHA256PasswordHasher):
    """The production hasher at bcrypt's lowest cost, so tests that create many users stay
    fast; the algorithm and the code paths are the same."""

    rounds = 4


DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url_or_skip() -> str:
    """The real Redis the tests use: REDIS_URL, else the local default. Unreachable: the test
    skips with the reason printed, or fails when REQUIRE_REDIS is set (CI, like
    REQUIRE_BROWSER for the browser tests)."""
    import os

    import pytest
    import redis

    url = os.environ.get("REDIS_URL") or DEFAULT_TEST_REDIS_URL
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
    except (redis.RedisError, OSError) as exc:
        reason = f"no Redis at {url} ({type(exc).__name__}); start redis-server or set REDIS_URL"
        if os.environ.get("REQUIRE_REDIS"):
            pytest.fail(f"REQUIRE_REDIS is set but {reason}")
        print(f"skipping a Redis test: {reason}")
        pytest.skip(reason)
    return url


def redis_cache_settings(url: str, *, key_prefix: str) -> dict:
    """CACHES with django-redis at `url`, with the options settings.py gives it when REDIS_URL
    is set, and a key prefix of the test's own (one Redis serves concurrent test runs)."""
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": key_prefix,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5, "IGNORE_EXCEPTIONS": True},
        }
    }


def explain_generic_plan(sql: str) -> str:
    """EXPLAIN (GENERIC_PLAN) of a statement written with psycopg placeholders (%s or
    %(name)s): its plan for any parameter values, the plan walletsite.db's prepared
    statements run on."""
    import re

    from django.db import connection

    names: list[str] = []

    def named(match: re.Match) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    positional = iter(range(1, 1000))
    sql = re.sub(r"%\((\w+)\)s", named, sql)
    sql = re.sub(r"%s", lambda _: f"${next(positional)}", sql)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (GENERIC_PLAN) " + sql.replace("%%", "%"))
        return "\n".join(row[0] for row in cursor.fetchall())


@contextlib.contextmanager
def probe_table(name: str, columns: str):
    """A table for one test (`CREATE TABLE name (columns)`), dropped afterwards: for tests of
    the database plumbing that write rows and read back what committed."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {name} ({columns})")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {name}")


def committed_rows(sql: str) -> list[tuple]:
    """What `sql` reads in a session of its own: only what has committed."""
    from django.db import connections

    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()
    finally:
        other.close()
