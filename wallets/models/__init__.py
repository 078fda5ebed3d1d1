"""The wallets app's models, one module per area. Each module's models are imported here,
which is where Django looks for them."""

from wallets.models.adjustments import Adjustment
from wallets.models.core import GatewayEvent, IdempotencyKey, PaymentAttempt, Wallet
from wallets.models.merchants import CashbackCampaign, CashbackGrant, MerchantProfile, Payment, Refund
from wallets.models.notifications import EmailNotification, WebhookDelivery, WebhookEndpoint
from wallets.models.throttles import ThrottleCounter
from wallets.models.withdrawals import BankAccount, BankEvent, SandboxPayout, Withdrawal

__all__ = [
    "Adjustment",
    "BankAccount",
    "BankEvent",
    "CashbackCampaign",
    "CashbackGrant",
    "EmailNotification",
    "GatewayEvent",
    "IdempotencyKey",
    "MerchantProfile",
    "Payment",
    "PaymentAttempt",
    "Refund",
    "SandboxPayout",
    "ThrottleCounter",
    "Wallet",
    "WebhookDelivery",
    "WebhookEndpoint",
    "Withdrawal",
]
