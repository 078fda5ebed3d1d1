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

from django.db import connection
from django.utils import timezone

from accounts.authentication import open_logins_query
from accounts.models import Tier, User
from accounts.pin import pin_evaluate, pins_lock_query, pins_save_query
from ledger.batcher import Batcher, Executed
from ledger.models import Account
from ledger.outbox import outbox_emit_query
from ledger.posting import Leg, Posted, PostingCommand, accounts_lock_selected_query, transactions_evaluate
from wallets.history import history_item
from wallets.idempotency import (
    IdempotentRequest,
    Outcome,
    idempotency_lock_query,
    idempotency_outcome,
    idempotency_record_query,
    idempotency_stored_query,
)
from wallets.limits import Outgoing, balance_ceiling_check, outgoing_limits_check, outgoing_totals_query
from wallets.models import Wallet
from wallets.services import wallet_not_found, wallet_ref_parse
from walletsite.db import Query, model_columns, model_from_row, pipelined
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


# The wallets a batch concerns: its senders' (by user) and every recipient named (by handle
# or id). The parties, their accounts' locks and their statuses are each read by it, in
# statements of one round trip; all three find the same wallets because a wallet is never
# deleted and its id, user and handle never change.
_PARTIES_WHERE = "w.user_id = ANY(%s::uuid[]) OR w.handle = ANY(%s::text[]) OR w.id = ANY(%s::uuid[])"


@dataclass(frozen=True)
class _Parties:
    user_ids: list
    handles: list
    wallet_ids: list

    @property
    def params(self) -> list[list]:
        return [self.user_ids, self.handles, self.wallet_ids]


def _parties_query(parties: _Parties) -> Query[list[Wallet]]:
    """The parties' wallets, each with its owner (the names the answer shows) and the owner's
    tier (`wallet.user.tier`)."""

    def read(rows: list[tuple]) -> list[Wallet]:
        wallets = []
        for row in rows:
            wallet = model_from_row(Wallet, row[:_WALLET_WIDTH])
            user = User.from_db(connection.alias, _USER_FIELDS, (wallet.user_id, *row[_WALLET_WIDTH:_TIER_AT]))
            user.tier = model_from_row(Tier, row[_TIER_AT:])
            # Cached on the wallet alone: `wallet.user = user` would also cache the wallet on
            # the user, and the pair would outlive the batch as cyclic garbage.
            _WALLET_USER.set_cached_value(wallet, user)
            wallets.append(wallet)
        return wallets

    return Query(_PARTIES_SQL, parties.params, read=read)


_WALLET_USER = Wallet._meta.get_field("user")
_USER_FIELDS = ["id", "name", "business_name", "tier_id"]
_WALLET_WIDTH = len(Wallet._meta.concrete_fields)
_TIER_AT = _WALLET_WIDTH + len(_USER_FIELDS) - 1
_PARTIES_SQL = (
    f"SELECT {model_columns(Wallet, 'w')}, u.name, u.business_name, u.tier_id, {model_columns(Tier, 't')}"  # noqa: S608
    " FROM wallets_wallet AS w JOIN accounts_user AS u ON u.id = w.user_id"
    " JOIN accounts_tier AS t ON t.code = u.tier_id"
    f" WHERE {_PARTIES_WHERE}"
)


_PARTIES_ACCOUNTS_SQL = f"SELECT w.account_id FROM wallets_wallet AS w WHERE {_PARTIES_WHERE}"  # noqa: S608
_STATUSES_SQL = f"SELECT w.id, w.status FROM wallets_wallet AS w WHERE {_PARTIES_WHERE}"  # noqa: S608


def _parties_accounts_lock_query(parties: _Parties) -> Query[dict[int, Account]]:
    """Lock the parties' accounts, in id order (ledger.posting's lock order)."""
    return accounts_lock_selected_query(ids_sql=_PARTIES_ACCOUNTS_SQL, params=parties.params)


def _statuses_query(parties: _Parties) -> Query[dict]:
    return Query(_STATUSES_SQL, parties.params, read=dict)


_CLOCK = Query("SELECT statement_timestamp()", [], read=lambda rows: rows[0][0])


def transfers_execute(requests: Sequence[TransferRequest]) -> Executed[TransferAnswer]:
    """Answer a batch of transfer requests inside the caller's transaction: one Outcome (to
    send, and stored with its key when the request reached the money) or one ApiError (not
    stored: the client may fix the request and retry with the same key) per request, in
    order, and the writes that the batcher sends with the COMMIT. No two requests of a batch
    have the same sender (the batcher's conflict key), so the stored keys and outgoing totals
    read once hold for every request of it.

    Two round trips whatever the batch's size, each a pipeline of statements that do not
    need one another's answers (walletsite.db.pipelined): the reads and locks here, then the
    writes and the COMMIT (ledger.batcher)."""
    answers: list[TransferAnswer | None] = [None] * len(requests)
    idempotency = [r.idempotency for r in requests]
    user_ids = {r.user_id for r in requests}

    # 1. One round trip reads and locks everything the batch needs, in this order (later
    #    statements see what the earlier locks' previous holders committed): the
    #    Idempotency-Key locks, the stored answers, the logins, the PINs (locked, in user
    #    order: concurrent guesses of one user queue), the parties' wallets (the senders' and
    #    every recipient named), their accounts (locked in id order), then under those locks
    #    the wallets' statuses, the senders' outgoing totals and the time the batch's rows
    #    carry. All of it is read for every request of the batch, replays and refusals
    #    included, because none of it waits for another statement's answer: a replay needs
    #    no PIN and no account, it only shares their locks until the batch commits.
    refs = {i: wallet_ref_parse(r.to) for i, r in enumerate(requests)}
    parties = _Parties(
        user_ids=list(user_ids),
        handles=[value for parsed in refs.values() if parsed and parsed[0] == "handle" for value in parsed[1:]],
        wallet_ids=[value for parsed in refs.values() if parsed and parsed[0] == "id" for value in parsed[1:]],
    )
    locked, stored, open_logins, pins, wallets, accounts, statuses, sent, created_at = pipelined(
        idempotency_lock_query(requests=idempotency),
        idempotency_stored_query(requests=idempotency),
        open_logins_query(family_ids=[r.family_id for r in requests]),
        pins_lock_query(user_ids=user_ids),
        _parties_query(parties),
        _parties_accounts_lock_query(parties),
        _statuses_query(parties),
        outgoing_totals_query(user_ids=parties.user_ids),
        _CLOCK,
    )
    for i, request in enumerate(requests):
        if not locked[i]:
            answers[i] = IdempotencyKeyInUse("A request with this Idempotency-Key is still running; retry shortly")
            continue
        row = stored.get((request.user_id, request.idempotency.key))
        if row is not None:
            try:
                answers[i] = idempotency_outcome(request=request.idempotency, row=row)
            except ApiError as error:
                answers[i] = error.as_answer()
    live = [i for i in range(len(requests)) if answers[i] is None]
    if not live:
        return Executed(answers)  # type: ignore[arg-type]

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
            answers[i] = error.as_answer()
            continue
        # From here on the request reached the money operation: its answer is stored.
        recipient = by_ref.get(refs[i]) if refs[i] else None
        if recipient is None:
            answers[i] = _refused(wallet_not_found(request.to))
        elif recipient.id == sender.id:
            answers[i] = _refused(SameWallet("A wallet cannot send money to itself"))
        else:
            moving.append((i, sender, recipient))

    # 2. The posting: every transfer evaluated in order against the locked accounts.
    writes: list[Query] = []
    if moving:
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
        batch = transactions_evaluate(commands=commands, accounts=accounts, created_at=created_at)
        events = []
        for (i, sender, recipient), result in zip(moving, batch.results, strict=True):
            if isinstance(result, Posted):
                answers[i] = Outcome(
                    201, transfer_response(posted=result, sender=sender, recipient=recipient), replayed=False
                )
                payload = _event_payload(posted=result, sender=sender, recipient=recipient, amount=requests[i].amount)
                events.append(("transfer.posted", payload))
            else:
                answers[i] = _refused(result.error)
        if batch.write is not None:
            # The outbox rows commit with the money (ledger.outbox), one INSERT for the batch.
            writes += [batch.write, outbox_emit_query(events=events)]

    # 3. The writes, sent with the COMMIT: the money and its events, the PINs' lockout
    #    state, the stored answers.
    if changed_pins:
        writes.append(pins_save_query(records=list(changed_pins.values())))
    answered = [(requests[i].idempotency, answers[i]) for i in live if isinstance(answers[i], Outcome)]
    if answered:
        writes.append(idempotency_record_query(answered=answered))
    return Executed(answers, writes)  # type: ignore[arg-type]


TRANSFERS: Batcher[TransferRequest, TransferAnswer] = Batcher(
    name="transfers", execute=transfers_execute, conflict_key=lambda request: request.user_id
)
