"""No log line ever carries a password, PIN, token or secret: a whole user journey runs with
every logger at DEBUG, and its log output is searched for each of them. The second test
drives every flow, its failures too (validation errors, wrong PINs and passwords, forged
webhook signatures, a payout to the sandbox bank over HTTP, the admin), and searches the
logs, every response body and every row of the database."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from wallets.tests.factories import DEFAULT_PASSWORD, register_user
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


# --- every flow: logs, response bodies and the database -----------------------------------

STAFF_PASSWORD = "Staff-unusual-passphrase-77"
WRONG_PIN = "482915"
ACCOUNT_NUMBER = "703591468230"


class Recording:
    """A test client that keeps every response it got."""

    def __init__(self, responses: list, **kwargs):
        super().__init__(**kwargs)
        self.responses = responses

    def request(self, **kwargs):
        response = super().request(**kwargs)
        self.responses.append(response)
        return response


class RecordingClient(Recording, APIClient):
    """The API client, keeping every response."""


class RecordingBrowser(Recording, Client):
    """Django's test client (the admin's), keeping every response."""


def _signed(body: dict, secret: str) -> tuple[bytes, str]:
    from wallets.gateway import signature_header

    raw = json.dumps(body).encode()
    return raw, signature_header(secrets=secret, body=raw)


def _text(response) -> str:
    from walletsite.tests.security import decoded

    return decoded(response)


def _every_flow(api: APIClient, admin_client, live_url: str) -> dict:
    """Drive every flow, the failures too; return what was issued on the way."""
    from django.test import override_settings

    from accounts.services import staff_create
    from wallets.withdrawals import withdrawals_submit

    issued: dict[str, str] = {}
    email = f"flows.{uuid.uuid4().hex[:6]}@example.com"
    # registration, and the ways it is refused
    register = "/api/v1/auth/register"
    assert api.post(register, {"email": email, "password": PASSWORD, "pin": PIN}, format="json").status_code == 201
    api.post(register, {"email": email, "password": PASSWORD, "pin": PIN}, format="json")  # taken
    api.post(register, {"email": "x@example.com", "password": PASSWORD, "pin": "73918a"}, format="json")
    api.post(register, {"email": "y@example.com", "password": PASSWORD, "pin": int(PIN)}, format="json")
    api.post(register, {"email": "z@example.com", "password": PASSWORD[:5], "pin": PIN}, format="json")
    api.post(register, {"email": "w@example.com", "password": PASSWORD, "pin": PIN, "role": "admin"}, format="json")
    api.post(register, {"email": "v@example.com", "password": PASSWORD, "pin": PIN, "pin2": PIN}, format="json")
    # logins and refreshes
    login = "/api/v1/auth/login"
    pair = api.post(login, {"email": email, "password": PASSWORD}, format="json").json()
    api.post(login, {"email": email, "password": PASSWORD + "x"}, format="json")
    api.post(login, {"email": email, "password": PASSWORD, "otp": PASSWORD}, format="json")
    rotated = api.post("/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]}, format="json").json()
    api.post("/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]}, format="json")  # reuse
    api.post("/api/v1/auth/refresh", {"refresh_token": pair["access_token"]}, format="json")
    pair2 = api.post(login, {"email": email, "password": PASSWORD}, format="json").json()
    issued |= {
        "first access token": pair["access_token"],
        "first refresh token": pair["refresh_token"],
        "rotated access token": rotated["access_token"],
        "rotated refresh token": rotated["refresh_token"],
        "second access token": pair2["access_token"],
        "second refresh token": pair2["refresh_token"],
    }
    auth = {"HTTP_AUTHORIZATION": f"Bearer {pair2['access_token']}"}
    api.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {pair['access_token']}")  # revoked by the reuse
    api.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {pair2['access_token']}x")
    # money in, and webhooks with good and bad signatures
    payment_id = api.post(
        "/api/v1/wallet/add-money", {"amount": 900_000}, format="json", HTTP_IDEMPOTENCY_KEY="f-1", **auth
    ).json()["payment_id"]
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "payment.succeeded",
        "data": {"payment_id": payment_id, "amount": 900_000, "currency": "INR", "gateway_reference": "gw_f"},
    }
    gateway_secret = settings.WALLET["GATEWAY_WEBHOOK_SECRET"]
    raw, good = _signed(event, gateway_secret)
    issued["gateway webhook signature"] = good.split("v1=")[1]
    for header in (good, "t=1,v1=" + "0" * 64, _signed(event, "not the secret")[1], "garbage"):
        api.generic(
            "POST", "/api/v1/webhooks/gateway", raw, content_type="application/json", HTTP_GATEWAY_SIGNATURE=header
        )
    bad_json = b"{not json"
    _, bad_json_signature = _signed({}, gateway_secret)
    api.generic(
        "POST",
        "/api/v1/webhooks/gateway",
        bad_json,
        content_type="application/json",
        HTTP_GATEWAY_SIGNATURE=bad_json_signature,
    )
    # transfers: right and wrong PINs, a PIN as a number, bad amounts and recipients
    _, other = register_user()
    transfer = "/api/v1/wallet/transfer"
    for body in (
        {"to": other.handle, "amount": 100, "pin": PIN},
        {"to": other.handle, "amount": 100, "pin": WRONG_PIN},
        {"to": other.handle, "amount": 100, "pin": int(WRONG_PIN)},
        {"to": other.handle, "amount": 1.5, "pin": PIN},
        {"to": "nobody@wallet", "amount": 100, "pin": PIN},
        {"to": other.handle, "amount": 100, "pin": PIN, "memo": PIN},
    ):
        api.post(transfer, body, format="json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex, **auth)
    # a merchant: a payment, a refund, a webhook endpoint (its secret is shown once)
    shop_user, shop = register_user(role="merchant")
    shop_pair = api.post(login, {"email": shop_user.email, "password": DEFAULT_PASSWORD}, format="json").json()
    issued |= {
        "merchant's access token": shop_pair["access_token"],
        "merchant's refresh token": shop_pair["refresh_token"],
    }
    shop_auth = {"HTTP_AUTHORIZATION": f"Bearer {shop_pair['access_token']}"}
    paid = api.post(
        "/api/v1/wallet/pay",
        {"merchant": shop.handle, "amount": 5_000, "pin": PIN},
        format="json",
        HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
        **auth,
    ).json()
    api.post(
        "/api/v1/wallet/pay",
        {"merchant": shop.handle, "amount": 5_000, "pin": WRONG_PIN},
        format="json",
        HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
        **auth,
    )
    api.post(
        f"/api/v1/merchant/payments/{paid['transaction']['id']}/refund",
        {"amount": 1_000},
        format="json",
        HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
        **shop_auth,
    )
    created = api.post(
        "/api/v1/merchant/webhook-endpoints", {"url": "https://hooks.example.com/f"}, format="json", **shop_auth
    )
    issued["merchant webhook secret"] = created.json()["secret"]
    api.get("/api/v1/merchant/webhook-endpoints", **shop_auth)
    # bank accounts: the full number goes in, and the ways it is refused
    accounts = "/api/v1/wallet/bank-accounts"
    good_account = {"account_number": ACCOUNT_NUMBER, "ifsc": "HDFC0001234", "holder_name": "Flow Rao"}
    bank_account = api.post(accounts, good_account, format="json", **auth).json()
    for body in (
        good_account,  # a duplicate
        good_account | {"ifsc": "bad"},
        good_account | {"account_number": int(ACCOUNT_NUMBER)},
        good_account | {"account_number": ACCOUNT_NUMBER + "0000000"},
        good_account | {"account_number": ACCOUNT_NUMBER[:6] + "abcdef"},
        good_account | {"iban": ACCOUNT_NUMBER},
    ):
        api.post(accounts, body, format="json", **auth)
    api.get(accounts, **auth)
    # withdrawals: one sent to the sandbox bank over HTTP and settled by its signed callback
    withdraw = "/api/v1/wallet/withdraw"
    for pin, account in ((PIN, bank_account["id"]), (WRONG_PIN, bank_account["id"]), (PIN, str(uuid.uuid4()))):
        api.post(
            withdraw,
            {"amount": 2_000, "pin": pin, "bank_account": account},
            format="json",
            HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
            **auth,
        )
    with override_settings(
        WALLET={**settings.WALLET, "PUBLIC_URL": live_url, "BANK_URL": "", "SANDBOX_BANK_MODE": "succeed"}
    ):
        assert withdrawals_submit().sent == 1
    bank_event = {
        "id": f"bevt_{uuid.uuid4().hex}",
        "type": "payout.failed",
        "data": {"reference": str(uuid.uuid4()), "amount": 1},
    }
    raw, bank_good = _signed(bank_event, settings.WALLET["BANK_WEBHOOK_SECRET"])
    for header in (bank_good, "t=1,v1=" + "0" * 64, _signed(bank_event, "not the secret")[1]):
        api.generic("POST", "/api/v1/webhooks/bank", raw, content_type="application/json", HTTP_BANK_SIGNATURE=header)
    # the admin: a wrong and a right staff password, and the pages that show secrets' rows
    staff = staff_create(email=f"staff.{uuid.uuid4().hex[:6]}@example.com", role="operations", password=STAFF_PASSWORD)
    admin_client.post("/admin/login/", {"username": staff.email, "password": STAFF_PASSWORD + "x"})
    admin_client.post("/admin/login/", {"username": staff.email, "password": STAFF_PASSWORD})
    for page in (
        "/admin/wallets/bankaccount/",
        f"/admin/wallets/bankaccount/{bank_account['id']}/change/",
        "/admin/wallets/withdrawal/",
        "/admin/wallets/bankevent/",
        "/admin/accounts/pin/",
        "/admin/accounts/tokenfamily/",
        "/admin/wallets/idempotencykey/",
        "/admin/ledger/outboxevent/",
        "/admin/wallets/webhookendpoint/",
        "/admin/wallets/emailnotification/",
        "/admin/ledger/auditlog/",
    ):
        assert admin_client.get(page).status_code == 200, page
    api.post("/api/v1/auth/logout", {}, format="json", **auth)
    return issued


def _issued_by(response) -> set[str]:
    """The tokens and the secret a response hands out by design (login, refresh, a new
    webhook endpoint): those may appear in that response's body and nowhere else."""
    path = response.wsgi_request.path
    if response.status_code not in (200, 201) or "json" not in response.get("Content-Type", ""):
        return set()
    if path in ("/api/v1/auth/login", "/api/v1/auth/refresh"):
        body = response.json()
        return {body["access_token"], body["refresh_token"]}
    if path == "/api/v1/merchant/webhook-endpoints" and response.status_code == 201:
        return {response.json()["secret"]}
    return set()


def _database_text() -> str:
    """Every row of every table as text, but the two columns that must hold a secret: the
    bank account's number (a payout needs it) and a merchant endpoint's signing secret."""
    from django.apps import apps

    rows = []
    for model in apps.get_models():
        skip = {("BankAccount", "account_number"), ("WebhookEndpoint", "secret")}
        fields = [f.attname for f in model._meta.concrete_fields if (model.__name__, f.name) not in skip]
        rows.extend(json.dumps(row, default=str) for row in model._base_manager.values(*fields))
    return "\n".join(rows)


@pytest.mark.django_db(transaction=True)
def test_every_flow_keeps_secrets_out_of_logs_error_bodies_and_the_database(log_output, live_server):
    from accounts.models import Pin, User

    # given / when: every flow, with its failures
    responses: list = []
    issued = _every_flow(RecordingClient(responses), RecordingBrowser(responses), live_server.url)

    # then
    user = User.objects.get(email__startswith="flows.")
    secrets = {
        "password": PASSWORD,
        "staff password": STAFF_PASSWORD,
        "PIN": PIN,
        "a wrong PIN": WRONG_PIN,
        "full bank account number": ACCOUNT_NUMBER,
        "PIN digest": Pin.objects.get(user=user).digest,
        "password hash": user.password.split("$")[-1],
        "gateway secret": settings.WALLET["GATEWAY_WEBHOOK_SECRET"],
        "bank secret": settings.WALLET["BANK_WEBHOOK_SECRET"],
        "PIN pepper": settings.WALLET["PIN_PEPPER"],
        "JWT signing key": settings.SIMPLE_JWT["SIGNING_KEY"],
        "Django secret key": settings.SECRET_KEY,
        **issued,
        # the signed part of a JWT alone is a token too
        **{f"{name} (signature)": value.split(".")[2] for name, value in issued.items() if value.count(".") == 2},
    }
    output = log_output.getvalue()
    assert output.count("\n") > 50, "the flows should have logged their requests"
    assert not [name for name, value in secrets.items() if value in output], "in the logs"
    seen = {(r.wsgi_request.path, r.status_code) for r in responses}
    # the flows did what they say: successes and each kind of refusal
    assert {
        ("/api/v1/auth/register", 201),
        ("/api/v1/auth/register", 400),
        ("/api/v1/auth/login", 401),
        ("/api/v1/auth/refresh", 401),
        ("/api/v1/webhooks/gateway", 200),
        ("/api/v1/webhooks/gateway", 400),
        ("/api/v1/wallet/transfer", 201),
        ("/api/v1/wallet/transfer", 403),
        ("/api/v1/wallet/bank-accounts", 201),
        ("/api/v1/wallet/bank-accounts", 400),
        ("/api/v1/wallet/bank-accounts", 409),
        ("/api/v1/wallet/withdraw", 202),
        ("/api/v1/wallet/withdraw", 403),
        ("/api/v1/webhooks/bank", 400),
        ("/admin/login/", 302),
    } <= seen, seen
    leaks = []
    for response in responses:
        body, allowed = _text(response), _issued_by(response)
        leaks += [
            (response.wsgi_request.path, response.status_code, name)
            for name, value in secrets.items()
            if value in body and not any(value in own for own in allowed)
        ]
    assert not leaks, "in response bodies"
    stored = _database_text()
    at_rest = {k: v for k, v in secrets.items() if k not in ("PIN", "a wrong PIN", "PIN digest", "password hash")}
    assert not [name for name, value in at_rest.items() if value in stored], "in the database"
