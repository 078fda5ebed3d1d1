"""Wallet lifecycle: open (with its ledger account), resolve by handle or id, freeze and
unfreeze. Money flows live in their own modules (transfers, topups)."""

from __future__ import annotations

import re
import secrets
import uuid

from django.conf import settings
from django.db import IntegrityError, transaction

from ledger.audit import audit_record
from ledger.posting import account_open, accounts_lock
from wallets.models import Wallet
from walletsite.errors import WalletNotFound

_HANDLE_CHARS = re.compile(r"[^a-z0-9._-]+")


def _handle_base(*, name: str, email: str) -> str:
    base = _HANDLE_CHARS.sub("", (name or email.split("@", 1)[0]).lower().replace(" ", "."))
    base = base.strip("._-")[:40]
    return base or "user"


def wallet_open(*, user, currency: str | None = None) -> Wallet:
    """Open the user's one wallet and its ledger account, balance 0. Runs inside the
    caller's transaction (registration creates the user and the wallet together)."""
    currency = currency or settings.WALLET["CURRENCY"]
    account = account_open(currency=currency)
    base = _handle_base(name=user.name, email=user.email)
    candidate = f"{base}@wallet"
    for _ in range(20):
        try:
            with transaction.atomic():
                return Wallet.objects.create(user=user, account=account, handle=candidate, currency=currency)
        except IntegrityError:
            # The handle is taken: try the name with a short random suffix.
            candidate = f"{base}.{secrets.token_hex(3)}@wallet"
    raise RuntimeError("could not find a free wallet handle")


def wallet_ref_parse(ref: str) -> tuple[str, str | uuid.UUID] | None:
    """("handle", lowercased handle) or ("id", UUID) for a wallet reference as clients send it
    (a handle, case-insensitive, or a wallet id); None when it can be neither."""
    ref = (ref or "").strip()
    if "@" in ref:
        return "handle", ref.lower()
    try:
        return "id", uuid.UUID(ref)
    except ValueError:
        return None


def wallet_not_found(ref: str) -> WalletNotFound:
    return WalletNotFound(f"No wallet has the handle or id {(ref or '').strip()[:80]!r}")


def wallet_resolve(*, ref: str) -> Wallet:
    """A wallet by its handle (case-insensitive) or its id; 404 wallet_not_found."""
    parsed = wallet_ref_parse(ref)
    wallet = None
    if parsed is not None:
        kind, value = parsed
        wallet = Wallet.objects.select_related("user", "account").filter(**{kind: value}).first()
    if wallet is None:
        raise wallet_not_found(ref)
    return wallet


def _set_status(*, wallet_id, status: str, actor, reason: str, action: str) -> Wallet:
    if not reason or not reason.strip():
        raise ValueError("a reason is required")
    with transaction.atomic(durable=True):
        wallet = Wallet.objects.select_related("user").get(id=wallet_id)
        # Take the wallet's account lock: a transfer checks the status under the same lock,
        # so it sees either the old status or the new one, never a status changing under it.
        accounts_lock(account_ids=[wallet.account_id])
        wallet = Wallet.objects.select_for_update().get(id=wallet_id)
        if wallet.status != status:
            wallet.status = status
            wallet.status_reason = reason.strip()
            wallet.save(update_fields=["status", "status_reason"])
            audit_record(
                actor=actor,
                actor_label=getattr(actor, "email", None) or "system",
                action=action,
                target=f"wallet:{wallet.id}",
                reason=reason,
                data={"handle": wallet.handle},
            )
    return wallet


def wallet_freeze(*, wallet_id, actor, reason: str) -> Wallet:
    """Freeze a wallet: it can neither send nor receive (423 wallet_frozen). Audited."""
    return _set_status(
        wallet_id=wallet_id, status=Wallet.Status.FROZEN, actor=actor, reason=reason, action="wallet.freeze"
    )


def wallet_unfreeze(*, wallet_id, actor, reason: str) -> Wallet:
    return _set_status(
        wallet_id=wallet_id, status=Wallet.Status.ACTIVE, actor=actor, reason=reason, action="wallet.unfreeze"
    )
