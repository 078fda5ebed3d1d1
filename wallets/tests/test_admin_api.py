"""GET /api/v1/admin/reconciliation and POST /api/v1/admin/wallets/{id}/freeze | unfreeze."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from accounts.models import User
from accounts.services import staff_create
from ledger.models import AuditLog, ReconciliationRun
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import fund

pytestmark = pytest.mark.django_db

RECON = "/api/v1/admin/reconciliation"


def freeze_url(wallet_id, verb: str = "freeze") -> str:
    return f"/api/v1/admin/wallets/{wallet_id}/{verb}"


@pytest.fixture
def operations(db) -> User:
    return staff_create(email="ops@example.com", role="operations", password="staff password 1")


@pytest.fixture
def support(db) -> User:
    return staff_create(email="support@example.com", role="support", password="staff password 1")


@pytest.fixture
def wallet(db):
    _, wallet = register_user(email="alice@example.com", name="alice")
    fund(wallet, 1200)
    return wallet


def test_reconciliation_reports_a_consistent_ledger(api, operations, wallet):
    # when
    response = api.get(RECON, **auth_header(operations))
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["mismatches"] == []
    assert body["total_balance"] == 0
    assert body["checked_accounts"] >= 6 and body["checked_transactions"] == 1
    run = ReconciliationRun.objects.get(id=body["id"])
    assert run.triggered_by == "api:ops@example.com"


def test_reconciliation_reports_mismatches(api, operations, wallet):
    # given
    with connection.cursor() as cursor:
        cursor.execute("UPDATE ledger_account SET balance = balance - 200 WHERE id = %s", [wallet.account_id])
    # when
    body = api.get(RECON, **auth_header(operations)).json()
    # then
    assert body["ok"] is False
    assert body["total_balance"] == -200
    drift = next(m for m in body["mismatches"] if m["kind"] == "balance_not_sum_of_entries")
    assert (drift["account_id"], drift["expected"], drift["actual"]) == (wallet.account_id, 1200, 1000)
    assert {m["kind"] for m in body["mismatches"]} == {
        "balance_not_sum_of_entries",
        "balance_not_last_balance_after",
        "balances_total_not_zero",
    }


def test_freeze_and_unfreeze_with_a_reason(api, operations, wallet):
    # when
    frozen = api.post(freeze_url(wallet.id), {"reason": "fraud report #4"}, format="json", **auth_header(operations))
    # then
    assert frozen.status_code == 200
    assert frozen.json() == {
        "id": str(wallet.id),
        "handle": "alice@wallet",
        "currency": "INR",
        "balance": 1200,
        "available_balance": 1200,
        "held_balance": 0,
        "status": "frozen",
        "status_reason": "fraud report #4",
    }
    audit = AuditLog.objects.get(action="wallet.freeze")
    assert (audit.actor_id, audit.target, audit.reason) == (operations.id, f"wallet:{wallet.id}", "fraud report #4")

    # when
    active = api.post(
        freeze_url(wallet.id, "unfreeze"), {"reason": "cleared"}, format="json", **auth_header(operations)
    )
    # then
    assert active.status_code == 200 and active.json()["status"] == "active"
    assert AuditLog.objects.filter(action="wallet.unfreeze", reason="cleared").count() == 1


def test_freezing_twice_changes_nothing_more(api, operations, wallet):
    headers = auth_header(operations)
    api.post(freeze_url(wallet.id), {"reason": "one"}, format="json", **headers)
    again = api.post(freeze_url(wallet.id), {"reason": "two"}, format="json", **headers)
    assert again.status_code == 200 and again.json()["status_reason"] == "one"
    assert AuditLog.objects.filter(action="wallet.freeze").count() == 1


@pytest.mark.parametrize(
    "body",
    [{}, {"reason": ""}, {"reason": "   "}, {"reason": 5}, {"reason": "ok", "extra": 1}, {"reason": "x" * 1001}],
)
def test_freeze_needs_a_reason_and_nothing_else(api, operations, wallet, body):
    response = api.post(freeze_url(wallet.id), body, format="json", **auth_header(operations))
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"
    wallet.refresh_from_db()
    assert wallet.status == "active"
    assert not AuditLog.objects.exists()


@pytest.mark.parametrize("ref", [str(uuid.uuid4()), "not-a-uuid"])
def test_unknown_wallet_is_404(api, operations, ref):
    response = api.post(freeze_url(ref), {"reason": "x"}, format="json", **auth_header(operations))
    assert response.status_code == 404
    assert response.json()["code"] == "wallet_not_found"


def test_non_staff_are_forbidden(api, wallet):
    # given: a customer's own valid token
    customer = wallet.user
    headers = auth_header(customer)
    # when / then
    assert api.get(RECON, **headers).json()["code"] == "forbidden"
    response = api.post(freeze_url(wallet.id), {"reason": "x"}, format="json", **headers)
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    wallet.refresh_from_db()
    assert wallet.status == "active"
    assert not ReconciliationRun.objects.exists()


def test_support_staff_lack_the_permissions(api, support, wallet):
    headers = auth_header(support)
    assert api.get(RECON, **headers).status_code == 403
    assert api.post(freeze_url(wallet.id), {"reason": "x"}, format="json", **headers).status_code == 403
    wallet.refresh_from_db()
    assert wallet.status == "active"


def test_superuser_may_do_both(api, wallet):
    root = User.objects.create_superuser("root@example.com", "root password 1")
    headers = auth_header(root)
    assert api.get(RECON, **headers).status_code == 200
    assert api.post(freeze_url(wallet.id), {"reason": "x"}, format="json", **headers).status_code == 200


def test_no_token_is_401(api, wallet):
    assert api.get(RECON).status_code == 401
    assert api.post(freeze_url(wallet.id), {"reason": "x"}, format="json").json()["code"] == "authentication_required"


def test_wrong_method_is_405(api, operations, wallet):
    headers = auth_header(operations)
    assert api.post(RECON, **headers).status_code == 405
    assert api.get(freeze_url(wallet.id), **headers).status_code == 405


def test_schema_documents_the_admin_routes(api):
    schema = api.get("/api/schema", {"format": "json"}).json()
    recon = schema["paths"]["/api/v1/admin/reconciliation"]["get"]
    assert {"200", "401", "403"} <= set(recon["responses"])
    freeze = schema["paths"]["/api/v1/admin/wallets/{wallet_id}/freeze"]["post"]
    assert {"200", "400", "401", "403", "404"} <= set(freeze["responses"])
    assert "requestBody" in freeze
    assert "/api/v1/admin/wallets/{wallet_id}/unfreeze" in schema["paths"]
