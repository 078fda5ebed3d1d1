"""Merchant webhook URLs cannot make the worker reach inside the deployment (SSRF).

webhook_url_validate refuses private addresses written into a URL at registration, but a
URL names a host, and the host decides where it points: a public-looking name resolving to
127.0.0.1 or the cloud metadata address, a shorthand such as `127.1`, or a receiver that
redirects. In production every delivery resolves the host and refuses any address that is
not public, connects to the address it checked (no DNS rebinding in between), and no
delivery ever follows a redirect. DNS is the outside world here: the tests answer lookups
of made-up names themselves and leave every other lookup to the real resolver.
"""

from __future__ import annotations

import socket
import urllib.request
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from ledger.models import OutboxEvent
from ledger.outbox import outbox_emit
from wallets import gateway
from wallets.models import WebhookDelivery
from wallets.notifications import (
    webhook_deliveries_claim,
    webhook_deliveries_enqueue,
    webhook_delivery_attempt,
    webhook_endpoint_create,
)
from wallets.tests import webhook_receiver as rx
from wallets.tests.factories import register_user

pytestmark = pytest.mark.django_db

_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture
def receiver():
    started = rx.receiver_start()
    yield started
    rx.receiver_stop(started)


@pytest.fixture
def dns(monkeypatch):
    """Answers for made-up host names: {name: [addresses]}; other names resolve for real."""
    answers: dict[str, list[str]] = {}

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            family = {True: socket.AF_INET6, False: socket.AF_INET}
            return [
                (family[":" in a], socket.SOCK_STREAM, 6, "", (a, port) if ":" not in a else (a, port, 0, 0))
                for a in answers[host]
            ]
        return _real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def _deliver_once(url: str) -> WebhookDelivery:
    """Register `url` for a merchant, emit one event for it, and make one delivery attempt."""
    _, merchant = register_user(role="merchant")
    endpoint, _ = webhook_endpoint_create(wallet=merchant, url=url)
    with transaction.atomic():
        OutboxEvent.objects.filter(delivered_at__isnull=True).update(available_at=timezone.now() + timedelta(days=1))
        event = outbox_emit(type="payment.received", payload={"wallet_ids": [str(merchant.id)], "amount": 1})
    webhook_deliveries_enqueue(event)
    (delivery,) = [d for d in webhook_deliveries_claim(limit=10) if d.endpoint_id == endpoint.id]
    webhook_delivery_attempt(delivery=delivery)
    return WebhookDelivery.objects.get(id=delivery.id)


@pytest.mark.parametrize(
    ("host", "addresses"),
    [
        ("hooks.loopback.test", ["127.0.0.1"]),
        ("hooks.private.test", ["10.0.0.7"]),
        ("hooks.metadata.test", ["169.254.169.254"]),
        ("hooks.v6.test", ["::1"]),
        # one private address among public ones is enough to refuse
        ("hooks.mixed.test", ["93.184.216.34", "192.168.1.20"]),
    ],
)
def test_a_name_pointing_inside_is_refused_when_delivering_in_production(settings, dns, receiver, host, addresses):
    # given: production; the name passes registration (it is a name), then points inside
    settings.PRODUCTION = True
    dns[host] = addresses
    port = receiver.server.server_address[1]

    # when
    delivery = _deliver_once(f"https://{host}:{port}/hooks")

    # then: nothing was sent, and the attempt failed with the reason
    assert receiver.received == []
    assert delivery.status == "pending" and delivery.attempts == 1
    assert "not public" in delivery.last_error


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f000001"])
def test_shorthand_loopback_addresses_are_refused_when_delivering_in_production(settings, receiver, host):
    # given: forms of 127.0.0.1 that the registration check does not read as an address
    settings.PRODUCTION = True
    port = receiver.server.server_address[1]

    # when
    delivery = _deliver_once(f"https://{host}:{port}/hooks")

    # then
    assert receiver.received == []
    assert "not public" in delivery.last_error


def test_a_redirect_is_never_followed(receiver):
    # given: the merchant's receiver answers 302 to another server (here: a second receiver)
    target = rx.receiver_start()
    try:
        receiver.mode, receiver.redirect_to = rx.REDIRECT, target.url

        # when
        delivery = _deliver_once(receiver.url)

        # then: the redirect is the answer (a failure), and the other server got nothing
        assert len(receiver.received) == 1
        assert target.received == []
        assert (delivery.status, delivery.last_status_code, delivery.last_error) == ("pending", 302, "HTTP 302")
    finally:
        rx.receiver_stop(target)


def test_the_public_address_is_the_one_resolved(dns):
    # given
    dns["hooks.public.test"] = ["93.184.216.34", "2606:2800:220:1::"]
    # when / then
    assert gateway._public_address("https://hooks.public.test/x") == "93.184.216.34"
    with pytest.raises(gateway.DeliveryRefused, match="does not resolve"):
        gateway._public_address("https://no-such-host.invalid/x")


def test_a_pinned_connection_goes_to_the_checked_address_whatever_the_name_resolves_to(receiver):
    # given: a name that resolves nowhere (.invalid never does), pinned to the receiver
    port = receiver.server.server_address[1]
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), gateway._PinnedHTTPHandler("127.0.0.1"), gateway._NoRedirect()
    )
    request = urllib.request.Request(f"http://hooks.rebound.invalid:{port}/hooks", data=b"{}", method="POST")

    # when
    with opener.open(request, timeout=5) as answer:
        status = answer.status

    # then: it reached the pinned address, and still named the host it was sent to
    assert status == 200
    (received,) = receiver.received
    assert received.headers["Host"] == f"hooks.rebound.invalid:{port}"


def test_outside_production_deliveries_may_go_to_local_receivers(receiver):
    # the sandbox and tests deliver to localhost; only production is public-only
    delivery = _deliver_once(receiver.url)
    assert (delivery.status, len(receiver.received)) == ("delivered", 1)
