"""The adjustment approval queue and maker form in the Django admin: pages permitted and
refused, making, approving (never by the maker) and rejecting through the same services as
the API."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.urls import reverse

from accounts.models import User
from accounts.services import staff_create
from ledger.models import AuditLog, Transaction
from ledger.tests.invariants import assert_ledger_consistent
from wallets.adjustments import adjustment_create
from wallets.models import Adjustment
from wallets.tests.factories import register_user
from wallets.tests.money import balance_of, fund

pytestmark = pytest.mark.django_db

PASSWORD = "staff password 1"
LIST = reverse("admin:wallets_adjustment_changelist")
ADD = reverse("admin:wallets_adjustment_add")


@pytest.fixture
def maker(db) -> User:
    return staff_create(email="maker@example.com", role="operations", password=PASSWORD)


@pytest.fixture
def checker(db) -> User:
    return staff_create(email="checker@example.com", role="operations", password=PASSWORD)


@pytest.fixture
def support(db) -> User:
    return staff_create(email="support@example.com", role="support", password=PASSWORD)


@pytest.fixture
def wallet(db):
    _, wallet = register_user(email="alice@example.com")
    fund(wallet, 3_000)
    return wallet


@pytest.fixture
def pending(maker, wallet) -> Adjustment:
    return adjustment_create(
        maker=maker, from_ref=wallet.handle, to_ref="system:adjustments", amount=1_000, reason="chargeback 42"
    )


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.mark.parametrize("who", ["maker", "support"])
def test_queue_and_detail_render_for_staff(client, request, who, pending):
    # given
    client.force_login(request.getfixturevalue(who))
    # when
    listed = client.get(LIST, {"queue": "pending"})
    shown = client.get(reverse("admin:wallets_adjustment_change", args=[pending.pk]))
    # then
    assert listed.status_code == 200 and str(pending.id) in listed.content.decode()
    assert shown.status_code == 200 and "chargeback 42" in shown.content.decode()


def test_pages_are_refused_to_staff_without_permission_and_to_customers(client, pending):
    # given
    bare = User.objects.create_user("bare@example.com", PASSWORD, is_staff=True)
    customer, _ = register_user()
    # when / then
    client.force_login(bare)
    assert client.get(LIST).status_code == 403
    assert client.get(ADD).status_code == 403
    client.force_login(customer)
    assert client.get(LIST).status_code == 302
    assert client.get(ADD).status_code == 302


def test_the_make_form_is_for_makers_only(client, maker, support):
    # when / then
    client.force_login(support)
    assert client.get(ADD).status_code == 403
    assert "Add adjustment" not in client.get(LIST).content.decode()
    client.force_login(maker)
    assert client.get(ADD).status_code == 200


def test_a_maker_records_an_adjustment_and_nothing_moves(client, maker, wallet):
    # given
    client.force_login(maker)
    transactions = Transaction.objects.count()
    # when
    response = client.post(
        ADD, {"source": "system:adjustments", "target": wallet.handle, "amount": "250", "reason": "goodwill"}
    )
    # then
    adjustment = Adjustment.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("admin:wallets_adjustment_change", args=[adjustment.pk])
    assert (adjustment.status, adjustment.amount, adjustment.created_by_id) == ("pending_approval", 250, maker.id)
    assert Transaction.objects.count() == transactions
    assert AuditLog.objects.filter(action="adjustment.created", target=f"adjustment:{adjustment.id}").exists()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"source": "system:adjustments", "target": "nobody@wallet", "amount": "1", "reason": "r"}, "No wallet"),
        ({"source": "system:fees", "target": "WALLET", "amount": "1", "reason": "r"}, "system:adjustments"),
        ({"source": "system:adjustments", "target": "WALLET", "amount": "0", "reason": "r"}, "greater than"),
        ({"source": "system:adjustments", "target": "WALLET", "amount": "1", "reason": "  "}, "required"),
        ({"source": "WALLET", "target": "WALLET", "amount": "1", "reason": "r"}, "two different accounts"),
    ],
)
def test_bad_make_forms_are_shown_again_and_record_nothing(client, maker, wallet, data, error):
    # given
    client.force_login(maker)
    data = {k: wallet.handle if v == "WALLET" else v for k, v in data.items()}
    # when
    response = client.post(ADD, data)
    # then
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Adjustment.objects.exists()


def _action(client, action: str, adjustment: Adjustment, **extra):
    return client.post(LIST, {"action": action, ACTION_CHECKBOX_NAME: [str(adjustment.pk)], **extra})


def test_the_maker_cannot_approve_their_own_and_is_told_so(client, maker, pending, wallet):
    # given
    client.force_login(maker)
    # when
    confirm = _action(client, "approve", pending)
    applied = _action(client, "approve", pending, apply="yes")
    # then
    assert confirm.status_code == 200 and "You made 1 of these" in confirm.content.decode()
    assert applied.status_code == 302
    assert any("A different staff member must approve" in m for m in _messages(applied))
    pending.refresh_from_db()
    assert pending.status == "pending_approval"
    assert balance_of(wallet) == 3_000
    assert_ledger_consistent()


def test_a_checker_approves_from_the_queue(client, checker, pending, wallet):
    # given
    client.force_login(checker)
    # when
    confirm = _action(client, "approve", pending)
    applied = _action(client, "approve", pending, apply="yes")
    again = _action(client, "approve", pending, apply="yes")
    # then
    assert confirm.status_code == 200 and "chargeback 42" in confirm.content.decode()
    assert applied.status_code == 302 and any("Approved and posted 1" in m for m in _messages(applied))
    assert any("not pending approval" in m for m in _messages(again))
    pending.refresh_from_db()
    assert (pending.status, pending.decided_by_id) == ("posted", checker.id)
    assert Transaction.objects.filter(reference=f"adjustment:{pending.id}").count() == 1
    assert balance_of(wallet) == 2_000
    assert_ledger_consistent()


def test_an_approval_the_ledger_refuses_is_reported_and_stays_pending(client, maker, checker, wallet):
    # given
    too_much = adjustment_create(
        maker=maker, from_ref=wallet.handle, to_ref="system:adjustments", amount=3_001, reason="r"
    )
    client.force_login(checker)
    # when
    applied = _action(client, "approve", too_much, apply="yes")
    # then
    assert any("enough available money" in m for m in _messages(applied))
    too_much.refresh_from_db()
    assert too_much.status == "pending_approval"
    assert_ledger_consistent()


def test_a_checker_rejects_with_a_reason(client, checker, pending):
    # given
    client.force_login(checker)
    # when
    confirm = _action(client, "reject", pending)
    no_reason = _action(client, "reject", pending, apply="yes", reason=" ")
    applied = _action(client, "reject", pending, apply="yes", reason="duplicate of another")
    # then
    assert confirm.status_code == 200 and 'name="reason"' in confirm.content.decode()
    assert no_reason.status_code == 200 and "This field is required" in no_reason.content.decode()
    assert applied.status_code == 302
    pending.refresh_from_db()
    assert (pending.status, pending.decision_reason) == ("rejected", "duplicate of another")
    assert AuditLog.objects.filter(action="adjustment.rejected", actor=checker).count() == 1


def test_support_cannot_approve_or_reject(client, support, pending):
    # given
    client.force_login(support)
    # when
    page = client.get(LIST).content.decode()
    response = _action(client, "approve", pending, apply="yes")
    # then
    assert 'value="approve"' not in page and 'value="reject"' not in page
    assert response.status_code in (200, 302)
    pending.refresh_from_db()
    assert pending.status == "pending_approval"


def test_adjustments_cannot_be_changed_or_deleted_in_the_admin(client, checker, pending):
    # given
    client.force_login(checker)
    url = reverse("admin:wallets_adjustment_change", args=[pending.pk])
    # when
    changed = client.post(url, {"amount": "1", "status": "posted"})
    deleted = client.post(reverse("admin:wallets_adjustment_delete", args=[pending.pk]), {"post": "yes"})
    # then
    assert changed.status_code == 403 and deleted.status_code == 403
    pending.refresh_from_db()
    assert (pending.status, pending.amount) == ("pending_approval", 1_000)
