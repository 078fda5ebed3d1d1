"""The Django admin: every page renders for the staff allowed to see it and is refused to
everyone else, money tables cannot be added to or deleted from, the freeze actions go
through the service with a reason, the reconciliation page runs and shows a run, and
changelists cost the same few queries however many rows there are."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Pin, TokenFamily, User
from accounts.services import staff_create
from ledger import admin as ledger_admin
from ledger.models import Account, AuditLog, Entry, OutboxEvent, ReconciliationRun, Transaction
from ledger.reconciliation import reconciliation_run
from wallets.models import GatewayEvent, IdempotencyKey, PaymentAttempt, Wallet
from wallets.tests.factories import register_user
from wallets.tests.money import fund

pytestmark = pytest.mark.django_db

PASSWORD = "staff password 1"

# (app, model) of every model in the admin.
MODELS = [
    ("ledger", "account"),
    ("ledger", "transaction"),
    ("ledger", "entry"),
    ("ledger", "auditlog"),
    ("ledger", "reconciliationrun"),
    ("ledger", "outboxevent"),
    ("wallets", "wallet"),
    ("wallets", "paymentattempt"),
    ("wallets", "idempotencykey"),
    ("wallets", "gatewayevent"),
    ("accounts", "user"),
    ("accounts", "pin"),
    ("accounts", "tokenfamily"),
]
MONEY_MODELS = [m for m in MODELS if m[0] in ("ledger", "wallets")]


@pytest.fixture
def superuser(db) -> User:
    return User.objects.create_superuser("root@example.com", PASSWORD)


@pytest.fixture
def operations(db) -> User:
    return staff_create(email="ops@example.com", role="operations", password=PASSWORD)


@pytest.fixture
def support(db) -> User:
    return staff_create(email="support@example.com", role="support", password=PASSWORD)


@pytest.fixture
def customer(db) -> User:
    user, _ = register_user(email="customer@example.com")
    return user


@pytest.fixture
def data(db, operations) -> dict:
    """One row (at least) in every table the admin shows."""
    user, wallet = register_user(email="alice@example.com", name="alice")
    _, other = register_user(email="bob@example.com", name="bob")
    fund(wallet, 5000)
    fund(other, 700)
    attempt = PaymentAttempt.objects.create(
        wallet=wallet, amount=100, currency="INR", expires_at=timezone.now() + timedelta(hours=1)
    )
    flagged = PaymentAttempt.objects.create(
        wallet=other,
        amount=200,
        currency="INR",
        status="failed",
        flagged_for_review=True,
        review_reason="late success",
        expires_at=timezone.now(),
    )
    event = GatewayEvent.objects.create(
        id=f"evt_{uuid.uuid4().hex}", type="payment.failed", payment_attempt=flagged, payload={"x": 1}
    )
    key = IdempotencyKey.objects.create(
        user=user, key="k-1", request_hash="0" * 64, response_status=201, response_body={"ok": True}
    )
    outbox = OutboxEvent.objects.create(type="payment.received", payload={"id": 1})
    family = TokenFamily.objects.create(user=user, current_jti="jti")
    run = reconciliation_run(triggered_by="test")
    audit = AuditLog.objects.create(actor_label="test", action="test.action", target=f"wallet:{wallet.id}", reason="r")
    return {
        "ledger.account": wallet.account_id,
        "ledger.transaction": Transaction.objects.latest("created_at").pk,
        "ledger.entry": Entry.objects.filter(account_id=wallet.account_id).latest("id").pk,
        "ledger.auditlog": audit.pk,
        "ledger.reconciliationrun": run.pk,
        "ledger.outboxevent": outbox.pk,
        "wallets.wallet": wallet.pk,
        "wallets.paymentattempt": attempt.pk,
        "wallets.idempotencykey": key.pk,
        "wallets.gatewayevent": event.pk,
        "accounts.user": user.pk,
        "accounts.pin": Pin.objects.get(user=user).pk,
        "accounts.tokenfamily": family.pk,
        "wallet": wallet,
        "other": other,
        "flagged": flagged,
    }


def changelist(app: str, model: str) -> str:
    return reverse(f"admin:{app}_{model}_changelist")


def change(app: str, model: str, pk) -> str:
    return reverse(f"admin:{app}_{model}_change", args=[pk])


RECON_URL = "/admin/ledger/reconciliationrun/run/"


@pytest.mark.parametrize("who", ["superuser", "operations", "support"])
def test_every_changelist_and_change_view_renders_for_staff(client, request, data, who):
    # given
    client.force_login(request.getfixturevalue(who))
    for app, model in MODELS:
        # when
        listed = client.get(changelist(app, model))
        shown = client.get(change(app, model, data[f"{app}.{model}"]))
        # then
        assert listed.status_code == 200, (app, model, listed.status_code)
        assert shown.status_code == 200, (app, model, shown.status_code)


@pytest.mark.parametrize("who", ["superuser", "operations", "support"])
def test_index_and_reconciliation_page_render_for_staff(client, request, data, who):
    client.force_login(request.getfixturevalue(who))
    index = client.get("/admin/")
    assert index.status_code == 200
    assert RECON_URL in index.content.decode()
    page = client.get(RECON_URL)
    assert page.status_code == 200
    assert "Last 1 runs" in page.content.decode()


def test_non_staff_are_sent_to_the_login_page(client, customer, data):
    # given
    client.force_login(customer)
    # when / then
    for url in ["/admin/", RECON_URL, *(changelist(a, m) for a, m in MODELS)]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/")
    assert client.post(RECON_URL).status_code == 302
    assert ReconciliationRun.objects.count() == 1


def test_anonymous_visitors_are_sent_to_the_login_page(client, data):
    response = client.get(changelist("wallets", "wallet"))
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_staff_without_a_group_see_nothing(client, data):
    # given: staff, but in no group and without permissions
    client.force_login(User.objects.create_user("bare@example.com", PASSWORD, is_staff=True))
    # when / then
    assert client.get(changelist("ledger", "entry")).status_code == 403
    assert client.get(RECON_URL).status_code == 403


@pytest.mark.parametrize("who", ["superuser", "operations"])
def test_money_tables_cannot_be_added_to_changed_or_deleted(client, request, data, who):
    # given
    client.force_login(request.getfixturevalue(who))
    counts = {m: _count(*m) for m in MONEY_MODELS}
    for app, model in MONEY_MODELS:
        pk = data[f"{app}.{model}"]
        # when
        page = client.get(changelist(app, model)).content.decode()
        added = client.post(f"/admin/{app}/{model}/add/", {})
        deleted = client.post(f"/admin/{app}/{model}/{pk}/delete/", {"post": "yes"})
        bulk = client.post(changelist(app, model), {"action": "delete_selected", ACTION_CHECKBOX_NAME: [pk]})
        # then
        assert f"/admin/{app}/{model}/add/" not in page, (app, model)
        assert 'value="delete_selected"' not in page
        assert added.status_code == 403, (app, model)
        assert deleted.status_code == 403, (app, model)
        assert bulk.status_code in (200, 302)
    assert {m: _count(*m) for m in MONEY_MODELS} == counts


def _count(app: str, model: str) -> int:
    return apps.get_model(app, model).objects.count()


def test_change_view_is_read_only(client, superuser, data):
    # given
    client.force_login(superuser)
    wallet = data["wallet"]
    # when
    page = client.get(change("wallets", "wallet", wallet.pk)).content.decode()
    posted = client.post(change("wallets", "wallet", wallet.pk), {"status": "frozen", "handle": "x@wallet"})
    # then
    assert 'name="status"' not in page and 'name="handle"' not in page
    assert posted.status_code == 403
    wallet.refresh_from_db()
    assert (wallet.status, wallet.handle) == ("active", "alice@wallet")


def test_wallet_list_shows_balances_and_searches_by_handle_and_email(client, operations, data):
    # given
    client.force_login(operations)
    url = changelist("wallets", "wallet")
    # when
    by_handle = client.get(url, {"q": "ALICE@wallet"}).content.decode()
    by_email = client.get(url, {"q": "Bob@Example.com"}).content.decode()
    by_id = client.get(url, {"q": str(data["wallet"].id)}).content.decode()
    nothing = client.get(url, {"q": "nobody"}).content.decode()
    # then
    assert "alice@wallet" in by_handle and "bob@wallet" not in by_handle
    assert "alice@example.com" in by_handle and ">5000<" in by_handle
    assert "bob@wallet" in by_email and "alice@wallet" not in by_email
    assert "alice@wallet" in by_id
    assert "alice@wallet" not in nothing and "0 wallets" in nothing


def test_user_list_searches_by_email_and_wallet_handle(client, support, data):
    client.force_login(support)
    url = changelist("accounts", "user")
    assert "alice@example.com" in client.get(url, {"q": "alice@wallet"}).content.decode()
    found = client.get(url, {"q": "BOB@example.com"}).content.decode()
    assert "bob@example.com" in found and "alice@example.com" not in found


def test_entries_are_found_by_account_and_by_transaction(client, support, data):
    client.force_login(support)
    wallet = data["wallet"]
    url = changelist("ledger", "entry")
    entry = Entry.objects.get(account_id=wallet.account_id)
    by_account = client.get(url, {"q": str(wallet.account_id)}).content.decode()
    by_txn = client.get(url, {"q": str(entry.transaction_id)}).content.decode()
    assert "1 entry" in by_account
    assert "2 entries" in by_txn


def test_transaction_change_view_lists_its_entries(client, support, data):
    client.force_login(support)
    entry = Entry.objects.filter(account_id=data["wallet"].account_id).get()
    page = client.get(change("ledger", "transaction", entry.transaction_id)).content.decode()
    assert "gateway_clearing" in page and "-5000" in page and "5000" in page


def test_payment_attempts_filter_flagged_for_review(client, operations, data):
    client.force_login(operations)
    page = client.get(changelist("wallets", "paymentattempt"), {"flagged": "yes"}).content.decode()
    assert str(data["flagged"].id) in page
    assert "1 payment attempt" in page


def test_pin_admin_never_shows_the_digest(client, superuser, data):
    client.force_login(superuser)
    pin = Pin.objects.get(pk=data["accounts.pin"])
    for url in (changelist("accounts", "pin"), change("accounts", "pin", pin.pk)):
        page = client.get(url).content.decode()
        assert pin.digest not in page
        assert "digest" not in page.lower()


def test_user_change_view_masks_the_password_hash(client, superuser, data):
    client.force_login(superuser)
    user = User.objects.get(pk=data["accounts.user"])
    page = client.get(change("accounts", "user", user.pk)).content.decode()
    assert user.password not in page
    assert user.password.split("$")[-1] not in page


def test_superuser_adds_a_staff_user_with_email_and_password(client, superuser):
    # given
    client.force_login(superuser)
    # when
    response = client.post(
        "/admin/accounts/user/add/",
        {
            "email": "New.Staff@example.com",
            "name": "New",
            "usable_password": "true",
            "password1": "a long staff password",
            "password2": "a long staff password",
        },
    )
    # then
    assert response.status_code == 302, response.content.decode()[:2000]
    user = User.objects.get(email="New.Staff@example.com")
    assert user.check_password("a long staff password")
    duplicate = client.post(
        "/admin/accounts/user/add/",
        {
            "email": "new.staff@EXAMPLE.com",
            "usable_password": "true",
            "password1": "a long staff password",
            "password2": "a long staff password",
        },
    )
    assert duplicate.status_code == 200
    assert "already exists" in duplicate.content.decode()
    assert User.objects.filter(email__iexact="new.staff@example.com").count() == 1


def test_operations_cannot_add_users(client, operations):
    client.force_login(operations)
    assert client.post("/admin/accounts/user/add/", {"email": "x@example.com"}).status_code == 403


def test_superuser_revokes_a_login(client, superuser, data):
    # given
    client.force_login(superuser)
    family = TokenFamily.objects.get(pk=data["accounts.tokenfamily"])
    # when
    response = client.post(
        changelist("accounts", "tokenfamily"), {"action": "revoke", ACTION_CHECKBOX_NAME: [str(family.pk)]}
    )
    # then
    assert response.status_code == 302
    family.refresh_from_db()
    assert family.revoked_at is not None and family.revoked_reason == "revoked_by_staff"
    assert AuditLog.objects.filter(action="login.revoke", actor=superuser).count() == 1


# --- freeze and unfreeze -------------------------------------------------------------


def _act(client, action: str, wallets: list[Wallet], **extra):
    body = {"action": action, ACTION_CHECKBOX_NAME: [str(w.pk) for w in wallets], **extra}
    return client.post(changelist("wallets", "wallet"), body)


def test_freeze_asks_for_a_reason_then_freezes_through_the_service(client, operations, data):
    # given
    client.force_login(operations)
    wallet = data["wallet"]
    # when: the action, chosen on the changelist
    asked = _act(client, "freeze", [wallet])
    # then: a confirmation page with the wallet and a reason field; nothing changed yet
    page = asked.content.decode()
    assert asked.status_code == 200
    assert "alice@wallet" in page and 'name="reason"' in page
    wallet.refresh_from_db()
    assert wallet.status == "active"

    # when: confirmed without a reason
    refused = _act(client, "freeze", [wallet], apply="yes", reason="   ")
    # then
    assert refused.status_code == 200 and "required" in refused.content.decode()
    wallet.refresh_from_db()
    assert wallet.status == "active"
    assert not AuditLog.objects.filter(action="wallet.freeze").exists()

    # when: confirmed with a reason
    done = _act(client, "freeze", [wallet], apply="yes", reason="chargeback investigation")
    # then
    assert done.status_code == 302
    wallet.refresh_from_db()
    assert (wallet.status, wallet.status_reason) == ("frozen", "chargeback investigation")
    audit = AuditLog.objects.get(action="wallet.freeze")
    assert (audit.actor_id, audit.actor_label, audit.target, audit.reason) == (
        operations.id,
        "ops@example.com",
        f"wallet:{wallet.id}",
        "chargeback investigation",
    )


def test_unfreeze_several_wallets_with_one_reason(client, operations, data):
    # given
    client.force_login(operations)
    wallets = [data["wallet"], data["other"]]
    for wallet in wallets:
        _act(client, "freeze", [wallet], apply="yes", reason="test")
    # when
    response = _act(client, "unfreeze", wallets, apply="yes", reason="cleared by compliance")
    # then
    assert response.status_code == 302
    assert set(Wallet.objects.values_list("status", flat=True)) == {"active"}
    assert AuditLog.objects.filter(action="wallet.unfreeze", reason="cleared by compliance").count() == 2


def test_support_cannot_freeze(client, support, data):
    # given
    client.force_login(support)
    wallet = data["wallet"]
    # when
    page = client.get(changelist("wallets", "wallet")).content.decode()
    response = _act(client, "freeze", [wallet], apply="yes", reason="not allowed")
    # then: no such action for support; the POST does nothing
    assert 'value="freeze"' not in page
    assert response.status_code in (200, 302)
    wallet.refresh_from_db()
    assert wallet.status == "active"
    assert not AuditLog.objects.filter(action="wallet.freeze").exists()


def test_operations_see_the_freeze_actions(client, operations, data):
    client.force_login(operations)
    page = client.get(changelist("wallets", "wallet")).content.decode()
    assert 'value="freeze"' in page and 'value="unfreeze"' in page


# --- reconciliation page ---------------------------------------------------------------


def test_operations_run_reconciliation_from_the_page(client, operations, data):
    # given
    client.force_login(operations)
    page = client.get(RECON_URL).content.decode()
    assert "Run reconciliation now" in page
    # when
    response = client.post(RECON_URL)
    # then
    run = ReconciliationRun.objects.latest("id")
    assert response.status_code == 302 and response["Location"] == f"{RECON_URL}?run={run.id}"
    assert run.triggered_by == "ops@example.com" and run.ok
    shown = client.get(response["Location"]).content.decode()
    assert "OK: the ledger reconciles" in shown
    assert f">{run.checked_accounts}<" in shown
    assert "Last 2 runs" in shown


def test_reconciliation_page_lists_every_mismatch(client, operations, data):
    # given: a drifted balance
    client.force_login(operations)
    wallet = data["wallet"]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE ledger_account SET balance = balance + 11 WHERE id = %s", [wallet.account_id])
    # when
    response = client.post(RECON_URL, follow=True)
    # then
    page = response.content.decode()
    assert "NOT OK: 3 mismatches" in page
    assert "balance_not_sum_of_entries" in page and "balance_not_last_balance_after" in page
    assert "balances_total_not_zero" in page
    assert f"account {wallet.account_id}" in page


def test_the_post_needs_a_csrf_token(operations, data):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operations)
    assert client.post(RECON_URL).status_code == 403
    assert ReconciliationRun.objects.count() == 1


def test_support_may_view_but_not_run_reconciliation(client, support, data):
    # given
    client.force_login(support)
    # when
    page = client.get(RECON_URL).content.decode()
    response = client.post(RECON_URL)
    # then
    assert "Run reconciliation now" not in page
    assert response.status_code == 403
    assert ReconciliationRun.objects.count() == 1


def test_reconciliation_changelist_links_the_page(client, support, data):
    client.force_login(support)
    assert RECON_URL in client.get(changelist("ledger", "reconciliationrun")).content.decode()


def test_reconciliation_run_change_view_shows_mismatches(client, support, data):
    run = ReconciliationRun.objects.create(
        started_at=timezone.now(),
        finished_at=timezone.now(),
        ok=False,
        checked_accounts=1,
        checked_transactions=0,
        total_balance=4,
        mismatches=[{"kind": "balances_total_not_zero", "currency": "INR", "expected": 0, "actual": 4, "detail": "d"}],
        triggered_by="t",
    )
    client.force_login(support)
    page = client.get(change("ledger", "reconciliationrun", run.pk)).content.decode()
    assert "balances_total_not_zero" in page and "<td>INR</td>" in page


# --- scale ------------------------------------------------------------------------------


def _more_rows(count: int) -> None:
    for _ in range(count):
        _, wallet = register_user()
        fund(wallet, 10)


@pytest.mark.parametrize("rows", [0, 25])
def test_changelists_run_a_bounded_number_of_queries(client, operations, data, rows, django_assert_max_num_queries):
    # given
    _more_rows(rows)
    client.force_login(operations)
    client.get("/admin/")  # the session and permission caches, as on any later page
    for app, model in MODELS:
        # when / then: the same handful of queries for 2 rows or 27 (no query per row)
        with django_assert_max_num_queries(7, info=f"{app}.{model}"):
            assert client.get(changelist(app, model)).status_code == 200


def test_changelists_never_count_a_whole_table(client, operations, data, monkeypatch, django_assert_max_num_queries):
    # given: a cap of 3 rows, and more wallets than that
    monkeypatch.setattr(ledger_admin.CappedPaginator, "cap", 3)
    _more_rows(3)
    client.force_login(operations)
    # when
    with CaptureQueriesContext(connection) as queries:
        page = client.get(changelist("wallets", "wallet")).content.decode()
    # then
    assert "3+ wallets" in page
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 4" in sql for sql in counts), counts


def test_account_list_shows_balance_held_and_available(client, support, data):
    client.force_login(support)
    account = Account.objects.get(pk=data["ledger.account"])
    page = client.get(changelist("ledger", "account"), {"q": str(account.id)}).content.decode()
    assert ">5000<" in page and "1 account" in page
