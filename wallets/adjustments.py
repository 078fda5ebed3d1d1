"""Staff money operations with maker-checker (API.md "Staff money operations").

One staff member (the maker, permission `wallets.make_adjustment`) records an adjustment:
from where, to where, how much and why. Nothing moves. A different staff member (the checker,
`wallets.approve_adjustment`) approves it, which posts it as one ledger transaction of type
adjustment, or rejects it. Both steps are audited. The API (wallets.api_adjustments) and the
Django admin (wallets.admin_adjustments) call these same services.

Parties: a customer or merchant wallet (handle or id), or one of the system accounts
`system:adjustments` (the ledger's counterpart for manual corrections) and
`system:cashback_pool` (funding the pool is adjustments -> cashback_pool).

Decisions:
- An approval that the ledger refuses (a customer wallet without the money, or a cashback pool
  that would go negative) fails with that error, 422, and the adjustment stays pending: the
  checker can approve it later, once the money is there, or reject it.
- Adjustments are the staff's own corrections, made by two people; they are not subject to the
  customer's limits (they are not outgoing transfers, payments or withdrawals, nor counted as
  such) nor to the balance ceiling, and they reach frozen wallets (recovering money from a
  frozen wallet is what they are for).
- The maker may reject (withdraw) their own adjustment, which moves nothing; only the approval
  needs a second person.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from django.core import signing
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from ledger.audit import audit_record
from ledger.models import Account
from ledger.outbox import outbox_emit
from ledger.posting import Leg, PostingCommand, atomic, system_account, transaction_post, with_retries
from wallets.models import Adjustment, Wallet
from wallets.services import wallet_resolve
from walletsite.errors import (
    AdjustmentNotFound,
    AdjustmentNotPending,
    ApprovalByMaker,
    CurrencyMismatch,
    Forbidden,
    InsufficientFunds,
    InvalidCursor,
    SameWallet,
    ValidationFailed,
)

# The system accounts staff may name, by the reference they use.
SYSTEM_PARTIES = {"system:adjustments": "adjustments", "system:cashback_pool": "cashback_pool"}
MAKE_PERMISSION = "wallets.make_adjustment"
APPROVE_PERMISSION = "wallets.approve_adjustment"


def _actor_label(actor: User) -> str:
    return actor.email


def party_resolve(*, ref: str, field: str) -> Account:
    """The ledger account a `from` / `to` reference names: a wallet handle or id (404
    wallet_not_found if none), or an allowed system account (400 otherwise)."""
    if ref.strip().lower().startswith("system:"):
        code = SYSTEM_PARTIES.get(ref.strip().lower())
        if code is None:
            message = f"Must be a wallet handle, a wallet id, or one of {', '.join(SYSTEM_PARTIES)}"
            raise ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])
        return system_account(code)
    return wallet_resolve(ref=ref).account


def party_label(account: Account) -> str:
    """How an adjustment's party reads: `system:<code>` or the wallet's handle."""
    if account.kind == Account.Kind.SYSTEM:
        return f"system:{account.code}"
    return account.wallet.handle


def adjustment_create(*, maker: User, from_ref: str, to_ref: str, amount: int, reason: str) -> Adjustment:
    """Record an adjustment pending approval; moves nothing. Runs in the caller's transaction
    when there is one (the API's, with its idempotency record), else in its own."""
    if not maker.has_perm(MAKE_PERMISSION):
        raise Forbidden("Making an adjustment needs the make_adjustment permission")
    if not reason or not reason.strip():
        raise ValidationFailed("reason: A reason is required", errors=[{"field": "reason", "message": "Required"}])
    if type(amount) is not int or amount <= 0:
        raise ValidationFailed(
            "amount: Must be a positive integer", errors=[{"field": "amount", "message": "Must be positive"}]
        )
    source = party_resolve(ref=from_ref, field="from")
    target = party_resolve(ref=to_ref, field="to")
    if source.id == target.id:
        raise SameWallet("An adjustment moves money between two different accounts")
    if source.currency != target.currency:
        raise CurrencyMismatch("The two accounts of this adjustment hold different currencies")
    with transaction.atomic():
        adjustment = Adjustment.objects.create(
            from_account=source,
            to_account=target,
            amount=amount,
            currency=source.currency,
            reason=reason.strip(),
            created_by=maker,
        )
        audit_record(
            actor=maker,
            actor_label=_actor_label(maker),
            action="adjustment.created",
            target=f"adjustment:{adjustment.id}",
            reason=adjustment.reason,
            data={
                "from": party_label(source),
                "to": party_label(target),
                "amount": amount,
                "currency": source.currency,
            },
        )
    return adjustment


def _lock(*, adjustment_id) -> Adjustment:
    """The adjustment, locked: the first lock of an approval or rejection, taken before any
    ledger account. 404 adjustment_not_found if there is none."""
    adjustment_uuid = _parse_id(adjustment_id)
    try:
        adjustment = (
            Adjustment.objects.select_for_update(of=("self",))
            .select_related("from_account", "to_account")
            .get(id=adjustment_uuid)
        )
    except Adjustment.DoesNotExist:
        raise AdjustmentNotFound(f"No adjustment has the id {str(adjustment_id)[:80]!r}") from None
    return adjustment


def _require_pending(adjustment: Adjustment) -> None:
    if adjustment.status != Adjustment.Status.PENDING_APPROVAL:
        raise AdjustmentNotPending(f"The adjustment is {adjustment.status}, not pending approval")


def adjustment_approve(*, adjustment_id, checker: User, comment: str = "") -> Adjustment:
    """Post a pending adjustment, approved by `checker`, who must not be its maker. Approving
    twice (also at the same moment) posts once: the second approval waits for the row lock,
    then finds it posted (409 adjustment_not_pending)."""
    if not checker.has_perm(APPROVE_PERMISSION):
        raise Forbidden("Approving an adjustment needs the approve_adjustment permission")

    def block() -> Adjustment:
        with atomic():
            # Lock order: the adjustment row first, then the ledger accounts (in
            # transaction_post, ascending id), as every money flow does.
            adjustment = _lock(adjustment_id=adjustment_id)
            if adjustment.created_by_id == checker.id:
                raise ApprovalByMaker("A different staff member must approve this adjustment")
            _require_pending(adjustment)
            source_id, target_id = adjustment.from_account_id, adjustment.to_account_id

            def check(accounts: Mapping[int, Account]) -> None:
                source = accounts[source_id]
                # The ledger keeps customer balances from going negative; the cashback pool is
                # a system account, kept non-negative here.
                pool = source.kind == Account.Kind.SYSTEM and source.code == "cashback_pool"
                if pool and source.balance - adjustment.amount < 0:
                    raise InsufficientFunds("The cashback pool does not have enough money for this adjustment")

            posted = transaction_post(
                command=PostingCommand(
                    type="adjustment",
                    legs=(Leg(source_id, -adjustment.amount), Leg(target_id, adjustment.amount)),
                    reference=f"adjustment:{adjustment.id}",
                    check=check,
                )
            )
            adjustment.status = Adjustment.Status.POSTED
            adjustment.transaction = posted.transaction
            adjustment.decided_by = checker
            adjustment.decided_at = timezone.now()
            adjustment.save(update_fields=["status", "transaction", "decided_by", "decided_at"])
            audit_record(
                actor=checker,
                actor_label=_actor_label(checker),
                action="adjustment.approved",
                target=f"adjustment:{adjustment.id}",
                reason=adjustment.reason,
                data={
                    "transaction_id": str(posted.transaction.id),
                    "maker": adjustment.created_by.email,
                    "comment": comment.strip(),
                },
            )
            wallet_ids = Wallet.objects.filter(account_id__in=[source_id, target_id]).values_list("id", flat=True)
            outbox_emit(
                type="adjustment.posted",
                payload={
                    "adjustment_id": str(adjustment.id),
                    "transaction_id": str(posted.transaction.id),
                    "wallet_ids": sorted(str(wallet_id) for wallet_id in wallet_ids),
                    "amount": adjustment.amount,
                    "currency": adjustment.currency,
                    "from": party_label(adjustment.from_account),
                    "to": party_label(adjustment.to_account),
                },
            )
            return adjustment

    return with_retries(block)


def adjustment_reject(*, adjustment_id, checker: User, reason: str) -> Adjustment:
    """Reject a pending adjustment with a reason; nothing moves. The maker may withdraw their
    own this way."""
    if not checker.has_perm(APPROVE_PERMISSION):
        raise Forbidden("Rejecting an adjustment needs the approve_adjustment permission")
    if not reason or not reason.strip():
        raise ValidationFailed("reason: A reason is required", errors=[{"field": "reason", "message": "Required"}])
    with atomic():
        adjustment = _lock(adjustment_id=adjustment_id)
        _require_pending(adjustment)
        adjustment.status = Adjustment.Status.REJECTED
        adjustment.decided_by = checker
        adjustment.decided_at = timezone.now()
        adjustment.decision_reason = reason.strip()
        adjustment.save(update_fields=["status", "decided_by", "decided_at", "decision_reason"])
        audit_record(
            actor=checker,
            actor_label=_actor_label(checker),
            action="adjustment.rejected",
            target=f"adjustment:{adjustment.id}",
            reason=adjustment.decision_reason,
            data={"maker": adjustment.created_by.email},
        )
    return adjustment


# --- selectors ---------------------------------------------------------------------------


def _parse_id(adjustment_id) -> uuid.UUID:
    try:
        return adjustment_id if isinstance(adjustment_id, uuid.UUID) else uuid.UUID(str(adjustment_id))
    except ValueError:
        raise AdjustmentNotFound(f"No adjustment has the id {str(adjustment_id)[:80]!r}") from None


def _with_parties(queryset):
    return queryset.select_related("from_account__wallet", "to_account__wallet", "created_by", "decided_by")


def adjustment_get(*, adjustment_id) -> Adjustment:
    adjustment = _with_parties(Adjustment.objects.all()).filter(id=_parse_id(adjustment_id)).first()
    if adjustment is None:
        raise AdjustmentNotFound(f"No adjustment has the id {str(adjustment_id)[:80]!r}")
    return adjustment


_CURSOR_SALT = "wallets.adjustments.cursor.v1"


@dataclass(frozen=True)
class AdjustmentPage:
    adjustments: list[Adjustment]
    has_more: bool
    next_cursor: str | None


def adjustment_list(*, status: str | None, limit: int, cursor: str | None) -> AdjustmentPage:
    """Newest first (index adjustment_recent), keyset by (created_at, id), optionally one
    status. The cursor is signed and bound to the status filter."""
    queryset = _with_parties(Adjustment.objects.all()).order_by("-created_at", "-id")
    if status:
        queryset = queryset.filter(status=status)
    if cursor:
        try:
            bound_status, created_at, last_id = signing.loads(cursor, salt=_CURSOR_SALT)
            created_at = datetime.fromisoformat(created_at)
            last_id = uuid.UUID(last_id)
        except (signing.BadSignature, ValueError, TypeError):
            raise InvalidCursor("The cursor is not one this service issued") from None
        if bound_status != (status or ""):
            raise InvalidCursor("The cursor belongs to another listing")
        queryset = queryset.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=last_id))
    rows = list(queryset[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = (
        signing.dumps([status or "", rows[-1].created_at.isoformat(), str(rows[-1].id)], salt=_CURSOR_SALT)
        if has_more
        else None
    )
    return AdjustmentPage(rows, has_more, next_cursor)
