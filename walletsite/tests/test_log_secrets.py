"""No log line ever carries a password, PIN, token or secret: a whole user journey runs with
every logger at DEBUG, and its log output is searched for each of them."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
from django.conf import settings

from walletsite.logs import JsonFormatter, RequestIdFilter

pytestmark = pytest.mark.django_db

PASSWORD = "Zq8-unusual-passphrase-41"
PIN = "739184"


@pytest.fixture
def log_output():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # SQL is logged only with DEBUG=True, which production refuses; it would show stored
    # digests, not the secrets themselves.
    logging.getLogger("django.db.backends").setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_a_user_journey_logs_no_secret(api, log_output):
    from wallets.gateway import signature_header

    email = f"journey.{uuid.uuid4().hex[:6]}@example.com"
    # register, log in, refresh
    assert (
        api.post("/api/v1/auth/register", {"email": email, "password": PASSWORD, "pin": PIN}, format="json").status_code
        == 201
    )
    tokens = api.post("/api/v1/auth/login", {"email": email, "password": PASSWORD}, format="json").json()
    refreshed = api.post("/api/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}, format="json").json()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {refreshed['access_token']}"}
    # failures too: a wrong password, a reused refresh token, a wrong PIN, a bad token
    api.post("/api/v1/auth/login", {"email": email, "password": PASSWORD + "x"}, format="json")
    api.post("/api/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}, format="json")
    login2 = api.post("/api/v1/auth/login", {"email": email, "password": PASSWORD}, format="json").json()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {login2['access_token']}"}
    api.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}x")
    # add money through a signed webhook, then move it with the PIN
    payment = api.post("/api/v1/wallet/add-money", {"amount": 5_000}, format="json", HTTP_IDEMPOTENCY_KEY="j1", **auth)
    body = json.dumps(
        {
            "id": "evt_journey",
            "type": "payment.succeeded",
            "data": {
                "payment_id": payment.json()["payment_id"],
                "amount": 5_000,
                "currency": "INR",
                "gateway_reference": "gw_1",
            },
        }
    ).encode()
    signature = signature_header(secrets=settings.WALLET["GATEWAY_WEBHOOK_SECRET"], body=body)
    api.generic(
        "POST", "/api/v1/webhooks/gateway", body, content_type="application/json", HTTP_GATEWAY_SIGNATURE=signature
    )
    api.generic(
        "POST", "/api/v1/webhooks/gateway", body, content_type="application/json", HTTP_GATEWAY_SIGNATURE="t=1,v1=00"
    )
    from wallets.tests.factories import register_user

    _, other = register_user()
    for pin in (PIN, "000000"):
        api.post(
            "/api/v1/wallet/transfer",
            {"to": other.handle, "amount": 100, "pin": pin},
            format="json",
            HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
            **auth,
        )
    api.post("/api/v1/auth/logout", {}, format="json", **auth)

    output = log_output.getvalue()
    assert output.count("\n") > 10, "the journey should have logged its requests"
    secrets = {
        "password": PASSWORD,
        "pin": PIN,
        "access token": tokens["access_token"],
        "refresh token": tokens["refresh_token"],
        "rotated refresh token": refreshed["refresh_token"],
        "second login's access token": login2["access_token"],
        "webhook signature": signature.split("v1=")[1],
        "gateway secret": settings.WALLET["GATEWAY_WEBHOOK_SECRET"],
        "bank secret": settings.WALLET["BANK_WEBHOOK_SECRET"],
        "PIN pepper": settings.WALLET["PIN_PEPPER"],
        "JWT signing key": settings.SIMPLE_JWT["SIGNING_KEY"],
        "Django secret key": settings.SECRET_KEY,
    }
    for name, value in secrets.items():
        assert value not in output, f"the {name} appears in the logs"
    # the signed part of a JWT alone is a token too
    for token in (tokens["access_token"], tokens["refresh_token"]):
        assert token.split(".")[2] not in output
