"""Cashback: a qualifying payment earns floor(amount * bps / 10000), capped per payment and by
the budget, from the cashback pool (never below zero) as its own ledger transaction; refunds
take it back in proportion; staff run campaigns over the admin API."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.services import staff_create
from ledger.models import AuditLog, Entry, OutboxEvent
from ledger.posting import system_account
from ledger.tests.invariants import assert_ledger_consistent
from wallets.cashback import cashback_to_reverse
from wallets.models import CashbackCampaign, CashbackGrant, Payment
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import balance_of, fund, transfer
from wallets.tests.test_payments import campaign, fund_pool, merchant, pay, pool_balance, refund, snapshot

pytestmark = pytest.mark.django_db

CAMPAIGNS = "/api/v1/admin/campaigns"


@pytest.fixture
def shop(db):
    customer, wallet = register_user(name="carol")
    fund(wallet, 100_000)
    merchant_user, merchant_wallet = merchant(fee_bps=0)
    return {
        "wallet": wallet,
        "auth": auth_header(customer),
        "merchant_wallet": merchant_wallet,
        "merchant_auth": auth_header(merchant_user),
    }


def _pay(api, shop, amount: int):
    response = pay(api, shop["auth"], merchant=shop["merchant_wallet"].handle, amount=amount)
    assert response.status_code == 201, response.json()
    return response.json()


# -- granting -----------------------------------------------------------------------------------


def test_a_qualifying_payment_earns_cashback_as_its_own_transaction(api, shop):
    # given: 10%, capped at 10_000
    fund_pool(50_000)
    running = campaign(bps=1000, cap_per_payment=10_000, budget=100_000)
    # when
    body = _pay(api, shop, 12_345)
    # then
    assert body["cashback"]["amount"] == 1_234
    assert body["cashback"]["campaign_id"] == str(running.id)
    assert body["balance"] == 100_000 - 12_345 + 1_234
    cashback_entries = dict(
        Entry.objects.filter(transaction_id=body["cashback"]["transaction_id"]).values_list("account_id", "amount")
    )
    assert cashback_entries == {system_account("cashback_pool").id: -1_234, shop["wallet"].account_id: 1_234}
    assert Entry.objects.get(transaction_id=body["cashback"]["transaction_id"], amount__gt=0).type == "cashback"
    assert pool_balance() == 50_000 - 1_234
    running.refresh_from_db()
    assert running.spent == 1_234
    grant = CashbackGrant.objects.get()
    assert (grant.amount, grant.payment.transaction_id) == (1_234, uuid.UUID(body["transaction"]["id"]))
    event = OutboxEvent.objects.get(type="cashback.granted")
    assert event.payload == {
        "transaction_id": body["cashback"]["transaction_id"],
        "wallet_ids": [str(shop["wallet"].id)],
        "amount": 1_234,
        "currency": "INR",
        "campaign_id": str(running.id),
        "payment_id": str(grant.payment_id),
    }
    assert_ledger_consistent()


def test_cashback_is_capped_per_payment_and_by_what_is_left_of_the_budget(api, shop):
    # given
    fund_pool(50_000)
    running = campaign(bps=5000, cap_per_payment=700, budget=1_000)
    # when
    first = _pay(api, shop, 10_000)
    second = _pay(api, shop, 10_000)
    third = _pay(api, shop, 10_000)
    # then
    assert first["cashback"]["amount"] == 700
    assert second["cashback"]["amount"] == 300
    assert "cashback" not in third
    running.refresh_from_db()
    assert running.spent == running.budget == 1_000
    assert_ledger_consistent()


def test_an_empty_pool_means_no_cashback_and_the_payment_still_succeeds(api, shop):
    # given: the pool holds less than the cashback
    fund_pool(99)
    running = campaign(bps=1000)
    # when
    body = _pay(api, shop, 10_000)
    # then
    assert "cashback" not in body
    assert body["balance"] == 90_000
    assert pool_balance() == 99
    running.refresh_from_db()
    assert running.spent == 0
    assert not CashbackGrant.objects.exists()
    assert Payment.objects.count() == 1
    assert_ledger_consistent()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": "paused"},
        {"starts_at": timezone.now() + timedelta(hours=1), "ends_at": timezone.now() + timedelta(hours=2)},
        {"starts_at": timezone.now() - timedelta(hours=2), "ends_at": timezone.now() - timedelta(hours=1)},
    ],
    ids=["paused", "not started", "ended"],
)
def test_a_paused_or_out_of_window_campaign_grants_nothing(api, shop, kwargs):
    # given
    fund_pool(10_000)
    campaign(**kwargs)
    # when
    body = _pay(api, shop, 1_000)
    # then
    assert "cashback" not in body
    assert pool_balance() == 10_000
    assert_ledger_consistent()


def test_a_merchant_campaign_applies_to_that_merchant_only_and_the_best_campaign_wins(api, shop):
    # given
    fund_pool(10_000)
    _, other_merchant = merchant(fee_bps=0)
    campaign(bps=100, name="everyone")
    best = campaign(bps=2000, merchant_wallet=shop["merchant_wallet"], name="corner shop")
    # when
    here = _pay(api, shop, 1_000)
    there = pay(api, shop["auth"], merchant=other_merchant.handle, amount=1_000).json()
    # then
    assert here["cashback"] == {
        "amount": 200,
        "campaign_id": str(best.id),
        "transaction_id": here["cashback"]["transaction_id"],
    }
    assert there["cashback"]["amount"] == 10
    assert_ledger_consistent()


# -- reversal -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("granted", "amount", "steps", "expected"),
    [
        (1_000, 10_000, [3_000, 3_000, 4_000], [300, 300, 400]),
        (333, 1_000, [1, 1, 998], [0, 0, 333]),
        (7, 3, [1, 1, 1], [2, 2, 3]),
        (0, 100, [100], [0]),
    ],
)
def test_cashback_to_reverse_is_cumulative_and_returns_all_of_it_at_the_end(granted, amount, steps, expected):
    # given
    reversed_so_far, refunded = 0, 0
    got = []
    # when
    for step in steps:
        refunded += step
        share = cashback_to_reverse(
            payment_amount=amount, granted=granted, reversed_so_far=reversed_so_far, refunded_after=refunded
        )
        reversed_so_far += share
        got.append(share)
    # then
    assert got == expected
    assert sum(got) == granted


def test_a_refund_takes_the_cashback_back_in_proportion(api, shop):
    # given: 10% cashback on 10_000 = 1_000
    fund_pool(10_000)
    running = campaign(bps=1000)
    paid = _pay(api, shop, 10_000)
    # when
    partial = refund(api, shop["merchant_auth"], paid["transaction"]["id"], amount=2_500).json()
    rest = refund(api, shop["merchant_auth"], paid["transaction"]["id"]).json()
    # then
    assert partial["cashback_reversed"] == 250
    assert rest["cashback_reversed"] == 750
    assert pool_balance() == 10_000
    assert balance_of(shop["wallet"]) == 100_000
    grant = CashbackGrant.objects.get()
    assert grant.reversed == grant.amount == 1_000
    running.refresh_from_db()
    # The budget counts what was granted: reversals refill the pool, not the budget.
    assert running.spent == 1_000
    events = list(OutboxEvent.objects.filter(type="cashback.reversed").order_by("id"))
    assert [e.payload["amount"] for e in events] == [250, 750]
    assert events[0].payload["campaign_id"] == str(running.id)
    assert events[0].payload["payment_id"] == str(grant.payment_id)
    assert events[0].payload["wallet_ids"] == [str(shop["wallet"].id)]
    reversal_entries = Entry.objects.filter(transaction_id=events[0].payload["transaction_id"])
    assert dict(reversal_entries.values_list("account_id", "amount")) == {
        shop["wallet"].account_id: -250,
        system_account("cashback_pool").id: 250,
    }
    assert_ledger_consistent()


def test_a_customer_who_spent_everything_still_has_the_cashback_taken_back_from_the_refund(api, shop):
    # given: the customer spends all of it, cashback included
    fund_pool(10_000)
    campaign(bps=1000)
    paid = _pay(api, shop, 10_000)
    _, friend = register_user()
    transfer(api, shop["auth"], to=friend.handle, amount=balance_of(shop["wallet"]))
    assert balance_of(shop["wallet"]) == 0
    # when
    body = refund(api, shop["merchant_auth"], paid["transaction"]["id"]).json()
    # then: the refund credited 10_000, of which 1_000 went back to the pool
    assert body["cashback_reversed"] == 1_000
    assert balance_of(shop["wallet"]) == 9_000
    assert pool_balance() == 10_000
    assert_ledger_consistent()


# -- the campaign API ---------------------------------------------------------------------------


@pytest.fixture
def operations(db):
    return staff_create(email="ops@example.com", role="operations", password="staff password 1")


@pytest.fixture
def support(db):
    return staff_create(email="support@example.com", role="support", password="staff password 1")


def _campaign_body(**kwargs) -> dict:
    now = timezone.now()
    body = {
        "name": "Diwali",
        "bps": 500,
        "cap_per_payment": 5_000,
        "budget": 100_000,
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(days=7)).isoformat(),
    }
    body.update(kwargs)
    return body


def test_staff_create_list_pause_and_resume_campaigns(api, operations, shop):
    # given
    auth = auth_header(operations)
    # when
    created = api.post(CAMPAIGNS, _campaign_body(merchant=shop["merchant_wallet"].handle), format="json", **auth)
    # then
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["bps"], body["budget"], body["spent"], body["remaining"], body["status"]) == (
        500,
        100_000,
        0,
        100_000,
        "active",
    )
    assert body["merchant_wallet_id"] == str(shop["merchant_wallet"].id)
    listed = api.get(CAMPAIGNS, **auth).json()
    assert [c["id"] for c in listed["data"]] == [body["id"]]
    assert listed["has_more"] is False
    paused = api.post(f"{CAMPAIGNS}/{body['id']}/pause", {"reason": "budget review"}, format="json", **auth)
    assert paused.status_code == 200
    assert paused.json()["status"] == "paused"
    assert CashbackCampaign.objects.get(id=body["id"]).status == "paused"
    resumed = api.post(f"{CAMPAIGNS}/{body['id']}/resume", **auth)
    assert resumed.json()["status"] == "active"
    actions = list(AuditLog.objects.filter(target=f"campaign:{body['id']}").values_list("action", flat=True))
    assert sorted(actions) == ["campaign.create", "campaign.pause", "campaign.resume"]
    assert AuditLog.objects.get(action="campaign.pause").reason == "budget review"
    typo = api.post(f"{CAMPAIGNS}/{body['id']}/pause", {"reason": "x", "force": True}, format="json", **auth)
    assert typo.status_code == 400
    assert CashbackCampaign.objects.get(id=body["id"]).status == "active"


def test_the_campaign_list_pages_with_a_cursor(api, operations):
    # given
    made = [campaign(name=f"c{i}") for i in range(5)]
    auth = auth_header(operations)
    # when
    first = api.get(f"{CAMPAIGNS}?limit=2", **auth).json()
    second = api.get(f"{CAMPAIGNS}?limit=2&cursor={first['next_cursor']}", **auth).json()
    third = api.get(f"{CAMPAIGNS}?limit=2&cursor={second['next_cursor']}", **auth).json()
    # then
    ids = [c["id"] for page in (first, second, third) for c in page["data"]]
    assert sorted(ids) == sorted(str(c.id) for c in made)
    assert len(set(ids)) == 5
    assert third["has_more"] is False
    bad = api.get(f"{CAMPAIGNS}?cursor=forged", **auth)
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_cursor"


def test_a_paused_campaign_stops_granting_at_once(api, operations, shop):
    # given
    fund_pool(10_000)
    running = campaign(bps=1000)
    api.post(f"{CAMPAIGNS}/{running.id}/pause", **auth_header(operations))
    # when
    body = _pay(api, shop, 1_000)
    # then
    assert "cashback" not in body
    assert_ledger_consistent()


def test_an_unknown_campaign_is_404(api, operations):
    auth = auth_header(operations)
    for campaign_id in (uuid.uuid4(), "nope"):
        response = api.post(f"{CAMPAIGNS}/{campaign_id}/pause", **auth)
        assert response.status_code == 404
        assert response.json()["code"] == "campaign_not_found"


@pytest.mark.parametrize(
    "changes",
    [
        {"bps": 0},
        {"bps": 10_001},
        {"budget": 0},
        {"cap_per_payment": "5"},
        {"name": ""},
        {"ends_at": (timezone.now() - timedelta(days=30)).isoformat()},
        {"merchant": "nobody@wallet"},
        {"extra": 1},
    ],
)
def test_bad_campaigns_are_400_and_create_nothing(api, operations, changes):
    # when
    response = api.post(CAMPAIGNS, _campaign_body(**changes), format="json", **auth_header(operations))
    # then
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "validation_failed"
    assert not CashbackCampaign.objects.exists()


def test_support_may_list_but_not_create_or_pause_and_customers_may_do_neither(api, support, shop):
    # given
    running = campaign()
    before = snapshot()
    support_auth = auth_header(support)
    # then
    assert api.get(CAMPAIGNS, **support_auth).status_code == 200
    assert api.post(CAMPAIGNS, _campaign_body(), format="json", **support_auth).status_code == 403
    assert api.post(f"{CAMPAIGNS}/{running.id}/pause", **support_auth).status_code == 403
    for method in (api.get, api.post):
        response = method(CAMPAIGNS, **shop["auth"])
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"
    assert api.get(CAMPAIGNS).status_code == 401
    assert snapshot() == before
