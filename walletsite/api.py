"""Every JSON API route under /api/v1, with no trailing slash (API.md). Routes are listed
explicitly so that each path reads exactly as the contract spells it."""

from django.urls import path

from wallets.api_wallet import TransactionViewSet, WalletViewSet

urlpatterns = [
    path("wallet", WalletViewSet.as_view({"get": "retrieve"}), name="wallet"),
    path("wallet/balance", WalletViewSet.as_view({"get": "balance"}), name="wallet-balance"),
    path("wallet/transfer", WalletViewSet.as_view({"post": "transfer"}), name="wallet-transfer"),
    path("wallet/transactions", WalletViewSet.as_view({"get": "transactions"}), name="wallet-transactions"),
    path("transactions", TransactionViewSet.as_view({"get": "list"}), name="transactions"),
    path("transactions/<str:transaction_id>", TransactionViewSet.as_view({"get": "retrieve"}), name="transaction"),
]
