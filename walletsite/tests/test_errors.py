"""Every error leaves as RFC 9457 problem+json from the one catalog: DRF's, ours, and Django's
own 404 and 500."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db


def _is_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"urn:wallet:error:{code}"
    assert body["title"] and body["detail"]
    return body


def test_unknown_routes_inside_and_outside_the_api(client):
    _is_problem(client.get("/api/v1/nope"), 404, "not_found")
    _is_problem(client.get("/nope"), 404, "not_found")
    # No trailing slashes: the contract's paths are exact.
    _is_problem(client.get("/api/v1/wallet/"), 404, "not_found")


def test_wrong_method(client):
    _is_problem(client.get("/api/v1/webhooks/gateway"), 405, "method_not_allowed")
    _is_problem(client.get("/api/v1/auth/register"), 405, "method_not_allowed")
    _is_problem(client.delete("/api/v1/wallet/transfer"), 405, "method_not_allowed")


def test_not_acceptable(client):
    response = client.post("/api/v1/auth/login", {}, content_type="application/json", HTTP_ACCEPT="text/html")
    _is_problem(response, 406, "not_acceptable")


@override_settings(ROOT_URLCONF="walletsite.tests.boom_urls")
@pytest.mark.parametrize("path", ["/boom/django", "/boom/drf"])
def test_a_crash_answers_500_without_internals(path):
    client = Client(raise_request_exception=False)
    body = _is_problem(client.get(path), 500, "internal_error")
    assert "SELECT" not in str(body) and "Traceback" not in str(body)


def test_a_body_over_the_limit(client, settings):
    response = client.post("/api/v1/auth/login", "x" * (settings.BODY_LIMIT_BYTES + 1), content_type="application/json")
    _is_problem(response, 413, "payload_too_large")


def test_the_request_id_is_echoed_on_errors(client):
    response = client.get("/api/v1/nope", HTTP_X_REQUEST_ID="req-123")
    assert response["X-Request-Id"] == "req-123"


def test_options_answers_405_not_500(client):
    # Found by the API fuzzing: DRF's OPTIONS metadata looked for a view-wide serializer
    # these views do not have, and answered 500 to an authenticated OPTIONS.
    from wallets.tests.factories import auth_header, register_user

    user, _ = register_user()
    for path in ("/api/v1/auth/login", "/api/v1/wallet/transfer", "/api/v1/transactions"):
        _is_problem(client.options(path), 405, "method_not_allowed")
        _is_problem(client.options(path, **auth_header(user)), 405, "method_not_allowed")
