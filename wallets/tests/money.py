"""Test helpers for moving money: fund a wallet through the real posting service, and call
the transfer API."""

from __future__ import annotations

import uuid

from ledger.posting import Leg, PostingCommand, atomic, system_account, transaction_post
from wallets.models import Wallet
from wallets.tests.factories import DEFAULT_PIN


def fund(wallet: Wallet, amount: int) -> None:
    """Credit a wallet as a gateway deposit would (gateway clearing -> wallet)."""
    with atomic():
        transaction_post(
            command=PostingCommand(
                type="deposit",
                legs=(Leg(system_account("gateway_clearing").id, -amount), Leg(wallet.account_id, amount)),
                reference=f"test:{uuid.uuid4()}",
            )
        )


def balance_of(wallet: Wallet) -> int:
    wallet.account.refresh_from_db()
    return wallet.account.balance


def transfer_between(sender: Wallet, recipient: Wallet, amount: int) -> dict:
    """A transfer the way clients make one (the API, a new login of the sender); its 201 body."""
    from rest_framework.test import APIClient

    from wallets.tests.factories import auth_header

    response = transfer(APIClient(), auth_header(sender.user), to=recipient.handle, amount=amount)
    assert response.status_code == 201, response.json()
    return response.json()


def transfer(client, headers: dict, *, to: str, amount, pin: str = DEFAULT_PIN, key: str | None = None, **extra):
    body = {"to": to, "amount": amount, "pin": pin, **extra}
    key_header = {} if key == "" else {"HTTP_IDEMPOTENCY_KEY": key or uuid.uuid4().hex}
    return client.post("/api/v1/wallet/transfer", body, format="json", **headers, **key_header)
