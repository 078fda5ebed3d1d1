"""The merchant payment pages of the Django admin: payments, refunds, cashback grants,
campaigns and merchant fees render for permitted staff and are refused otherwise; money
tables are read-only; campaigns are created, paused and resumed (and fees set) through the
services, by operations only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from accounts.services import staff_create
from ledger.models import AuditLog
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import CashbackCampaign, CashbackGrant, MerchantProfile, Payment, Refund
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import fund
from wallets.tests.test_payments import campaign, fund_pool, merchant, pay, refund

pytestmark = pytest.mark.django_db

PASSWORD = "staff password 1"
MODELS = ("payment", "refund", "cashbackgrant", "cashbackcampaign", "merchantprofile")
READ_ONLY = ("payment", "refund", "cashbackgrant")


@pytest.fixture
def operations(db) -> User:
    return staff_create(email="ops@example.com", role="operations", password=PASSWORD)


@pytest.fixture
def support(db) -> User:
    return staff_create(email="support@example.com", role="support", password=PASSWORD)


@pytest.fixture
def data(db, api) -> dict:
    """A payment with cashback and a partial refund: a row in every table."""
    customer, wallet = register_user()
    fund(wallet, 10_000)
    merchant_user, merchant_wallet = merchant(fee_bps=200)
    fund_pool(1_000)
    running = campaign(bps=1000)
    paid = pay(api, auth_header(customer), merchant=merchant_wallet.handle, amount=5_000).json()
    refund(api, auth_header(merchant_user), paid["transaction"]["id"], amount=1_000)
    payment = Payment.objects.get()
    return {
        "payment": payment.pk,
        "refund": Refund.objects.get().pk,
        "cashbackgrant": CashbackGrant.objects.get().pk,
        "cashbackcampaign": running.pk,
        "merchantprofile": MerchantProfile.objects.get().pk,
        "merchant_wallet": merchant_wallet,
        "customer_wallet": wallet,
        "txn": paid["transaction"]["id"],
    }


def changelist(model: str) -> str:
    return reverse(f"admin:wallets_{model}_changelist")


def change(model: str, pk) -> str:
    return reverse(f"admin:wallets_{model}_change", args=[pk])


@pytest.mark.parametrize("who", ["operations", "support"])
def test_every_page_renders_for_staff(client, request, data, who):
    # given
    client.force_login(request.getfixturevalue(who))
    for model in MODELS:
        # when
        listed = client.get(changelist(model))
        shown = client.get(change(model, data[model]))
        # then
        assert listed.status_code == 200, (model, listed.status_code)
        assert shown.status_code == 200, (model, shown.status_code)
    page = client.get(changelist("cashbackcampaign")).content.decode()
    # The budget spent is on the list: 10% of 5_000 = 500 of 1_000_000.
    assert ">500<" in page
    assert "running" in page
    assert_ledger_consistent()


def test_payments_are_found_by_transaction_id_and_by_wallet_handle(client, support, data):
    # given
    client.force_login(support)
    # when / then
    for term in (data["txn"], data["merchant_wallet"].handle, data["customer_wallet"].handle):
        page = client.get(changelist("payment"), {"q": term}).content.decode()
        assert data["txn"] in page, term
    assert data["txn"] not in client.get(changelist("payment"), {"q": "someone@wallet"}).content.decode()


def test_customers_and_bare_staff_are_refused(client, data):
    # given
    customer, _ = register_user()
    client.force_login(customer)
    # then: non-staff go to the login page
    for model in MODELS:
        response = client.get(changelist(model))
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    # given: staff without a group
    client.force_login(User.objects.create_user("bare@example.com", PASSWORD, is_staff=True))
    # then
    for model in MODELS:
        assert client.get(changelist(model)).status_code == 403, model


@pytest.mark.parametrize("who", ["operations", "support"])
def test_money_tables_cannot_be_added_to_changed_or_deleted(client, request, data, who):
    # given
    client.force_login(request.getfixturevalue(who))
    counts = (Payment.objects.count(), Refund.objects.count(), CashbackGrant.objects.count())
    for model in READ_ONLY:
        # when
        added = client.post(f"/admin/wallets/{model}/add/", {})
        deleted = client.post(f"/admin/wallets/{model}/{data[model]}/delete/", {"post": "yes"})
        # then
        assert added.status_code == 403, model
        assert deleted.status_code == 403, model
    assert (Payment.objects.count(), Refund.objects.count(), CashbackGrant.objects.count()) == counts


def _campaign_form(**kwargs) -> dict:
    now = timezone.now()
    form = {
        "name": "Weekend",
        "bps": "300",
        "cap_per_payment": "2000",
        "budget": "50000",
        "starts_at_0": (now - timedelta(minutes=5)).strftime("%Y-%m-%d"),
        "starts_at_1": (now - timedelta(minutes=5)).strftime("%H:%M:%S"),
        "ends_at_0": (now + timedelta(days=2)).strftime("%Y-%m-%d"),
        "ends_at_1": (now + timedelta(days=2)).strftime("%H:%M:%S"),
        "merchant_wallet": "",
    }
    form.update(kwargs)
    return form


def test_operations_create_a_campaign_through_the_service(client, operations, data):
    # given
    client.force_login(operations)
    # when
    response = client.post("/admin/wallets/cashbackcampaign/add/", _campaign_form())
    # then
    assert response.status_code == 302, response.content.decode()[:2000]
    created = CashbackCampaign.objects.get(name="Weekend")
    assert (created.bps, created.budget, created.spent, created.created_by) == (300, 50_000, 0, operations)
    assert AuditLog.objects.filter(action="campaign.create", target=f"campaign:{created.id}").exists()


def test_a_bad_campaign_form_creates_nothing(client, operations, data):
    # given
    client.force_login(operations)
    customer_wallet = data["customer_wallet"]
    for bad in (
        {"bps": "0"},
        {"budget": "0"},
        {"ends_at_0": "2000-01-01"},
        {"merchant_wallet": str(customer_wallet.id)},
    ):
        # when
        response = client.post("/admin/wallets/cashbackcampaign/add/", _campaign_form(**bad))
        # then
        assert response.status_code == 200, bad
        assert not CashbackCampaign.objects.filter(name="Weekend").exists(), bad


def test_support_cannot_create_pause_or_set_fees(client, support, data):
    # given
    client.force_login(support)
    # when
    added = client.post("/admin/wallets/cashbackcampaign/add/", _campaign_form())
    paused = client.post(
        changelist("cashbackcampaign"), {"action": "pause", ACTION_CHECKBOX_NAME: [data["cashbackcampaign"]]}
    )
    fee = client.post(change("merchantprofile", data["merchantprofile"]), {"fee_bps": "0"})
    # then
    assert added.status_code == 403
    assert paused.status_code == 200  # the changelist again: the action is not offered
    assert 'value="pause"' not in client.get(changelist("cashbackcampaign")).content.decode()
    assert CashbackCampaign.objects.get(pk=data["cashbackcampaign"]).status == "active"
    assert fee.status_code == 403
    assert MerchantProfile.objects.get().fee_bps == 200


def test_operations_pause_and_resume_campaigns(client, operations, data):
    # given
    client.force_login(operations)
    selected = {ACTION_CHECKBOX_NAME: [data["cashbackcampaign"]]}
    # when
    client.post(changelist("cashbackcampaign"), {"action": "pause", **selected})
    # then
    assert CashbackCampaign.objects.get(pk=data["cashbackcampaign"]).status == "paused"
    # when
    client.post(changelist("cashbackcampaign"), {"action": "resume", **selected})
    # then
    assert CashbackCampaign.objects.get(pk=data["cashbackcampaign"]).status == "active"
    assert AuditLog.objects.filter(action__in=["campaign.pause", "campaign.resume"]).count() == 2


def test_operations_set_a_merchant_fee_through_the_service(client, operations, data):
    # given
    client.force_login(operations)
    # when
    response = client.post(change("merchantprofile", data["merchantprofile"]), {"fee_bps": "75"})
    # then
    assert response.status_code == 302
    assert MerchantProfile.objects.get().fee_bps == 75
    assert AuditLog.objects.filter(action="merchant.fee_set", data__fee_bps=75).exists()
    # and a fee out of range is refused
    refused = client.post(change("merchantprofile", data["merchantprofile"]), {"fee_bps": "10001"})
    assert refused.status_code == 200
    assert MerchantProfile.objects.get().fee_bps == 75
