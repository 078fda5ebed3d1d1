"""Output serializers of wallets' API views."""

from __future__ import annotations

from rest_framework import serializers

from accounts.models import User
from wallets.models import Wallet


class UserOut(serializers.Serializer):
    """A user as the API shows them to themselves."""

    id = serializers.UUIDField()
    email = serializers.EmailField()
    name = serializers.CharField()
    role = serializers.ChoiceField(choices=User.Role.choices)


class WalletSummaryOut(serializers.Serializer):
    """A wallet with its balances (minor units). Render with the wallet's account loaded
    (select_related("account")): the balances are the account's."""

    id = serializers.UUIDField()
    handle = serializers.CharField()
    currency = serializers.CharField()
    balance = serializers.IntegerField(source="account.balance")
    available_balance = serializers.IntegerField(source="account.available_balance")
    held_balance = serializers.IntegerField(source="account.held_balance")
    status = serializers.ChoiceField(choices=Wallet.Status.choices)


class UserWalletOut(serializers.Serializer):
    """`{user, wallet}`: the answer of registration and of GET /me. A staff user has no
    wallet (null)."""

    user = UserOut()
    wallet = WalletSummaryOut(allow_null=True)
