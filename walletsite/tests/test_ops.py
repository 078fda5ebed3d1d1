"""Operations endpoints (/healthz, /readyz, /metrics, the API reference, static files) and the
middleware every request passes through (request id, body limit, JSON request log)."""

from __future__ import annotations

import io
import json
import logging
import re
import time

import pytest
from django.db import connections
from django.db.backends.postgresql.base import DatabaseWrapper
from django.test import Client

from walletsite.logs import JsonFormatter, RequestIdFilter


@pytest.fixture
def client() -> Client:
    return Client()


def test_healthz_answers_without_the_database(client):
    # given: no django_db mark, so pytest-django makes any database access fail
    # when
    response = client.get("/healthz")
    # then
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_is_ready_when_the_database_answers(client):
    # when
    response = client.get("/readyz")
    # then
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


@pytest.fixture
def unreachable_database(tmp_path):
    """connections["default"] swapped, for this thread, for a wrapper whose server does not
    exist: a real connection attempt to a Unix socket nobody listens on."""
    real = connections["default"]
    settings = {**real.settings_dict, "HOST": str(tmp_path), "PORT": "5999"}
    settings["OPTIONS"] = {**settings["OPTIONS"], "connect_timeout": 1}
    # Its own alias, so that it gets its own pool instead of the real one (pools are kept
    # per alias).
    broken = DatabaseWrapper(settings, alias="readyz_unreachable")
    connections["default"] = broken
    yield
    connections["default"] = real
    broken.close_pool()


def test_readyz_answers_503_problem_when_the_database_is_unreachable(client, unreachable_database):
    # when
    started = time.monotonic()
    response = client.get("/readyz")
    elapsed = time.monotonic() - started
    # then
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "service_unavailable"
    assert body["status"] == 503
    assert response["Retry-After"] == "5"
    # Bounded by the readiness timeout, not by the pool's 10 s.
    assert elapsed < 4


def test_readyz_and_healthz_refuse_writes(client):
    # when
    response = client.post("/healthz")
    # then
    assert response.status_code == 405


def test_metrics_is_prometheus_text_with_request_counts(client):
    # given: one request the metrics middleware counts
    client.get("/healthz")
    # when
    response = client.get("/metrics")
    # then
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "# TYPE wallet_http_requests_total counter" in text
    assert re.search(r'wallet_http_requests_total\{method="GET",route="healthz",status="200"\} [1-9]', text)


def test_schema_is_openapi_json_without_authentication(client):
    # when
    response = client.get("/api/schema?format=json", HTTP_AUTHORIZATION="Bearer not-a-token")
    # then
    assert response.status_code == 200
    document = json.loads(response.content)
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/auth/register" in document["paths"]


def test_docs_serve_swagger_ui_from_local_static_files(client):
    # when
    response = client.get("/api/docs")
    # then: every script and stylesheet is ours, none from a CDN; the init script is served
    # by the page's own view (no inline script, for the Content-Security-Policy)
    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any("swagger-ui-bundle.js" in a for a in assets)
    assert "/api/docs?script=" in assets
    assert "<script>" not in html
    for asset in assets:
        assert asset.startswith(("/static/", "/api/docs?script=")), asset
    # and those files are really served, without DEBUG
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        if asset.startswith("/static/"):
            assert "max-age" in served["Cache-Control"]
        else:
            assert served["Content-Type"].startswith("application/javascript")
            assert b"SwaggerUIBundle" in served.content


def test_admin_stylesheet_is_served_without_debug(client, settings):
    # given
    settings.DEBUG = False
    # when
    response = client.get("/static/admin/css/base.css")
    # then
    assert response.status_code == 200
    assert b"body" in b"".join(response.streaming_content)


@pytest.mark.parametrize("path", ["/static/../settings.py", "/static/admin/../../walletsite/settings.py"])
def test_static_refuses_paths_outside_the_static_directories(client, path):
    # when
    response = client.get(path)
    # then
    assert response.status_code in (400, 404)
    assert b"SECRET_KEY" not in response.content


def test_request_id_is_echoed_when_well_formed(client):
    # when
    response = client.get("/healthz", HTTP_X_REQUEST_ID="abc-123.x")
    # then
    assert response["X-Request-Id"] == "abc-123.x"


@pytest.mark.parametrize("incoming", [None, "", "has spaces", "x" * 200, "semi;colon"])
def test_request_id_is_generated_when_absent_or_malformed(client, incoming):
    # when
    headers = {} if incoming is None else {"HTTP_X_REQUEST_ID": incoming}
    response = client.get("/healthz", **headers)
    # then
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-Id"])


def test_body_over_the_limit_is_refused_with_413_problem(client, settings):
    # given
    body = b"{" + b" " * settings.BODY_LIMIT_BYTES + b"}"
    # when
    response = client.post("/api/v1/auth/login", data=body, content_type="application/json")
    # then
    assert response.status_code == 413
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "payload_too_large"


def test_body_at_the_limit_is_let_through(client, settings, db):
    # given: a body of exactly BODY_LIMIT_BYTES that is not valid login input
    body = json.dumps({"email": "a@example.com", "password": "x" * (settings.BODY_LIMIT_BYTES - 64)})
    body = body.encode().ljust(settings.BODY_LIMIT_BYTES)
    # when
    response = client.post("/api/v1/auth/login", data=body, content_type="application/json")
    # then: it reached the view, which judged it
    assert response.status_code != 413


@pytest.fixture
def json_log() -> io.StringIO:
    """The request logger's lines, formatted and filtered as settings.LOGGING does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("walletsite.request")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_request_log_line_is_json_with_the_request_id(client, json_log):
    # when
    client.get("/healthz", HTTP_X_REQUEST_ID="trace-42")
    # then
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    request_lines = [line for line in lines if line["message"] == "request"]
    assert len(request_lines) == 1
    line = request_lines[0]
    assert line["request_id"] == "trace-42"
    assert line["path"] == "/healthz"
    assert line["status"] == 200
    assert line["method"] == "GET"
    assert isinstance(line["duration_ms"], float | int)
