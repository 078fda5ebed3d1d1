"""The audit log: who did what, to what, and why. Written in the same database transaction
as the change it records."""

from __future__ import annotations

from typing import Any

from ledger.models import AuditLog


def audit_record(
    *, actor: Any | None, actor_label: str, action: str, target: str, reason: str, data: dict | None = None
) -> AuditLog:
    if not reason or not reason.strip():
        raise ValueError("an audited action needs a reason")
    return AuditLog.objects.create(
        actor=actor, actor_label=actor_label, action=action, target=target, reason=reason.strip(), data=data or {}
    )
