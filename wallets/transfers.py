"""P2P transfers between wallets.

`transfers_execute` answers whole transfer requests, many at a time: the transfer route's
batch under group commit (ledger.batcher, `TRANSFERS`). In one database transaction it does,
for every request of the batch, what money_response does for one request of the other money
routes, in the same order and with the same answers: the Idempotency-Key lock and replay, the
login check, the PIN, the recipient, then the posting with its checks; and it stores each
answer with its key. The database work is a fixed number of statements per batch, whatever
its size.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from django.db.models import Q
from django.utils import timezone

from accounts.models import Pin, Tier, TokenFamily
from accounts.pin import PIN_STATE_FIELDS, pin_evaluate
from ledger.batcher import Batcher
from ledger.models import Account
from ledger.outbox import outbox_emit_many
from ledger.posting import Leg, Posted, PostingCommand, accounts_lock, transactions_post
from wallets.history import history_item
from wallets.idempotency import (
    IdempotentRequest,
    Outcome,
    idempotency_lock_many,
    idempotency_outcome,
    idempotency_record_many,
    idempotency_stored_many,
)
from wallets.limits import Outgoing, balance_ceiling_check, outgoing_limits_check, outgoing_totals_many
from wallets.models import Wallet
from wallets.services import wallet_not_found, wallet_ref_parse
from walletsite.errors import (
    ApiError,
    Forbidden,
    IdempotencyKeyInUse,
    InvalidToken,
    SameWallet,
    WalletFrozen,
    problem,
)


def wallets_must_be_active(*wallet_ids, statuses: Mapping | None = None) -> None:
    """Refuse with 423 when a wallet is frozen. Called from a PostingCommand check, after the
    accounts are locked: freezing takes the same account lock (wallets.services), so the
    status read here cannot change before this transaction commits. `statuses` (wallet id to
    status) are the statuses a batch read at once, under the same locks."""
    if statuses is None:
        statuses = dict(Wallet.objects.filter(id__in=wallet_ids).values_list("id", "status"))
    frozen = {wallet_id for wallet_id in wallet_ids if statuses.get(wallet_id) == Wallet.Status.FROZEN}
    if frozen:
        side = "The sending wallet" if wallet_ids[0] in frozen else "The receiving wallet"
        raise WalletFrozen(f"{side} is frozen")


def _transfer_command(
    *,
    sender: Wallet,
    recipient: Wallet,
    amount: int,
    note: str,
    statuses: Mapping,
    tiers: Mapping[uuid.UUID, Tier],
    sent: Outgoing,
) -> PostingCommand:
    """The posting of one transfer, with the checks run under the accounts' locks against
    what the batch read under them (statuses, tiers, the sender's outgoing totals)."""

    def check(accounts: Mapping[int, Account]) -> None:
        wallets_must_be_active(sender.id, recipient.id, statuses=statuses)
        outgoing_limits_check(wallet=sender, amount=amount, accounts=accounts, tier=tiers[sender.user_id], sent=sent)
        balance_ceiling_check(wallet=recipient, amount=amount, accounts=accounts, tier=tiers[recipient.user_id])

    return PostingCommand(
        type="transfer",
        legs=(Leg(sender.account_id, -amount), Leg(recipient.account_id, amount)),
        note=note,
        reference=f"wallet:{sender.id}",
        check=check,
    )


def _event_payload(*, posted: Posted, sender: Wallet, recipient: Wallet, amount: int) -> dict:
    return {
        "transaction_id": str(posted.transaction.id),
        "wallet_ids": [str(sender.id), str(recipient.id)],
        "from_wallet": str(sender.id),
        "to_wallet": str(recipient.id),
        "amount": amount,
        "currency": sender.currency,
    }


def transfer_response(*, posted: Posted, sender: Wallet, recipient: Wallet) -> dict:
    """The 201 body: the sender's history item and posted balance after the transfer."""
    entry = posted.entry_for(sender.account_id)
    entry.transaction = posted.transaction
    entry.counterparty_account_id = recipient.account_id
    item = history_item(entry, currency=sender.currency, parties={recipient.account_id: recipient})
    return {"transaction": item, "balance": entry.balance_after}


# -- the transfer route under group commit ----------------------------------------------


@dataclass(frozen=True)
class TransferRequest:
    """One POST /wallet/transfer as the route validated it. `family_id` is the access token's
    login, checked here (the route authenticates from the token's claims alone)."""

    idempotency: IdempotentRequest
    family_id: uuid.UUID
    to: str
    amount: int
    note: str
    pin: str = field(repr=False)

    @property
    def user_id(self):
        return self.idempotency.user_id


TransferAnswer = Outcome | ApiError


def _refused(error: ApiError) -> Outcome:
    return Outcome(error.status, problem(error.code, error.detail, **error.extra), replayed=False)


def transfers_execute(requests: Sequence[TransferRequest]) -> list[TransferAnswer]:
    """Answer a batch of transfer requests inside the caller's transaction: one Outcome (to
    send, and stored with its key when the request reached the money) or one ApiError (not
    stored: the client may fix the request and retry with the same key) per request, in
    order. No two requests of a batch have the same sender (the batcher's conflict key),
    so the stored keys and outgoing totals read once hold for every request of it."""
    answers: list[TransferAnswer | None] = [None] * len(requests)

    # 1. The Idempotency-Key locks, then (a later statement, so it sees what the locks'
    #    previous holders committed) the stored answers: replays need no PIN.
    locked = idempotency_lock_many(requests=[r.idempotency for r in requests])
    for i, is_locked in enumerate(locked):
        if not is_locked:
            answers[i] = IdempotencyKeyInUse("A request with this Idempotency-Key is still running; retry shortly")
    stored = idempotency_stored_many(requests=[r.idempotency for i, r in enumerate(requests) if locked[i]])
    for i, request in enumerate(requests):
        row = stored.get((request.user_id, request.idempotency.key))
        if answers[i] is None and row is not None:
            try:
                answers[i] = idempotency_outcome(request=request.idempotency, row=row)
            except ApiError as error:
                answers[i] = error
    live = [i for i in range(len(requests)) if answers[i] is None]
    if not live:
        return answers  # type: ignore[return-value]

    # 2. Logins, PINs (locked, in user order: concurrent guesses of one user queue), and the
    #    wallets: the senders' and every recipient named.
    user_ids = {requests[i].user_id for i in live}
    open_logins = set(
        TokenFamily.objects.filter(
            id__in=[requests[i].family_id for i in live], revoked_at__isnull=True, user__is_active=True
        ).values_list("id", flat=True)
    )
    pins = {
        pin.user_id: pin for pin in Pin.objects.select_for_update().filter(user_id__in=user_ids).order_by("user_id")
    }
    refs = {i: wallet_ref_parse(requests[i].to) for i in live}
    handles = [value for parsed in refs.values() if parsed and parsed[0] == "handle" for value in parsed[1:]]
    ids = [value for parsed in refs.values() if parsed and parsed[0] == "id" for value in parsed[1:]]
    wallets = list(
        Wallet.objects.select_related("user__tier").filter(
            Q(user_id__in=user_ids) | Q(handle__in=handles) | Q(id__in=ids)
        )
    )
    by_user = {wallet.user_id: wallet for wallet in wallets}
    by_ref = {("handle", wallet.handle): wallet for wallet in wallets} | {
        ("id", wallet.id): wallet for wallet in wallets
    }

    now = timezone.now()
    changed_pins: dict = {}
    moving: list[tuple[int, Wallet, Wallet]] = []
    for i in live:
        request = requests[i]
        try:
            if request.family_id not in open_logins:
                raise InvalidToken("The token's login has ended")
            sender = by_user.get(request.user_id)
            if sender is None:
                raise Forbidden("This user has no wallet")
            record = pins.get(request.user_id)
            refusal, changed = pin_evaluate(record=record, user_id=request.user_id, pin=request.pin, now=now)
            if changed:
                changed_pins[record.user_id] = record
            if refusal is not None:
                raise refusal
        except ApiError as error:
            answers[i] = error
            continue
        # From here on the request reached the money operation: its answer is stored.
        recipient = by_ref.get(refs[i]) if refs[i] else None
        if recipient is None:
            answers[i] = _refused(wallet_not_found(request.to))
        elif recipient.id == sender.id:
            answers[i] = _refused(SameWallet("A wallet cannot send money to itself"))
        else:
            moving.append((i, sender, recipient))

    # 3. The posting: the accounts locked in id order, then (under those locks) the wallets'
    #    statuses and the senders' outgoing totals, then every transfer evaluated in order.
    if moving:
        accounts = accounts_lock(account_ids={w.account_id for _, s, r in moving for w in (s, r)})
        wallet_ids = {w.id for _, s, r in moving for w in (s, r)}
        statuses = dict(Wallet.objects.filter(id__in=wallet_ids).values_list("id", "status"))
        sent = outgoing_totals_many(account_ids=sorted({s.account_id for _, s, _ in moving}))
        tiers = {w.user_id: w.user.tier for _, s, r in moving for w in (s, r)}
        commands = [
            _transfer_command(
                sender=s,
                recipient=r,
                amount=requests[i].amount,
                note=requests[i].note,
                statuses=statuses,
                tiers=tiers,
                sent=sent[s.account_id],
            )
            for i, s, r in moving
        ]
        events = []
        for (i, sender, recipient), result in zip(
            moving, transactions_post(commands=commands, accounts=accounts), strict=True
        ):
            if isinstance(result, Posted):
                answers[i] = Outcome(
                    201, transfer_response(posted=result, sender=sender, recipient=recipient), replayed=False
                )
                payload = _event_payload(posted=result, sender=sender, recipient=recipient, amount=requests[i].amount)
                events.append(("transfer.posted", payload))
            else:
                answers[i] = _refused(result.error)
        if events:
            # The outbox rows commit with the money (ledger.outbox), one INSERT for the batch.
            outbox_emit_many(events=events)

    if changed_pins:
        Pin.objects.bulk_update(list(changed_pins.values()), PIN_STATE_FIELDS)
    idempotency_record_many(
        answered=[(requests[i].idempotency, answers[i]) for i in live if isinstance(answers[i], Outcome)]
    )
    return answers  # type: ignore[return-value]


TRANSFERS: Batcher[TransferRequest, TransferAnswer] = Batcher(
    name="transfers", execute=transfers_execute, conflict_key=lambda request: request.user_id
)
