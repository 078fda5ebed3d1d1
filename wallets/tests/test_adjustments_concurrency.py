"""Approving one adjustment from two threads at once (two checkers, own connections): it is
posted once, the other approval answers 409."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.services import staff_create
from ledger.models import OutboxEvent, Transaction
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import Adjustment
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import balance_of

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/admin/adjustments"


def _in_threads(count: int, work) -> list:
    barrier = threading.Barrier(count)

    def run(i):
        try:
            barrier.wait(timeout=30)
            return work(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


@pytest.mark.parametrize("checkers", [2, 8])
def test_concurrent_approvals_post_once(checkers):
    # given
    maker = staff_create(email="maker@example.com", role="operations", password="staff password 1")
    staff = [
        staff_create(email=f"checker{i}@example.com", role="operations", password="staff password 1")
        for i in range(checkers)
    ]
    headers = [auth_header(user) for user in staff]
    _, wallet = register_user()
    created = APIClient().post(
        URL,
        {"from": "system:adjustments", "to": wallet.handle, "amount": 900, "reason": "refund of a lost top-up"},
        format="json",
        **auth_header(maker),
        HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
    )
    adjustment_id = created.json()["id"]
    # when
    responses = _in_threads(
        checkers, lambda i: APIClient().post(f"{URL}/{adjustment_id}/approve", {}, format="json", **headers[i])
    )
    # then
    outcomes = Counter((r.status_code, r.json().get("code")) for r in responses)
    assert outcomes == {(200, None): 1, (409, "adjustment_not_pending"): checkers - 1}, outcomes
    assert Adjustment.objects.get(id=adjustment_id).status == "posted"
    assert Transaction.objects.filter(reference=f"adjustment:{adjustment_id}").count() == 1
    assert OutboxEvent.objects.filter(type="adjustment.posted").count() == 1
    assert balance_of(wallet) == 900
    assert_ledger_consistent()
