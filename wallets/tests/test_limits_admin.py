"""KYC tiers in the Django admin: the tier pages (seen by staff, edited by superusers only) and
the audited "Change KYC tier" action on users."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from accounts.models import Tier, User
from accounts.services import staff_create
from ledger.models import AuditLog
from wallets.tests.factories import register_user

pytestmark = pytest.mark.django_db

PASSWORD = "staff password 1"
TIERS = reverse("admin:accounts_tier_changelist")
USERS = reverse("admin:accounts_user_changelist")


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
def customer(db) -> User:
    return register_user(email="alice@example.com")[0]


def _tier_url(code: str) -> str:
    return reverse("admin:accounts_tier_change", args=[code])


@pytest.mark.parametrize("who", ["operations", "support", "superuser"])
def test_tier_pages_render_for_staff(client, request, who):
    # given
    client.force_login(request.getfixturevalue(who))
    # when
    listed = client.get(TIERS)
    shown = client.get(_tier_url("basic"))
    # then
    assert listed.status_code == 200 and "verified" in listed.content.decode()
    assert shown.status_code == 200 and "1000000" in shown.content.decode()


def test_tier_pages_are_refused_to_others(client, customer):
    # given
    bare = User.objects.create_user("bare@example.com", PASSWORD, is_staff=True)
    # when / then
    client.force_login(bare)
    assert client.get(TIERS).status_code == 403
    client.force_login(customer)
    assert client.get(TIERS).status_code == 302


def _limits(**overrides) -> dict:
    return {
        "name": "Basic",
        "per_transaction_limit": "500000",
        "daily_outgoing_limit": "2000000",
        "monthly_outgoing_limit": "10000000",
        "balance_ceiling": "10000000",
        **overrides,
    }


def test_only_a_superuser_edits_a_tiers_limits(client, operations, superuser):
    # when
    client.force_login(operations)
    refused = client.post(_tier_url("basic"), _limits())
    client.force_login(superuser)
    edited = client.post(_tier_url("basic"), _limits())
    # then
    assert refused.status_code == 403
    assert edited.status_code == 302
    assert Tier.objects.get(code="basic").per_transaction_limit == 500_000


def test_tiers_cannot_be_deleted(client, superuser):
    # given
    client.force_login(superuser)
    # when
    response = client.post(reverse("admin:accounts_tier_delete", args=["basic"]), {"post": "yes"})
    # then
    assert response.status_code == 403
    assert Tier.objects.filter(code="basic").exists()


def _change_tier(client, user: User, **extra):
    return client.post(USERS, {"action": "change_tier", ACTION_CHECKBOX_NAME: [str(user.pk)], **extra})


def test_operations_change_a_users_tier_with_a_reason_and_it_is_audited(client, operations, customer):
    # given
    client.force_login(operations)
    # when
    form = _change_tier(client, customer)
    no_reason = _change_tier(client, customer, apply="yes", tier="verified", reason="")
    applied = _change_tier(client, customer, apply="yes", tier="verified", reason="Aadhaar and PAN checked")
    # then
    assert form.status_code == 200 and "alice@example.com, now Basic" in form.content.decode()
    assert no_reason.status_code == 200 and "This field is required" in no_reason.content.decode()
    assert applied.status_code == 302
    customer.refresh_from_db()
    assert customer.tier_id == "verified"
    log = AuditLog.objects.get(action="user.tier_changed", target=f"user:{customer.id}")
    assert (log.actor_id, log.reason, log.data["from"], log.data["to"]) == (
        operations.id,
        "Aadhaar and PAN checked",
        "basic",
        "verified",
    )


def test_support_cannot_change_a_tier(client, support, customer):
    # given
    client.force_login(support)
    # when
    page = client.get(USERS).content.decode()
    _change_tier(client, customer, apply="yes", tier="verified", reason="r")
    # then
    assert 'value="change_tier"' not in page
    customer.refresh_from_db()
    assert customer.tier_id == "basic"
    assert not AuditLog.objects.filter(action="user.tier_changed").exists()


def test_the_user_form_shows_the_tier_but_does_not_change_it(client, superuser, customer):
    # given
    client.force_login(superuser)
    url = reverse("admin:accounts_user_change", args=[customer.pk])
    # when
    page = client.get(url).content.decode()
    # then: shown read-only, not as a select
    assert "Basic" in page and 'name="tier"' not in page
