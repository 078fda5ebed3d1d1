"""`python manage.py restore_database PATH [--database NAME] [--force]` (`make restore
FILE=...`): restore a dump of `backup_database` into a new database on the same server, then
verify the copy (migrations, the ledger's triggers, the manifest's figures, reconciliation)
and print the result. Exit 1 when the restore fails (nothing is left behind) or the copy does
not verify (it is kept for inspection). The work is `ledger.backup`."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from ledger.backup import BackupError, backup_restore, restore_verify
from ledger.management.commands.reconcile import mismatch_line


class Command(BaseCommand):
    help = "Restore a backup into a NEW database, then check migrations and reconcile it."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="A .dump written by backup_database.")
        parser.add_argument(
            "--database",
            default="",
            help="The new database's name (default wallet_restore_<UTC time>). Never the service's own.",
        )
        parser.add_argument("--force", action="store_true", help="Drop and replace the database if it exists.")

    def handle(self, *args, path: Path, database: str, force: bool, **options):
        name = database or f"wallet_restore_{datetime.now(UTC):%Y%m%d_%H%M%S}"
        try:
            restore = backup_restore(path=path, database=name, force=force)
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"restored {path} into {'the replaced ' if restore.replaced else 'the new '}database {name} "
            f"in {restore.seconds:.1f} s"
        )
        if restore.manifest is None:
            self.stdout.write("no manifest beside the dump: its figures and checksum cannot be compared")
        check = restore_verify(database=name, manifest=restore.manifest)
        figures, run = check.figures, check.reconciliation
        active = sum(check.triggers.values())
        self.stdout.write(
            f"migrations: {'all applied' if not check.pending_migrations else 'NOT all applied'}; "
            f"triggers: {active} of {len(check.triggers)} active"
        )
        self.stdout.write(
            f"copy holds {figures.accounts} accounts, {figures.transactions} transactions, {figures.entries} entries, "
            f"total balance {figures.total_balance}{self._compared(restore.manifest, figures)}"
        )
        self.stdout.write(
            f"reconciliation run {run.id} on {name}: {'OK' if run.ok else 'MISMATCH'}; "
            f"{run.checked_accounts} accounts, {run.checked_transactions} transactions, "
            f"total balance {run.total_balance}, {len(run.mismatches)} mismatches listed"
        )
        for mismatch in run.mismatches:
            self.stdout.write(mismatch_line(mismatch))
        for problem in check.problems:
            self.stdout.write(f"  problem: {problem}")
        if not check.ok:
            raise CommandError(f"the restored copy {name} does not verify; it is kept for inspection")
        self.stdout.write(f"use it: DATABASE_URL='{restore.url}' .venv/bin/python manage.py reconcile")

    @staticmethod
    def _compared(manifest: dict | None, figures) -> str:
        if manifest is None:
            return ""
        if manifest["figures"] == asdict(figures):
            return ", the same as the backup's snapshot"
        return ", NOT what the backup's snapshot held"
