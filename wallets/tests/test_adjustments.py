"""Staff money operations with maker-checker over the API: /api/v1/admin/adjustments and its
approve and reject routes; every error code, bad input changing nothing."""

from __future__ import annotations

import uuid

import pytest

from accounts.models import User
from accounts.services import staff_create
from ledger.models import AuditLog, Entry, OutboxEvent, Transaction
from ledger.posting import system_account
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import Adjustment, IdempotencyKey
from wallets.services import wallet_freeze
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import balance_of, fund

pytestmark = pytest.mark.django_db

URL = "/api/v1/admin/adjustments"
PASSWORD = "staff password 1"


def make(api, staff: User, body: dict, key: str | None = None):
    return api.post(URL, body, format="json", **auth_header(staff), HTTP_IDEMPOTENCY_KEY=key or uuid.uuid4().hex)


def decide(api, staff: User, adjustment_id, verb: str, body: dict | None = None):
    return api.post(f"{URL}/{adjustment_id}/{verb}", body or {}, format="json", **auth_header(staff))


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
def alice(db):
    user, wallet = register_user(email="alice@example.com", name="Alice")
    fund(wallet, 5_000)
    return user, wallet


def _money_snapshot():
    return Entry.objects.count(), Transaction.objects.count(), OutboxEvent.objects.count()


def test_make_records_a_pending_adjustment_and_moves_nothing(api, maker, alice):
    # given
    _, wallet = alice
    before = _money_snapshot()
    # when
    response = make(
        api, maker, {"from": "system:adjustments", "to": wallet.handle, "amount": 700, "reason": "goodwill"}
    )
    # then
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "pending_approval"
    assert (body["from"], body["to"], body["amount"], body["currency"]) == (
        "system:adjustments",
        wallet.handle,
        700,
        "INR",
    )
    assert (body["reason"], body["created_by"]) == ("goodwill", "maker@example.com")
    assert body["transaction_id"] is None and body["decided_by"] is None and body["decided_at"] is None
    assert _money_snapshot() == before
    assert balance_of(wallet) == 5_000
    log = AuditLog.objects.get(action="adjustment.created", target=f"adjustment:{body['id']}")
    assert (log.actor_id, log.reason) == (maker.id, "goodwill")
    assert_ledger_consistent()


def test_approval_by_another_staff_member_posts_once(api, maker, checker, alice):
    # given
    _, wallet = alice
    adjustment_id = make(
        api, maker, {"from": wallet.handle, "to": "system:adjustments", "amount": 1_200, "reason": "chargeback"}
    ).json()["id"]
    # when
    approved = decide(api, checker, adjustment_id, "approve", {"comment": "ticket 7 checked"})
    again = decide(api, checker, adjustment_id, "approve")
    # then
    assert approved.status_code == 200, approved.json()
    body = approved.json()
    assert body["status"] == "posted" and body["decided_by"] == "checker@example.com"
    txn = Transaction.objects.get(id=body["transaction_id"])
    assert (txn.type, txn.reference) == ("adjustment", f"adjustment:{adjustment_id}")
    assert balance_of(wallet) == 5_000 - 1_200
    assert again.status_code == 409 and again.json()["code"] == "adjustment_not_pending"
    assert Transaction.objects.filter(reference=f"adjustment:{adjustment_id}").count() == 1
    event = OutboxEvent.objects.get(type="adjustment.posted")
    assert event.payload == {
        "adjustment_id": adjustment_id,
        "transaction_id": body["transaction_id"],
        "wallet_ids": [str(wallet.id)],
        "amount": 1_200,
        "currency": "INR",
        "from": wallet.handle,
        "to": "system:adjustments",
    }
    log = AuditLog.objects.get(action="adjustment.approved", target=f"adjustment:{adjustment_id}")
    assert log.actor_id == checker.id and log.data["transaction_id"] == body["transaction_id"]
    assert log.data["comment"] == "ticket 7 checked"
    assert_ledger_consistent()


def test_the_maker_cannot_approve_their_own(api, maker, alice):
    # given
    _, wallet = alice
    adjustment_id = make(
        api, maker, {"from": "system:adjustments", "to": wallet.handle, "amount": 1, "reason": "x"}
    ).json()["id"]
    before = _money_snapshot()
    # when
    response = decide(api, maker, adjustment_id, "approve")
    # then
    assert response.status_code == 403 and response.json()["code"] == "approval_by_maker"
    assert Adjustment.objects.get(id=adjustment_id).status == "pending_approval"
    assert _money_snapshot() == before
    assert_ledger_consistent()


def test_reject_with_a_reason_then_nothing_more(api, maker, checker, alice):
    # given
    _, wallet = alice
    adjustment_id = make(
        api, maker, {"from": "system:adjustments", "to": wallet.handle, "amount": 10, "reason": "x"}
    ).json()["id"]
    before = _money_snapshot()
    # when
    rejected = decide(api, checker, adjustment_id, "reject", {"reason": "no ticket"})
    approve_after = decide(api, checker, adjustment_id, "approve")
    reject_after = decide(api, checker, adjustment_id, "reject", {"reason": "again"})
    # then
    assert rejected.status_code == 200
    body = rejected.json()
    assert (body["status"], body["decision_reason"], body["decided_by"]) == ("rejected", "no ticket", checker.email)
    assert approve_after.status_code == reject_after.status_code == 409
    assert _money_snapshot() == before
    log = AuditLog.objects.get(action="adjustment.rejected", target=f"adjustment:{adjustment_id}")
    assert (log.actor_id, log.reason) == (checker.id, "no ticket")
    assert_ledger_consistent()


def test_the_maker_may_withdraw_their_own(api, maker, alice):
    # given
    adjustment_id = make(
        api, maker, {"from": "system:adjustments", "to": alice[1].handle, "amount": 10, "reason": "x"}
    ).json()["id"]
    # when
    response = decide(api, maker, adjustment_id, "reject", {"reason": "typo in the amount"})
    # then
    assert response.status_code == 200 and response.json()["status"] == "rejected"


def test_unknown_adjustments_are_404(api, checker):
    # given
    missing = uuid.uuid4()
    # when / then
    for response in (
        decide(api, checker, missing, "approve"),
        decide(api, checker, missing, "reject", {"reason": "r"}),
        decide(api, checker, "not-a-uuid", "approve"),
        api.get(f"{URL}/{missing}", **auth_header(checker)),
        api.get(f"{URL}/nope", **auth_header(checker)),
    ):
        assert response.status_code == 404 and response.json()["code"] == "adjustment_not_found"


def test_approval_without_the_money_fails_and_stays_pending(api, maker, checker, alice):
    # given: alice holds 5,000
    _, wallet = alice
    adjustment_id = make(
        api, maker, {"from": wallet.handle, "to": "system:adjustments", "amount": 5_001, "reason": "r"}
    ).json()["id"]
    # when
    refused = decide(api, checker, adjustment_id, "approve")
    # then
    assert refused.status_code == 422 and refused.json()["code"] == "insufficient_funds"
    assert Adjustment.objects.get(id=adjustment_id).status == "pending_approval"
    assert balance_of(wallet) == 5_000
    assert not AuditLog.objects.filter(action="adjustment.approved").exists()
    # once the money is there, the same adjustment can be approved
    fund(wallet, 1)
    assert decide(api, checker, adjustment_id, "approve").json()["status"] == "posted"
    assert balance_of(wallet) == 0
    assert_ledger_consistent()


def test_cashback_pool_funding_end_to_end(api, maker, checker, alice):
    # given
    pool = system_account("cashback_pool")
    start = pool.balance
    # when: funding, approved, then an attempt to take more out of the pool than it holds
    funded = make(
        api,
        maker,
        {"from": "system:adjustments", "to": "system:cashback_pool", "amount": 50_000, "reason": "Q4 budget"},
    )
    posted = decide(api, checker, funded.json()["id"], "approve")
    drain = make(
        api,
        maker,
        {"from": "system:cashback_pool", "to": "system:adjustments", "amount": start + 50_001, "reason": "r"},
    )
    refused = decide(api, checker, drain.json()["id"], "approve")
    # then
    assert funded.status_code == 201 and posted.status_code == 200
    pool.refresh_from_db()
    assert pool.balance == start + 50_000
    assert refused.status_code == 422 and refused.json()["code"] == "insufficient_funds"
    assert OutboxEvent.objects.get(type="adjustment.posted").payload["wallet_ids"] == []
    assert_ledger_consistent()


def test_adjustments_reach_frozen_wallets(api, maker, checker, alice):
    # given
    _, wallet = alice
    wallet_freeze(wallet_id=wallet.id, actor=checker, reason="fraud")
    adjustment_id = make(
        api, maker, {"from": wallet.handle, "to": "system:adjustments", "amount": 5_000, "reason": "recover"}
    ).json()["id"]
    # when
    response = decide(api, checker, adjustment_id, "approve")
    # then
    assert response.status_code == 200 and balance_of(wallet) == 0
    assert_ledger_consistent()


def test_make_replays_with_the_same_key_and_refuses_another_body(api, maker, alice):
    # given
    body = {"from": "system:adjustments", "to": alice[1].handle, "amount": 10, "reason": "r"}
    first = make(api, maker, body, key="adj-1")
    # when
    again = make(api, maker, body, key="adj-1")
    other = make(api, maker, {**body, "amount": 11}, key="adj-1")
    # then
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert Adjustment.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to": "system:adjustments", "amount": 1, "reason": "r"}, "from"),
        ({"from": "system:adjustments", "amount": 1, "reason": "r"}, "to"),
        ({"from": "system:adjustments", "to": "a@wallet", "reason": "r"}, "amount"),
        ({"from": "system:adjustments", "to": "a@wallet", "amount": 1}, "reason"),
        ({"from": "system:adjustments", "to": "a@wallet", "amount": 1, "reason": "   "}, "reason"),
        ({"from": "system:adjustments", "to": "a@wallet", "amount": 0, "reason": "r"}, "amount"),
        ({"from": "system:adjustments", "to": "a@wallet", "amount": "5", "reason": "r"}, "amount"),
        ({"from": "system:adjustments", "to": "a@wallet", "amount": 1.5, "reason": "r"}, "amount"),
        ({"from": "system:adjustments", "to": "a@wallet", "amount": 1, "reason": "r", "note": "x"}, "note"),
        ({"from": "system:fees", "to": "a@wallet", "amount": 1, "reason": "r"}, "from"),
        ({"from": "system:adjustments", "to": "system:gateway_clearing", "amount": 1, "reason": "r"}, "to"),
        ({"from": 5, "to": "a@wallet", "amount": 1, "reason": "r"}, "from"),
    ],
)
def test_bad_bodies_are_refused_and_change_nothing(api, maker, alice, body, field):
    # given
    body = {k: (alice[1].handle if v == "a@wallet" else v) for k, v in body.items()}
    # when
    response = make(api, maker, body)
    # then
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "validation_failed"
    assert response.json()["errors"][0]["field"] == field
    assert Adjustment.objects.count() == 0
    assert not IdempotencyKey.objects.filter(user=maker).exists()


def test_unknown_wallet_same_account_and_missing_key(api, maker, alice):
    # given
    handle = alice[1].handle
    # when
    unknown = make(api, maker, {"from": "system:adjustments", "to": "nobody@wallet", "amount": 1, "reason": "r"})
    same = make(api, maker, {"from": handle, "to": handle, "amount": 1, "reason": "r"})
    keyless = api.post(
        URL,
        {"from": "system:adjustments", "to": handle, "amount": 1, "reason": "r"},
        format="json",
        **auth_header(maker),
    )
    # then
    assert unknown.status_code == 404 and unknown.json()["code"] == "wallet_not_found"
    assert same.status_code == 422 and same.json()["code"] == "same_wallet"
    assert keyless.status_code == 400 and keyless.json()["code"] == "idempotency_key_required"
    assert Adjustment.objects.count() == 0


def test_reject_needs_a_reason_and_approve_takes_no_body(api, maker, checker, alice):
    # given
    adjustment_id = make(
        api, maker, {"from": "system:adjustments", "to": alice[1].handle, "amount": 1, "reason": "r"}
    ).json()["id"]
    # when
    no_reason = decide(api, checker, adjustment_id, "reject", {})
    blank = decide(api, checker, adjustment_id, "reject", {"reason": ""})
    extra = decide(api, checker, adjustment_id, "approve", {"amount": 5})
    # then
    for response in (no_reason, blank, extra):
        assert response.status_code == 400 and response.json()["code"] == "validation_failed"
    assert Adjustment.objects.get(id=adjustment_id).status == "pending_approval"


def test_permissions(api, maker, support, alice):
    # given
    customer, _ = alice
    body = {"from": "system:adjustments", "to": alice[1].handle, "amount": 1, "reason": "r"}
    adjustment_id = make(api, maker, body).json()["id"]
    # when / then: support reads but neither makes nor decides; a customer does nothing
    assert api.get(URL, **auth_header(support)).status_code == 200
    assert api.get(f"{URL}/{adjustment_id}", **auth_header(support)).status_code == 200
    for user in (support, customer):
        assert make(api, user, body).json()["code"] == "forbidden"
        assert decide(api, user, adjustment_id, "approve").json()["code"] == "forbidden"
        assert decide(api, user, adjustment_id, "reject", {"reason": "r"}).json()["code"] == "forbidden"
    assert api.get(URL, **auth_header(customer)).status_code == 403
    assert api.get(URL).status_code == 401
    assert api.post(f"{URL}/{adjustment_id}/approve", {}, format="json").status_code == 401
    assert Adjustment.objects.get(id=adjustment_id).status == "pending_approval"


def test_a_maker_without_approve_permission_cannot_decide(api, alice):
    # given: staff with make_adjustment only, and a second maker's adjustment
    from django.contrib.auth.models import Permission

    only_maker = staff_create(email="m2@example.com", role="support", password=PASSWORD)
    only_maker.user_permissions.add(Permission.objects.get(codename="make_adjustment"))
    only_maker = User.objects.get(id=only_maker.id)
    other = staff_create(email="m3@example.com", role="operations", password=PASSWORD)
    adjustment_id = make(
        api, other, {"from": "system:adjustments", "to": alice[1].handle, "amount": 1, "reason": "r"}
    ).json()["id"]
    # when
    made = make(api, only_maker, {"from": "system:adjustments", "to": alice[1].handle, "amount": 1, "reason": "r"})
    approve = decide(api, only_maker, adjustment_id, "approve")
    # then
    assert made.status_code == 201
    assert approve.status_code == 403 and approve.json()["code"] == "forbidden"


# Transactional: each request commits on its own, so the adjustments get distinct created_at
# (inside one test transaction now() would be the same for all three).
@pytest.mark.django_db(transaction=True)
def test_list_newest_first_with_status_filter_and_cursor(api, maker, checker, alice):
    # given: three adjustments, one rejected
    ids = [
        make(api, maker, {"from": "system:adjustments", "to": alice[1].handle, "amount": n, "reason": "r"}).json()["id"]
        for n in (1, 2, 3)
    ]
    decide(api, checker, ids[1], "reject", {"reason": "no"})
    # when
    first = api.get(URL, {"limit": 2}, **auth_header(checker)).json()
    second = api.get(URL, {"limit": 2, "cursor": first["next_cursor"]}, **auth_header(checker)).json()
    pending = api.get(URL, {"status": "pending_approval"}, **auth_header(checker)).json()
    crossed = api.get(URL, {"status": "rejected", "cursor": first["next_cursor"]}, **auth_header(checker))
    bad = api.get(URL, {"status": "maybe"}, **auth_header(checker))
    unknown = api.get(URL, {"colour": "red"}, **auth_header(checker))
    # then
    assert [a["id"] for a in first["data"]] == [ids[2], ids[1]] and first["has_more"] is True
    assert [a["id"] for a in second["data"]] == [ids[0]] and second["has_more"] is False
    assert second["next_cursor"] is None
    assert [a["id"] for a in pending["data"]] == [ids[2], ids[0]]
    assert crossed.status_code == 400 and crossed.json()["code"] == "invalid_cursor"
    assert bad.status_code == 400 and unknown.status_code == 400
    assert api.get(URL, {"cursor": "forged"}, **auth_header(checker)).json()["code"] == "invalid_cursor"
    detail = api.get(f"{URL}/{ids[1]}", **auth_header(checker)).json()
    assert (detail["status"], detail["decision_reason"]) == ("rejected", "no")
