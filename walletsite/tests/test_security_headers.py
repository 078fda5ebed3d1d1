"""Security headers on every kind of response (API success and error, admin, operations
endpoints, the API reference, static files, Django's own 404), the Content-Security-Policy
for pages and for data, and HSTS, the HTTPS redirect and secure cookies under the production
settings (a subprocess, as the settings are read once per process).

The deployment check itself (`manage.py check --deploy --fail-level WARNING` with
production settings, as .ci/run runs it) is walletsite/tests/test_config.py's
test_production_settings_pass_the_deployment_check.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings

from wallets.tests.factories import auth_header, register_user
from walletsite.config import SECRET_NAMES
from walletsite.middleware import DATA_POLICY, PAGE_POLICY

pytestmark = pytest.mark.django_db

EVERY_RESPONSE = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _responses(client, api) -> dict[str, object]:
    user, _ = register_user()
    month = "2026-01"
    return {
        "api 200": api.get("/api/v1/me", **auth_header(user)),
        "api 401": api.get("/api/v1/me"),
        "api 400": api.post("/api/v1/auth/login", {"email": 1}, format="json"),
        "api 405": api.get("/api/v1/auth/login"),
        "api csv": api.get(f"/api/v1/wallet/statements/{month}?format=csv", **auth_header(user)),
        "admin login": client.get("/admin/login/"),
        "admin redirect": client.get("/admin/"),
        "healthz": client.get("/healthz"),
        "readyz": client.get("/readyz"),
        "metrics": client.get("/metrics"),
        "schema": client.get("/api/schema?format=json"),
        "docs": client.get("/api/docs"),
        "docs script": client.get("/api/docs?script="),
        "static": client.get("/static/admin/css/base.css"),
        "404": client.get("/no-such-page"),
    }


def test_every_kind_of_response_carries_the_security_headers(client, api):
    for name, response in _responses(client, api).items():
        for header, value in EVERY_RESPONSE.items():
            assert response.get(header) == value, (name, header, response.get(header))


def test_pages_get_the_page_policy_and_everything_else_the_data_policy(client, api):
    pages = {"admin login", "admin redirect", "docs"}
    for name, response in _responses(client, api).items():
        expected = PAGE_POLICY if name in pages else DATA_POLICY
        assert response["Content-Security-Policy"] == expected, name
    # the page policy allows no inline or foreign script, no framing, no plugin
    directives = dict(d.strip().split(" ", 1) for d in PAGE_POLICY.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"


def test_a_response_that_sets_its_own_policy_keeps_it(rf):
    from django.http import HttpResponse

    from walletsite.middleware import ContentSecurityPolicyMiddleware

    def view(request):
        response = HttpResponse("<p>x</p>")
        response["Content-Security-Policy"] = "default-src 'none'"
        return response

    assert ContentSecurityPolicyMiddleware(view)(rf.get("/"))["Content-Security-Policy"] == "default-src 'none'"


# --- production settings -----------------------------------------------------------------

PROBE = """
import json
from django.test import Client
https = Client(HTTP_HOST="wallet.example.com", HTTP_X_FORWARDED_PROTO="https")
http = Client(HTTP_HOST="wallet.example.com")
out = {}
for path in ("/healthz", "/admin/login/", "/api/docs", "/api/v1/me"):
    r = https.get(path)
    out[path] = {"status": r.status_code, "headers": dict(r.headers),
                 "cookies": {k: {"secure": bool(v["secure"]), "httponly": bool(v["httponly"]),
                                 "samesite": v["samesite"]} for k, v in r.cookies.items()}}
for path in ("/admin/login/", "/api/v1/me", "/healthz", "/readyz", "/metrics"):
    r = http.get(path)
    out["http " + path] = {"status": r.status_code, "location": r.get("Location")}
print("PROBE" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def production_probe(tmp_path_factory) -> dict:
    """Requests made by Django's test client inside a process with production settings
    (the database is never reached: none of these requests needs it)."""
    base = {k: v for k, v in os.environ.items() if k not in (*SECRET_NAMES, "DJANGO_ENV", "DATABASE_URL")}
    env = {
        **base,
        **{name: secrets.token_urlsafe(48) for name in SECRET_NAMES},
        "DJANGO_ENV": "production",
        "DATA_DIR": str(tmp_path_factory.mktemp("prod-data")),
        "PUBLIC_URL": "https://wallet.example.com",
        "ALLOWED_HOSTS": "wallet.example.com",
        "DATABASE_URL": "postgresql://wallet:unused@db.invalid:5432/wallet",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", PROBE],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("PROBE"))
    return json.loads(line.removeprefix("PROBE"))


def test_production_sends_hsts_and_the_security_headers_over_https(production_probe):
    for path in ("/healthz", "/admin/login/", "/api/docs", "/api/v1/me"):
        headers = production_probe[path]["headers"]
        assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload", path
        for header, value in EVERY_RESPONSE.items():
            assert headers.get(header) == value, (path, header)
        assert "Content-Security-Policy" in headers, path
    assert production_probe["/api/v1/me"]["status"] == 401


def test_production_redirects_plain_http_but_not_the_probes(production_probe):
    for path in ("/admin/login/", "/api/v1/me"):
        answer = production_probe[f"http {path}"]
        assert (answer["status"], answer["location"]) == (301, f"https://wallet.example.com{path}"), path
    assert production_probe["http /healthz"]["status"] == 200
    # readyz and metrics are exempt from the redirect too (readyz then finds no database)
    assert production_probe["http /readyz"]["status"] == 503
    assert production_probe["http /metrics"]["status"] == 200


def test_production_cookies_are_secure(production_probe):
    cookies = production_probe["/admin/login/"]["cookies"]
    assert cookies["csrftoken"]["secure"] is True
    assert cookies["csrftoken"]["samesite"] == "Lax"
