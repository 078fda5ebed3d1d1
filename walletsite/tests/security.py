"""Helpers of the security tests (walletsite/tests/test_security_*.py).

- `build_world()`: customers, merchants and staff, and at least one row of every model the
  Django admin shows, made through the real services and API. The objects in `World.ids`
  belong to the victim (bob, or the merchant shop_b he pays), so a test can try them with
  another principal's credentials; alice is the usual attacker.
- `url_routes()`: every URL pattern the resolver knows, so a sweep over routes cannot miss
  one added later.
- `db_snapshot()`: every row of the project's tables, to show that a refused request
  changed nothing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import User
from accounts.services import staff_create
from accounts.tokens import session_login, session_refresh
from ledger.models import AuditLog, OutboxEvent
from ledger.reconciliation import reconciliation_run
from wallets.adjustments import adjustment_create
from wallets.cashback import campaign_create
from wallets.models import Wallet
from wallets.notifications import notification_emails_send, webhook_deliveries_enqueue, webhook_endpoint_create
from wallets.payments import merchant_fee_set
from wallets.tests.factories import DEFAULT_PASSWORD, DEFAULT_PIN, auth_header, register_user
from wallets.tests.money import fund
from wallets.topups import gateway_event_process
from wallets.withdrawals import bank_account_create, bank_event_process

STAFF_PASSWORD = "staff password 1"
BANK_ACCOUNT_NUMBER = "009876543210"
IFSC = "HDFC0001234"


@dataclass
class World:
    users: dict[str, User]
    wallets: dict[str, Wallet]
    # Objects of the victim's, by name: payment_attempt, transfer, withdrawal, bank_account,
    # payment (shop_b's), webhook_endpoint (shop_b's), campaign, adjustment.
    ids: dict[str, str]
    # Every secret the world's setup sent or received, by name (for the log and body sweeps).
    secrets: dict[str, str] = field(default_factory=dict)

    def headers(self, name: str) -> dict[str, str]:
        return auth_header(self.users[name])


def _post(api: APIClient, url: str, body: dict, headers: dict, *, key: bool = True):
    extra = {"HTTP_IDEMPOTENCY_KEY": uuid.uuid4().hex} if key else {}
    response = api.post(url, body, format="json", **headers, **extra)
    assert response.status_code < 300, (url, response.status_code, response.content)
    return response.json()


def _gateway_success(attempt_id: str, amount: int) -> None:
    gateway_event_process(
        event={
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "payment.succeeded",
            "data": {"payment_id": attempt_id, "amount": amount, "currency": "INR", "gateway_reference": "gw_world"},
        }
    )


def build_world() -> World:
    """Customers alice (attacker), bob (victim), carol; merchants shop_a and shop_b; staff
    operations, maker (operations too), support, bare (staff in no group) and root
    (superuser). Bob tops up, transfers to carol, pays shop_b (with cashback) which refunds
    part, registers a bank account and withdraws; shop_b has a webhook endpoint with
    deliveries and emails; there are a campaign, a pending adjustment, a reconciliation run,
    and a rotated login."""
    api = APIClient()
    users: dict[str, User] = {}
    wallets: dict[str, Wallet] = {}
    for name in ("alice", "bob", "carol"):
        users[name], wallets[name] = register_user(name=name)
    for name in ("shop_a", "shop_b"):
        users[name], wallets[name] = register_user(role="merchant", name=name)
    merchant_fee_set(merchant=wallets["shop_b"], fee_bps=100)
    for name, role in (("operations", "operations"), ("maker", "operations"), ("support", "support")):
        users[name] = staff_create(
            email=f"{name}.{uuid.uuid4().hex[:6]}@example.com", role=role, password=STAFF_PASSWORD
        )
    users["bare"] = User.objects.create_user(f"bare.{uuid.uuid4().hex[:6]}@example.com", STAFF_PASSWORD, is_staff=True)
    users["root"] = User.objects.create_superuser(f"root.{uuid.uuid4().hex[:6]}@example.com", STAFF_PASSWORD)
    assert Group.objects.filter(name__in=["operations", "support"]).count() == 2

    for name in ("alice", "bob", "carol"):
        fund(wallets[name], 500_000)
    ids: dict[str, str] = {}
    bob = auth_header(users["bob"])

    # Money in: a pending attempt, and a succeeded one (a gateway event).
    ids["payment_attempt"] = _post(api, "/api/v1/wallet/add-money", {"amount": 1_000}, bob)["payment_id"]
    succeeded = _post(api, "/api/v1/wallet/add-money", {"amount": 2_000}, bob)["payment_id"]
    _gateway_success(succeeded, 2_000)

    # A transfer alice is not a party to.
    sent = _post(
        api, "/api/v1/wallet/transfer", {"to": wallets["carol"].handle, "amount": 700, "pin": DEFAULT_PIN}, bob
    )
    ids["transfer"] = sent["transaction"]["id"]

    # A campaign (funded pool) and a payment to shop_b that earns cashback, partly refunded.
    with transaction.atomic():
        ids["adjustment_funded"] = str(
            adjustment_create(
                maker=users["maker"],
                from_ref="system:adjustments",
                to_ref="system:cashback_pool",
                amount=100_000,
                reason="fund the pool",
            ).id
        )
    _post(
        api,
        f"/api/v1/admin/adjustments/{ids['adjustment_funded']}/approve",
        {},
        auth_header(users["operations"]),
        key=False,
    )
    now = timezone.now()
    ids["campaign"] = str(
        campaign_create(
            actor=users["operations"],
            name="World cashback",
            bps=500,
            cap_per_payment=1_000,
            budget=50_000,
            starts_at=now - timedelta(hours=1),
            ends_at=now + timedelta(days=1),
        ).id
    )
    paid = _post(
        api, "/api/v1/wallet/pay", {"merchant": wallets["shop_b"].handle, "amount": 10_000, "pin": DEFAULT_PIN}, bob
    )
    ids["payment"] = paid["transaction"]["id"]
    _post(api, f"/api/v1/merchant/payments/{ids['payment']}/refund", {"amount": 1_000}, auth_header(users["shop_b"]))

    # Money out: a bank account, a pending withdrawal, and one the bank settled.
    account = bank_account_create(
        wallet=wallets["bob"], account_number=BANK_ACCOUNT_NUMBER, ifsc=IFSC, holder_name="Bob Rao"
    )
    ids["bank_account"] = str(account.id)
    withdraw = {"amount": 3_000, "pin": DEFAULT_PIN, "bank_account": ids["bank_account"]}
    ids["withdrawal"] = _post(api, "/api/v1/wallet/withdraw", withdraw, bob)["withdrawal_id"]
    settled = _post(api, "/api/v1/wallet/withdraw", withdraw, bob)["withdrawal_id"]
    bank_event_process(
        event={
            "id": f"bevt_{uuid.uuid4().hex}",
            "type": "payout.succeeded",
            "data": {"reference": settled, "amount": 3_000, "currency": "INR"},
        }
    )

    # shop_b's webhook endpoint, its deliveries and the emails of the payment.
    endpoint, endpoint_secret = webhook_endpoint_create(wallet=wallets["shop_b"], url="https://hooks.example.com/b")
    ids["webhook_endpoint"] = str(endpoint.id)
    for event in OutboxEvent.objects.filter(type="payment.received"):
        webhook_deliveries_enqueue(event)
        notification_emails_send(event)

    # A pending adjustment (made, not approved), a reconciliation run, a rotated login.
    with transaction.atomic():
        ids["adjustment"] = str(
            adjustment_create(
                maker=users["maker"],
                from_ref="system:adjustments",
                to_ref=wallets["carol"].handle,
                amount=500,
                reason="goodwill",
            ).id
        )
    reconciliation_run(triggered_by="world")
    first = session_login(email=users["bob"].email, password=DEFAULT_PASSWORD)
    session_refresh(refresh_token=first["refresh_token"])
    assert AuditLog.objects.exists()

    return World(
        users=users,
        wallets=wallets,
        ids=ids,
        secrets={
            "password": DEFAULT_PASSWORD,
            "staff password": STAFF_PASSWORD,
            "bank account number": BANK_ACCOUNT_NUMBER,
            "webhook endpoint secret": endpoint_secret,
            "refresh token": first["refresh_token"],
            "access token": first["access_token"],
            "gateway secret": settings.WALLET["GATEWAY_WEBHOOK_SECRET"],
            "bank secret": settings.WALLET["BANK_WEBHOOK_SECRET"],
            "PIN pepper": settings.WALLET["PIN_PEPPER"],
            "JWT signing key": settings.SIMPLE_JWT["SIGNING_KEY"],
            "Django secret key": settings.SECRET_KEY,
        },
    )


@dataclass(frozen=True)
class Route:
    route: str  # the full pattern, e.g. "api/v1/wallet/payments/<str:payment_id>"
    name: str | None
    callback: object
    has_parameters: bool


def url_routes() -> list[Route]:
    """Every URL pattern of ROOT_URLCONF, with its full pattern text."""
    found: list[Route] = []

    def walk(patterns, prefix: str, parameters: bool) -> None:
        for entry in patterns:
            text = prefix + str(entry.pattern)
            here = parameters or entry.pattern.regex.groups > 0
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, text, here)
            else:
                found.append(Route(route=text, name=entry.name, callback=entry.callback, has_parameters=here))

    walk(get_resolver().url_patterns, "", False)
    return found


# The project's apps and the framework tables that hold security state (logins, blacklisted
# tokens, groups and permissions, the admin's change log). Sessions are left out: logging in
# to the admin writes one.
SNAPSHOT_APPS = ("accounts", "ledger", "wallets", "token_blacklist", "auth", "admin")


def db_snapshot(*, exclude: tuple[str, ...] = ()) -> dict[str, list[dict]]:
    """Every row of every model of SNAPSHOT_APPS (but `exclude`d model labels), by label."""
    snapshot = {}
    for model in apps.get_models():
        label = model._meta.label
        if model._meta.app_label in SNAPSHOT_APPS and label not in exclude:
            snapshot[label] = list(model._base_manager.order_by("pk").values())
    return snapshot


def snapshot_diff(before: dict, after: dict) -> dict[str, tuple[list, list]]:
    """{label: (rows gone or changed, rows new or changed)} of the tables that differ."""
    diff = {}
    for label in before:
        old = [row for row in before[label] if row not in after[label]]
        new = [row for row in after[label] if row not in before[label]]
        if old or new:
            diff[label] = (old, new)
    return diff


def decoded(response) -> str:
    """A response's body as text (streaming bodies joined), for secret searches."""
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def as_json(response) -> dict:
    return json.loads(decoded(response))
