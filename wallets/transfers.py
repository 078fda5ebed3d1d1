"""P2P transfers between wallets."""

from __future__ import annotations

from collections.abc import Mapping

from ledger.models import Account
from ledger.posting import Leg, Posted, PostingCommand, transaction_post
from wallets.history import history_item
from wallets.limits import balance_ceiling_check, outgoing_limits_check
from wallets.models import Wallet
from wallets.services import wallet_resolve
from walletsite.errors import SameWallet, WalletFrozen


def wallets_must_be_active(*wallet_ids) -> None:
    """Refuse with 423 when a wallet is frozen. Called from a PostingCommand check, after the
    accounts are locked: freezing takes the same account lock (wallets.services), so the
    status read here cannot change before this transaction commits."""
    frozen = set(Wallet.objects.filter(id__in=wallet_ids, status=Wallet.Status.FROZEN).values_list("id", flat=True))
    if frozen:
        side = "The sending wallet" if wallet_ids[0] in frozen else "The receiving wallet"
        raise WalletFrozen(f"{side} is frozen")


def transfer_create(*, sender: Wallet, to: str, amount: int, note: str = "") -> tuple[Posted, Wallet]:
    """Move `amount` from the sender's wallet to the wallet `to` (handle or id). Runs inside
    the caller's database transaction (the idempotency record commits with it)."""
    from ledger.outbox import outbox_emit

    recipient = wallet_resolve(ref=to)
    if recipient.id == sender.id:
        raise SameWallet("A wallet cannot send money to itself")

    def check(accounts: Mapping[int, Account]) -> None:
        wallets_must_be_active(sender.id, recipient.id)
        outgoing_limits_check(wallet=sender, amount=amount, accounts=accounts)
        balance_ceiling_check(wallet=recipient, amount=amount, accounts=accounts)

    posted = transaction_post(
        command=PostingCommand(
            type="transfer",
            legs=(Leg(sender.account_id, -amount), Leg(recipient.account_id, amount)),
            note=note,
            reference=f"wallet:{sender.id}",
            check=check,
        )
    )
    outbox_emit(
        type="transfer.posted",
        payload={
            "transaction_id": str(posted.transaction.id),
            "wallet_ids": [str(sender.id), str(recipient.id)],
            "from_wallet": str(sender.id),
            "to_wallet": str(recipient.id),
            "amount": amount,
            "currency": sender.currency,
        },
    )
    return posted, recipient


def transfer_response(*, posted: Posted, sender: Wallet, recipient: Wallet) -> dict:
    """The 201 body: the sender's history item and posted balance after the transfer."""
    entry = posted.entry_for(sender.account_id)
    entry.transaction = posted.transaction
    entry.counterparty_account_id = recipient.account_id
    item = history_item(entry, currency=sender.currency, parties={recipient.account_id: recipient})
    return {"transaction": item, "balance": entry.balance_after}
