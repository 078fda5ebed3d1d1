"""`python manage.py reconcile`: check every ledger invariant once and report.

Exit status 0 when the ledger agrees with itself, 1 (CommandError) on any mismatch, so a cron
job or CI step fails loudly. The work is `ledger.reconciliation.reconciliation_run`."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ledger.reconciliation import reconciliation_run


def mismatch_line(mismatch: dict) -> str:
    where = mismatch.get("account") or mismatch.get("transaction_id") or mismatch.get("currency") or "ledger"
    return (
        f"  {mismatch['kind']}: {where}: expected {mismatch.get('expected')}, actual {mismatch.get('actual')}"
        f" ({mismatch.get('detail', '')})"
    )


class Command(BaseCommand):
    help = "Check every ledger invariant; exit 1 on any mismatch."

    def add_arguments(self, parser):
        parser.add_argument(
            "--triggered-by", default="command:reconcile", help="Recorded on the run (default: command:reconcile)."
        )

    def handle(self, *args, triggered_by: str, **options):
        run = reconciliation_run(triggered_by=triggered_by)
        self.stdout.write(
            f"reconciliation run {run.id}: {'OK' if run.ok else 'MISMATCH'}; "
            f"{run.checked_accounts} accounts, {run.checked_transactions} transactions, "
            f"total balance {run.total_balance}, {len(run.mismatches)} mismatches listed"
        )
        for mismatch in run.mismatches:
            self.stdout.write(mismatch_line(mismatch))
        if not run.ok:
            raise CommandError(f"the ledger does not reconcile (run {run.id}); see the mismatches above")
