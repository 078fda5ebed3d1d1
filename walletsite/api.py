"""Every JSON API route under /api/v1, with no trailing slash (API.md). Routes are listed
explicitly so that each path reads exactly as the contract spells it."""

from django.urls import path

from accounts.api import AuthViewSet
from wallets.api_adjustments import AdjustmentViewSet
from wallets.api_admin import AdminViewSet
from wallets.api_auth import MeViewSet, RegistrationViewSet
from wallets.api_merchants import CampaignAdminViewSet, MerchantViewSet, PaymentViewSet
from wallets.api_notifications import MerchantWebhookViewSet
from wallets.api_statements import StatementViewSet
from wallets.api_topups import GatewayWebhookViewSet, TopupViewSet
from wallets.api_wallet import TransactionViewSet, WalletViewSet
from wallets.api_withdrawals import BankWebhookViewSet, WithdrawalViewSet

urlpatterns = [
    path("auth/register", RegistrationViewSet.as_view({"post": "register"}), name="auth-register"),
    path("auth/login", AuthViewSet.as_view({"post": "login"}), name="auth-login"),
    path("auth/refresh", AuthViewSet.as_view({"post": "refresh"}), name="auth-refresh"),
    path("auth/logout", AuthViewSet.as_view({"post": "logout"}), name="auth-logout"),
    path("me", MeViewSet.as_view({"get": "me"}), name="me"),
    path("wallet", WalletViewSet.as_view({"get": "retrieve"}), name="wallet"),
    path("wallet/balance", WalletViewSet.as_view({"get": "balance"}), name="wallet-balance"),
    path("wallet/transfer", WalletViewSet.as_view({"post": "transfer"}), name="wallet-transfer"),
    path("wallet/transactions", WalletViewSet.as_view({"get": "transactions"}), name="wallet-transactions"),
    path("wallet/pay", PaymentViewSet.as_view({"post": "pay"}), name="wallet-pay"),
    path(
        "merchant/payments/<str:transaction_id>/refund",
        MerchantViewSet.as_view({"post": "refund"}),
        name="merchant-payment-refund",
    ),
    path("wallet/add-money", TopupViewSet.as_view({"post": "add_money"}), name="wallet-add-money"),
    path("wallet/payments/<str:payment_id>", TopupViewSet.as_view({"get": "payment"}), name="wallet-payment"),
    path("wallet/statements/<str:month>", StatementViewSet.as_view({"get": "retrieve"}), name="wallet-statement"),
    path(
        "merchant/webhook-endpoints",
        MerchantWebhookViewSet.as_view({"get": "index", "post": "create"}),
        name="merchant-webhook-endpoints",
    ),
    path(
        "merchant/webhook-endpoints/<str:endpoint_id>",
        MerchantWebhookViewSet.as_view({"delete": "destroy"}),
        name="merchant-webhook-endpoint",
    ),
    path(
        "wallet/bank-accounts",
        WithdrawalViewSet.as_view({"get": "bank_accounts", "post": "bank_account_create"}),
        name="wallet-bank-accounts",
    ),
    path("wallet/withdraw", WithdrawalViewSet.as_view({"post": "withdraw"}), name="wallet-withdraw"),
    path(
        "wallet/withdrawals/<str:withdrawal_id>",
        WithdrawalViewSet.as_view({"get": "withdrawal"}),
        name="wallet-withdrawal",
    ),
    path("webhooks/gateway", GatewayWebhookViewSet.as_view({"post": "gateway"}), name="webhooks-gateway"),
    path("webhooks/bank", BankWebhookViewSet.as_view({"post": "bank"}), name="webhooks-bank"),
    path("transactions", TransactionViewSet.as_view({"get": "history"}), name="transactions"),
    path("transactions/<str:transaction_id>", TransactionViewSet.as_view({"get": "retrieve"}), name="transaction"),
    path("admin/reconciliation", AdminViewSet.as_view({"get": "reconciliation"}), name="admin-reconciliation"),
    path("admin/wallets/<str:wallet_id>/freeze", AdminViewSet.as_view({"post": "freeze"}), name="admin-wallet-freeze"),
    path(
        "admin/wallets/<str:wallet_id>/unfreeze",
        AdminViewSet.as_view({"post": "unfreeze"}),
        name="admin-wallet-unfreeze",
    ),
    path(
        "admin/campaigns",
        CampaignAdminViewSet.as_view({"get": "campaigns", "post": "create"}),
        name="admin-campaigns",
    ),
    path(
        "admin/campaigns/<str:campaign_id>/pause",
        CampaignAdminViewSet.as_view({"post": "pause"}),
        name="admin-campaign-pause",
    ),
    path(
        "admin/campaigns/<str:campaign_id>/resume",
        CampaignAdminViewSet.as_view({"post": "resume"}),
        name="admin-campaign-resume",
    ),
    path(
        "admin/adjustments",
        AdjustmentViewSet.as_view({"get": "index", "post": "make"}),
        name="admin-adjustments",
    ),
    path("admin/adjustments/<str:adjustment_id>", AdjustmentViewSet.as_view({"get": "show"}), name="admin-adjustment"),
    path(
        "admin/adjustments/<str:adjustment_id>/approve",
        AdjustmentViewSet.as_view({"post": "approve"}),
        name="admin-adjustment-approve",
    ),
    path(
        "admin/adjustments/<str:adjustment_id>/reject",
        AdjustmentViewSet.as_view({"post": "reject"}),
        name="admin-adjustment-reject",
    ),
]
