"""The withdrawal pages of the Django admin: each renders for permitted staff and is refused
otherwise, bank account numbers are masked, the stuck and flagged filters, and the
"re-check with the bank" action (operations only), which calls the recovery service and
asks the sandbox bank over real HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from accounts.services import staff_create
from ledger.models import AuditLog
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import BankEvent, SandboxPayout, Withdrawal
from wallets.tests.factories import register_user
from wallets.tests.test_withdrawals import ACCOUNT_NUMBER, bank_event, funded_withdrawal
from wallets.withdrawals import _claim_next, bank_event_process
from walletsite.breaker import breakers_reset

PASSWORD = "staff password 1"
PAGES = ("withdrawal", "bankaccount", "bankevent")


def changelist(model: str) -> str:
    return reverse(f"admin:wallets_{model}_changelist")


def change(model: str, pk) -> str:
    # Admin URLs carry primary keys quoted (an event id's "_" would otherwise be read as an
    # escape).
    return reverse(f"admin:wallets_{model}_change", args=[quote(pk)])


@pytest.fixture
def operations(db) -> User:
    return staff_create(email="ops@example.com", role="operations", password=PASSWORD)


@pytest.fixture
def support(db) -> User:
    return staff_create(email="support@example.com", role="support", password=PASSWORD)


@pytest.fixture
def superuser(db) -> User:
    return User.objects.create_superuser("root@example.com", PASSWORD)


@pytest.fixture
def rows(db) -> dict:
    """A settled withdrawal with its callback event, a stuck one, and a flagged one."""
    _, settled = funded_withdrawal(amount=1000, funds=5000)
    bank_event_process(event=bank_event(settled, "succeeded"))
    _, stuck = funded_withdrawal(amount=2000, funds=5000)
    _claim_next()
    Withdrawal.objects.filter(id=stuck.id).update(updated_at=timezone.now() - timedelta(hours=1))
    _, flagged = funded_withdrawal(amount=3000, funds=5000)
    bank_event_process(event=bank_event(flagged, "succeeded", amount=1))
    return {
        "withdrawal": settled.pk,
        "bankaccount": settled.bank_account_id,
        "bankevent": BankEvent.objects.filter(withdrawal=settled).get().pk,
        "settled": settled,
        "stuck": stuck,
        "flagged": flagged,
    }


@pytest.mark.parametrize("who", ["superuser", "operations", "support"])
def test_every_page_renders_for_staff_and_never_shows_an_account_number(client, request, rows, who):
    # given
    client.force_login(request.getfixturevalue(who))
    for model in PAGES:
        # when
        listed = client.get(changelist(model))
        shown = client.get(change(model, rows[model]))
        # then
        assert listed.status_code == 200, (model, listed.status_code)
        assert shown.status_code == 200, (model, shown.status_code)
        for page in (listed, shown):
            assert ACCOUNT_NUMBER not in page.content.decode(), model
    assert "****7890" in client.get(changelist("bankaccount")).content.decode()
    assert "****7890" in client.get(change("withdrawal", rows["withdrawal"])).content.decode()


def test_customers_anonymous_and_bare_staff_are_refused(client, rows):
    # given
    customer, _ = register_user()
    bare = User.objects.create_user("bare@example.com", PASSWORD, is_staff=True)
    for model in PAGES:
        # when / then
        client.logout()
        assert client.get(changelist(model)).status_code == 302
        client.force_login(customer)
        response = client.get(changelist(model))
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
        client.force_login(bare)
        assert client.get(changelist(model)).status_code == 403


@pytest.mark.parametrize("who", ["superuser", "operations"])
def test_withdrawals_cannot_be_added_changed_or_deleted(client, request, rows, who):
    # given
    client.force_login(request.getfixturevalue(who))
    before = Withdrawal.objects.count()
    pk = rows["withdrawal"]
    # when
    added = client.post("/admin/wallets/withdrawal/add/", {})
    deleted = client.post(f"/admin/wallets/withdrawal/{pk}/delete/", {"post": "yes"})
    changed = client.post(change("withdrawal", pk), {"status": "failed"})
    # then
    assert added.status_code == 403 and deleted.status_code == 403
    assert changed.status_code == 403
    assert Withdrawal.objects.count() == before
    assert Withdrawal.objects.get(pk=pk).status == "succeeded"


def test_the_stuck_and_flagged_filters(client, operations, rows):
    # given
    client.force_login(operations)
    # when
    stuck = client.get(changelist("withdrawal"), {"stuck": "yes"}).content.decode()
    flagged = client.get(changelist("withdrawal"), {"flagged": "yes"}).content.decode()
    # then
    assert str(rows["stuck"].id) in stuck
    assert str(rows["settled"].id) not in stuck and str(rows["flagged"].id) not in stuck
    assert str(rows["flagged"].id) in flagged
    assert str(rows["settled"].id) not in flagged and str(rows["stuck"].id) not in flagged


def test_operations_see_the_recheck_action_and_support_does_not(client, operations, support, rows):
    # given / when
    client.force_login(operations)
    for_operations = client.get(changelist("withdrawal")).content.decode()
    client.force_login(support)
    for_support = client.get(changelist("withdrawal")).content.decode()
    refused = client.post(
        changelist("withdrawal"), {"action": "recheck", ACTION_CHECKBOX_NAME: [str(rows["stuck"].id)]}
    )
    # then
    assert 'value="recheck"' in for_operations
    assert 'value="recheck"' not in for_support
    assert refused.status_code == 200  # Django answers an action the user may not run with the list again
    assert not AuditLog.objects.filter(action="withdrawal.recheck").exists()
    assert Withdrawal.objects.get(id=rows["stuck"].id).status == "submitting"


@pytest.mark.django_db(transaction=True)
def test_recheck_asks_the_bank_and_sends_a_payout_it_never_received(client, live_server, settings):
    # given: a withdrawal a crashed worker left submitting; the sandbox bank is reachable
    breakers_reset()
    settings.WALLET = {**settings.WALLET, "PUBLIC_URL": live_server.url, "BANK_URL": "", "SANDBOX_BANK_MODE": "manual"}
    staff = User.objects.create_superuser("root@example.com", PASSWORD)
    _, withdrawal = funded_withdrawal(amount=1500, funds=5000)
    _claim_next()
    client.force_login(staff)
    # when
    response = client.post(
        changelist("withdrawal"), {"action": "recheck", ACTION_CHECKBOX_NAME: [str(withdrawal.id)]}, follow=True
    )
    again = client.post(
        changelist("withdrawal"), {"action": "recheck", ACTION_CHECKBOX_NAME: [str(withdrawal.id)]}, follow=True
    )
    # then: sent once (the bank had no record), then found processing at the bank
    assert response.status_code == 200
    assert "Re-checked 1 withdrawal(s) with the bank: 1 submitted." in response.content.decode()
    assert "1 waiting" in again.content.decode()
    assert SandboxPayout.objects.get(reference=str(withdrawal.id)).submissions == 1
    withdrawal.refresh_from_db()
    assert withdrawal.status == "submitted"
    audits = AuditLog.objects.filter(action="withdrawal.recheck", target=f"withdrawal:{withdrawal.id}")
    assert [a.data["result"] for a in audits.order_by("id")] == ["submitted", "waiting"]
    assert audits.first().actor_id == staff.id
    assert_ledger_consistent()
