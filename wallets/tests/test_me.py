"""GET /api/v1/me."""

from __future__ import annotations

import pytest

from accounts.tests.factories import StaffFactory
from wallets.services import wallet_freeze
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import fund

pytestmark = pytest.mark.django_db


def test_me_shows_the_user_and_their_wallet(api):
    # given
    user, wallet = register_user(email="ana@example.com", name="Ana")

    # when
    response = api.get("/api/v1/me", **auth_header(user))

    # then
    assert response.status_code == 200
    assert response.json() == {
        "user": {"id": str(user.id), "email": "ana@example.com", "name": "Ana", "role": "customer"},
        "wallet": {
            "id": str(wallet.id),
            "handle": "ana@wallet",
            "currency": "INR",
            "balance": 0,
            "available_balance": 0,
            "held_balance": 0,
            "status": "active",
        },
    }


def test_me_of_a_merchant(api):
    # given
    merchant, _ = register_user(role="merchant", business_name="Cafe")

    # when
    response = api.get("/api/v1/me", **auth_header(merchant))

    # then
    assert response.json()["user"]["role"] == "merchant"


def test_me_of_a_staff_user_has_no_wallet(api):
    # given
    staff = StaffFactory()

    # when
    response = api.get("/api/v1/me", **auth_header(staff))

    # then
    assert response.status_code == 200
    assert response.json()["wallet"] is None


def test_me_reflects_posted_money_and_a_frozen_wallet(api):
    # given: a deposit through the real posting service, then the wallet frozen by staff
    user, wallet = register_user()
    staff = StaffFactory()
    fund(wallet, 5000)
    wallet_freeze(wallet_id=wallet.id, actor=staff, reason="test")

    # when
    body = api.get("/api/v1/me", **auth_header(user)).json()

    # then
    assert body["wallet"]["balance"] == 5000
    assert body["wallet"]["held_balance"] == 0
    assert body["wallet"]["available_balance"] == 5000
    assert body["wallet"]["status"] == "frozen"


def test_available_balance_is_balance_less_held():
    # given: a wallet whose account has money held (no hold service exists yet, so the
    # account row is rendered as loaded, not written)
    from ledger.models import Account
    from wallets.models import Wallet
    from wallets.serializers import WalletOut

    _, wallet = register_user()
    wallet = Wallet.objects.select_related("account").get(id=wallet.id)
    wallet.account = Account(id=wallet.account_id, balance=5000, held_balance=1200, currency="INR")

    # when
    data = WalletOut(wallet).data

    # then
    assert (data["balance"], data["held_balance"], data["available_balance"]) == (5000, 1200, 3800)


def test_me_needs_a_token(api):
    # when
    response = api.get("/api/v1/me")

    # then
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_required"


def test_me_takes_only_get(api):
    # given
    user, _ = register_user()

    # when
    response = api.post("/api/v1/me", {}, format="json", **auth_header(user))

    # then
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_wrong_method_is_405_even_without_a_token(api):
    # when
    response = api.delete("/api/v1/me")

    # then
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
