"""Moving a user between KYC tiers (staff only, audited)."""

from __future__ import annotations

from django.db import transaction

from accounts.models import Tier, User
from ledger.audit import audit_record


def user_tier_change(*, user: User, tier: Tier, actor: User | None, reason: str) -> User:
    """Put `user` on `tier` and record who did it and why, in one transaction. A change to
    the tier the user already has records nothing. The limits read the tier when they are
    checked, so the next movement of the user's wallet obeys the new limits."""
    if not reason or not reason.strip():
        raise ValueError("a reason is required")
    with transaction.atomic(durable=True):
        # The row lock makes concurrent changes queue, so each audit row's `from` is the tier
        # the change really replaced.
        locked = User.objects.select_for_update(of=("self",)).get(id=user.id)
        previous = locked.tier_id
        if previous != tier.code:
            locked.tier = tier
            locked.save(update_fields=["tier"])
            audit_record(
                actor=actor,
                actor_label=getattr(actor, "email", None) or "system",
                action="user.tier_changed",
                target=f"user:{locked.id}",
                reason=reason,
                data={"from": previous, "to": tier.code, "email": locked.email},
            )
    user.tier = locked.tier
    return user
