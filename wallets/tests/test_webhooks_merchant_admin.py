"""Notifications in the Django admin: the endpoint, delivery and email pages render for the
staff allowed to see them and are refused to everyone else, secrets never show, the
failing / dead-lettered filters, and the retry action (operations only, audited)."""

from __future__ import annotations

import pytest
from django.apps import apps as django_apps
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core import mail
from django.db import transaction
from django.urls import reverse

from accounts.models import User
from accounts.services import staff_create
from ledger.models import AuditLog
from ledger.outbox import outbox_emit
from wallets.models import EmailNotification, WebhookDelivery
from wallets.notifications import notification_emails_send, webhook_deliveries_enqueue, webhook_endpoint_create
from wallets.tests.factories import register_user

pytestmark = pytest.mark.django_db

PASSWORD = "staff password 1"
MODELS = ("webhookendpoint", "webhookdelivery", "emailnotification")


@pytest.fixture(autouse=True)
def _groups_have_the_notification_permissions():
    """A transactional test elsewhere may have flushed the groups; the seeding in conftest
    restores those of 0002 only, so this migration's grants are restored here."""
    import importlib

    migration = importlib.import_module("wallets.migrations.0006_notifications_staff_groups")
    migration.add_permissions(django_apps, None)


@pytest.fixture
def operations() -> User:
    return staff_create(email="ops@example.com", role="operations", password=PASSWORD)


@pytest.fixture
def support() -> User:
    return staff_create(email="support@example.com", role="support", password=PASSWORD)


@pytest.fixture
def superuser() -> User:
    return User.objects.create_superuser("root@example.com", PASSWORD)


@pytest.fixture
def data() -> dict:
    """An endpoint with three deliveries (delivered, failing, dead) and a sent email."""
    _, merchant = register_user(role="merchant")
    _, customer = register_user()
    endpoint, secret = webhook_endpoint_create(wallet=merchant, url="https://hooks.example.com/wallet")
    with transaction.atomic():
        events = [
            outbox_emit(
                type="payment.received",
                payload={"wallet_ids": [str(customer.id), str(merchant.id)], "amount": n, "currency": "INR"},
            )
            for n in (100, 200, 300)
        ]
    for event in events:
        webhook_deliveries_enqueue(event)
    delivered, failing, dead = WebhookDelivery.objects.order_by("id")
    WebhookDelivery.objects.filter(id=delivered.id).update(status="delivered", attempts=1, last_status_code=200)
    WebhookDelivery.objects.filter(id=failing.id).update(attempts=2, last_status_code=503, last_error="HTTP 503")
    WebhookDelivery.objects.filter(id=dead.id).update(status="dead", attempts=8, last_error="HTTP 500")
    mail.outbox.clear()
    notification_emails_send(events[0])
    return {
        "endpoint": endpoint,
        "secret": secret,
        "delivered": delivered,
        "failing": failing,
        "dead": dead,
        "email": EmailNotification.objects.order_by("id").first(),
    }


def _pk(data: dict, model: str):
    return {
        "webhookendpoint": data["endpoint"].pk,
        "webhookdelivery": data["dead"].pk,
        "emailnotification": data["email"].pk,
    }[model]


def changelist(model: str) -> str:
    return reverse(f"admin:wallets_{model}_changelist")


def change(model: str, pk) -> str:
    return reverse(f"admin:wallets_{model}_change", args=[pk])


@pytest.mark.parametrize("who", ["superuser", "operations", "support"])
def test_every_page_renders_for_staff_and_never_shows_a_secret(client, request, data, who):
    # given
    client.force_login(request.getfixturevalue(who))
    for model in MODELS:
        # when
        listed = client.get(changelist(model))
        shown = client.get(change(model, _pk(data, model)))
        # then
        assert listed.status_code == 200, (model, listed.status_code)
        assert shown.status_code == 200, (model, shown.status_code)
        for page in (listed, shown):
            assert data["secret"] not in page.content.decode()
            assert "secret" not in page.content.decode().lower()


def test_non_staff_and_staff_without_permissions_are_refused(client, data):
    # given
    customer, _ = register_user()
    bare = User.objects.create_user("bare@example.com", PASSWORD, is_staff=True)
    for model in MODELS:
        # when / then
        client.force_login(customer)
        response = client.get(changelist(model))
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
        client.force_login(bare)
        assert client.get(changelist(model)).status_code == 403
        assert client.get(change(model, _pk(data, model))).status_code == 403


@pytest.mark.parametrize("who", ["superuser", "operations"])
def test_nothing_can_be_added_changed_or_deleted(client, request, data, who):
    client.force_login(request.getfixturevalue(who))
    for model in MODELS:
        pk = _pk(data, model)
        assert client.post(f"/admin/wallets/{model}/add/", {}).status_code == 403
        assert client.post(f"/admin/wallets/{model}/{pk}/delete/", {"post": "yes"}).status_code == 403
        assert client.post(change(model, pk), {"url": "https://evil.example.com"}).status_code == 403
    assert WebhookDelivery.objects.count() == 3
    data["endpoint"].refresh_from_db()
    assert data["endpoint"].url == "https://hooks.example.com/wallet"


def test_deliveries_filter_failing_and_dead_lettered(client, support, data):
    client.force_login(support)
    failing = client.get(changelist("webhookdelivery"), {"status": "failing"}).content.decode()
    dead = client.get(changelist("webhookdelivery"), {"status": "dead"}).content.decode()
    assert data["failing"].public_event_id in failing
    assert data["dead"].public_event_id not in failing and data["delivered"].public_event_id not in failing
    assert data["dead"].public_event_id in dead and data["failing"].public_event_id not in dead
    assert "HTTP 503" in failing


def test_deliveries_are_found_by_the_event_id_the_merchant_sees(client, support, data):
    client.force_login(support)
    found = client.get(changelist("webhookdelivery"), {"q": data["dead"].public_event_id}).content.decode()
    nothing = client.get(changelist("webhookdelivery"), {"q": "evt_nothex"}).content.decode()
    assert data["dead"].public_event_id in found and data["failing"].public_event_id not in found
    assert "0 webhook deliveries" in nothing


def test_operations_retry_dead_and_failing_deliveries(client, operations, data):
    # given
    client.force_login(operations)
    selected = [data["dead"].pk, data["failing"].pk, data["delivered"].pk]
    # when
    response = client.post(
        changelist("webhookdelivery"), {"action": "retry", ACTION_CHECKBOX_NAME: selected}, follow=True
    )
    # then
    assert response.status_code == 200
    page = response.content.decode()
    assert "2 delivery(ies) offered again now" in page
    assert "1 were delivered or cancelled already" in page
    rows = {d.id: d for d in WebhookDelivery.objects.all()}
    assert (rows[data["dead"].pk].status, rows[data["dead"].pk].attempts) == ("pending", 0)
    assert (rows[data["failing"].pk].status, rows[data["failing"].pk].attempts) == ("pending", 0)
    assert rows[data["delivered"].pk].status == "delivered"
    audits = AuditLog.objects.filter(action="webhook_delivery.retry").order_by("id")
    assert [a.target for a in audits] == [
        f"webhook_delivery:{data['failing'].pk}",
        f"webhook_delivery:{data['dead'].pk}",
    ]
    assert all(a.actor_id == operations.id for a in audits)


def test_support_cannot_retry(client, support, data):
    # given
    client.force_login(support)
    # when
    page = client.get(changelist("webhookdelivery")).content.decode()
    response = client.post(changelist("webhookdelivery"), {"action": "retry", ACTION_CHECKBOX_NAME: [data["dead"].pk]})
    # then
    assert 'value="retry"' not in page
    assert response.status_code in (200, 302)
    data["dead"].refresh_from_db()
    assert data["dead"].status == "dead"
    assert not AuditLog.objects.filter(action="webhook_delivery.retry").exists()
