"""The baseline's money code, written the textbook way: lock the two wallets with
select_for_update, change the balances in Python, save() them, create the entries."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import bcrypt
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from bench.baseline.models import Entry, Transaction, Wallet
from walletsite.errors import InsufficientFunds, InvalidPin, PinLocked

PIN_SCHEMES = ("hmac", "bcrypt")
BCRYPT_ROUNDS = 12


def pin_digest(*, user_id, pin: str) -> str:
    pepper = settings.BASELINE["PIN_PEPPER"].encode()
    return hmac.new(pepper, f"{user_id}:{pin}".encode(), hashlib.sha256).hexdigest()


def pin_bcrypt_hash(pin: str) -> str:
    return bcrypt.hashpw(pin.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


def pin_check(*, wallet: Wallet, pin: str, scheme: str) -> None:
    """Raise pin_locked or invalid_pin. A wrong PIN is counted at once (its own UPDATE, in
    autocommit), so the count survives the failed request; the fifth in a row locks."""
    now = timezone.now()
    if wallet.pin_locked_until is not None and wallet.pin_locked_until > now:
        raise PinLocked()
    if scheme == "bcrypt":
        good = bcrypt.checkpw(pin.encode(), wallet.pin_bcrypt.encode())
    else:
        good = hmac.compare_digest(pin_digest(user_id=wallet.user_id, pin=pin), wallet.pin_digest)
    if good:
        if wallet.pin_failures:
            Wallet.objects.filter(id=wallet.id).update(pin_failures=0, pin_locked_until=None)
        return
    failures = wallet.pin_failures + 1
    if failures >= settings.BASELINE["PIN_MAX_FAILURES"]:
        locked_until = now + timedelta(seconds=settings.BASELINE["PIN_LOCK_SECONDS"])
        Wallet.objects.filter(id=wallet.id).update(pin_failures=0, pin_locked_until=locked_until)
    else:
        Wallet.objects.filter(id=wallet.id).update(pin_failures=F("pin_failures") + 1)
    raise InvalidPin()


def transfer_post(*, sender_id, recipient_id, amount: int, note: str) -> tuple[Entry, Wallet, Wallet]:
    """Move `amount` between two wallets inside the caller's transaction.atomic(); return the
    sender's entry and both wallets as saved."""
    # Lock order: both wallets in ascending id, so opposite transfers queue, never deadlock.
    locked = {
        wallet.id: wallet
        for wallet in Wallet.objects.select_for_update(of=("self",), no_key=True)
        .filter(id__in=[sender_id, recipient_id])
        .order_by("id")
    }
    sender, recipient = locked[sender_id], locked[recipient_id]
    if not sender.is_system and sender.balance < amount:
        raise InsufficientFunds()
    sender.balance -= amount
    sender.save()
    recipient.balance += amount
    recipient.save()
    txn = Transaction.objects.create(type="transfer", note=note)
    debit = Entry.objects.create(transaction=txn, wallet=sender, amount=-amount, balance_after=sender.balance)
    Entry.objects.create(transaction=txn, wallet=recipient, amount=amount, balance_after=recipient.balance)
    return debit, sender, recipient


def funding_wallet() -> Wallet:
    wallet, _ = Wallet.objects.get_or_create(handle="funding@system", defaults={"is_system": True})
    return wallet


def wallet_fund(*, wallet: Wallet, amount: int) -> None:
    """Seed money: a transfer from the funding wallet."""
    with transaction.atomic():
        transfer_post(sender_id=funding_wallet().id, recipient_id=wallet.id, amount=amount, note="seed")
