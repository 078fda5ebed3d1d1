"""The wallets app's models, one module per area. Each module's models are imported here,
which is where Django looks for them."""

from wallets.models.core import GatewayEvent, IdempotencyKey, PaymentAttempt, Wallet
from wallets.models.notifications import EmailNotification, WebhookDelivery, WebhookEndpoint

__all__ = [
    "EmailNotification",
    "GatewayEvent",
    "IdempotencyKey",
    "PaymentAttempt",
    "Wallet",
    "WebhookDelivery",
    "WebhookEndpoint",
]
