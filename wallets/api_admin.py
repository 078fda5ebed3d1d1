"""Staff operations over the API (admin token: a bearer access token of a staff user):
reconciliation, and freezing or unfreezing a wallet with a reason.

The same permissions as in the Django admin apply: a staff user needs
`ledger.run_reconciliation` to run a reconciliation and `wallets.freeze_wallet` to freeze or
unfreeze (the "operations" group has both, "support" neither; superusers have all). Anyone
else, non-staff first of all, gets 403 forbidden.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response

from ledger.reconciliation import reconciliation_run
from wallets.models import Wallet
from wallets.serializers import WalletAdminOut
from wallets.services import wallet_freeze, wallet_resolve, wallet_unfreeze
from walletsite.schema import AUTHENTICATED, problems
from walletsite.serializers import StrictSerializer, StringField
from walletsite.views import ApiViewSet


class StaffWithPermission(BasePermission):
    """Staff only, and with the Django permission the view names for the action. An action
    the view names no permission for is refused to everyone, superusers too: a new action
    left out of `required_permissions` fails closed instead of opening to all staff."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_active and user.is_staff):
            return False
        needed = view.required_permissions.get(view.action)
        return needed is not None and user.has_perm(needed)


class MismatchOut(serializers.Serializer):
    kind = serializers.CharField(
        help_text=(
            "transaction_without_entries, transaction_too_few_legs, transaction_unbalanced, "
            "balance_not_sum_of_entries, balance_not_last_balance_after, customer_balance_negative, "
            "held_balance_negative, customer_available_negative, entries_total_not_zero, "
            "balances_total_not_zero, or more_not_listed (a count of further mismatches of one kind)"
        )
    )
    account_id = serializers.IntegerField(required=False, help_text="For account mismatches")
    account = serializers.CharField(required=False, help_text="The account's code, or 'account <id>'")
    transaction_id = serializers.UUIDField(required=False, help_text="For transaction mismatches")
    currency = serializers.CharField(required=False, help_text="For balances_total_not_zero")
    of_kind = serializers.CharField(required=False, help_text="For more_not_listed")
    expected = serializers.IntegerField()
    actual = serializers.IntegerField()
    detail = serializers.CharField()


class ReconciliationOut(serializers.Serializer):
    id = serializers.IntegerField(help_text="The stored run (see the admin's reconciliation page)")
    ok = serializers.BooleanField()
    checked_accounts = serializers.IntegerField()
    checked_transactions = serializers.IntegerField()
    total_balance = serializers.IntegerField(help_text="The sum of every balance, minor units; 0 when ok")
    mismatches = MismatchOut(many=True)
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()


class ReasonIn(StrictSerializer):
    reason = StringField(min_length=1, max_length=1000, help_text="Why; kept in the audit log")


WALLET_ID = OpenApiParameter("wallet_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="A wallet id")


class AdminViewSet(ApiViewSet):
    permission_classes = [IsAuthenticated, StaffWithPermission]
    required_permissions = {
        "reconciliation": "ledger.run_reconciliation",
        "freeze": "wallets.freeze_wallet",
        "unfreeze": "wallets.freeze_wallet",
    }

    @extend_schema(
        operation_id="admin_reconciliation",
        summary="Run a reconciliation of the whole ledger now",
        description=(
            "Checks that every account's cached balance equals the sum of its ledger entries and its latest "
            "entry's balance_after, that every ledger transaction has two or more entries summing to zero, that "
            "customer and held balances are not negative, and that all balances together sum to zero. The run is "
            "stored. Needs a staff token with the run_reconciliation permission."
        ),
        responses={200: ReconciliationOut, **problems(*AUTHENTICATED, "forbidden")},
    )
    def reconciliation(self, request):
        run = reconciliation_run(triggered_by=f"api:{request.user.email}")
        return Response(ReconciliationOut(run).data)

    @extend_schema(
        operation_id="admin_wallet_freeze",
        summary="Freeze a wallet: it can neither send nor receive until unfrozen",
        description="Audited with the staff user and the reason. Freezing a frozen wallet changes nothing.",
        parameters=[WALLET_ID],
        request=ReasonIn,
        responses={
            200: WalletAdminOut,
            **problems(*AUTHENTICATED, "validation_failed", "forbidden", "wallet_not_found"),
        },
    )
    def freeze(self, request, wallet_id: str):
        return self._set_status(request, wallet_id, service=wallet_freeze)

    @extend_schema(
        operation_id="admin_wallet_unfreeze",
        summary="Unfreeze a wallet",
        description="Audited with the staff user and the reason. Unfreezing an active wallet changes nothing.",
        parameters=[WALLET_ID],
        request=ReasonIn,
        responses={
            200: WalletAdminOut,
            **problems(*AUTHENTICATED, "validation_failed", "forbidden", "wallet_not_found"),
        },
    )
    def unfreeze(self, request, wallet_id: str):
        return self._set_status(request, wallet_id, service=wallet_unfreeze)

    def _set_status(self, request, wallet_id: str, *, service) -> Response:
        body = ReasonIn(data=request.data)
        body.is_valid(raise_exception=True)
        # The wallet is looked up before its lock is taken, so an unknown id is a plain 404.
        wallet = wallet_resolve(ref=wallet_id)
        wallet = service(wallet_id=wallet.id, actor=request.user, reason=body.validated_data["reason"])
        return Response(WalletAdminOut(Wallet.objects.select_related("account").get(id=wallet.id)).data)
