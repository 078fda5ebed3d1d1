"""Output serializers of wallets' API views."""

from __future__ import annotations

from rest_framework import serializers

from accounts.models import User
from ledger.models import Transaction
from wallets.history import HISTORY_STATUSES
from wallets.models import Wallet


class UserOut(serializers.Serializer):
    """A user as the API shows them to themselves."""

    id = serializers.UUIDField()
    email = serializers.EmailField()
    name = serializers.CharField()
    role = serializers.ChoiceField(choices=User.Role.choices)


class WalletOut(serializers.Serializer):
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
    wallet = WalletOut(allow_null=True)


class WalletAdminOut(WalletOut):
    """A wallet as staff see it: with why it has its status."""

    status_reason = serializers.CharField(allow_blank=True)


class BalanceOut(serializers.Serializer):
    """GET /wallet/balance. Render with the wallet's account loaded."""

    wallet_id = serializers.UUIDField(source="id")
    handle = serializers.CharField()
    currency = serializers.CharField()
    balance = serializers.IntegerField(source="account.balance")
    available_balance = serializers.IntegerField(source="account.available_balance")
    held_balance = serializers.IntegerField(source="account.held_balance")


class CounterpartyOut(serializers.Serializer):
    handle = serializers.CharField()
    name = serializers.CharField()


class HistoryItemOut(serializers.Serializer):
    """Documents the history item that wallets.history.history_item builds (a plain dict,
    rendered as is: a page of 100 items costs no serializer per field)."""

    id = serializers.UUIDField(help_text="The ledger transaction id")
    type = serializers.ChoiceField(choices=Transaction.Type.choices)
    direction = serializers.ChoiceField(choices=[("credit", "credit"), ("debit", "debit")])
    amount = serializers.IntegerField(min_value=1, help_text="Minor units, always positive; see direction")
    currency = serializers.CharField()
    balance_after = serializers.IntegerField(help_text="The wallet's posted balance right after this entry")
    status = serializers.ChoiceField(choices=HISTORY_STATUSES)
    counterparty = CounterpartyOut(allow_null=True)
    note = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class HistoryPageOut(serializers.Serializer):
    data = HistoryItemOut(many=True)
    has_more = serializers.BooleanField()
    next_cursor = serializers.CharField(allow_null=True)
