"""`python manage.py backup_database [--output PATH]` (`make backup`): a custom-format
pg_dump of the service's database (embedded or DATABASE_URL), taken in one snapshot while the
service runs, with a manifest beside it (size, checksum, the ledger's figures in that
snapshot, triggers and constraints). The work is `ledger.backup.backup_create`."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from ledger.backup import BackupError, backup_create


def size_text(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


class Command(BaseCommand):
    help = "Dump the database (pg_dump, custom format, one snapshot) to DATA_DIR/backups or --output."

    def add_arguments(self, parser):
        parser.add_argument("--output", type=Path, help="Where to write the dump (default DATA_DIR/backups/...).")

    def handle(self, *args, output: Path | None, **options):
        try:
            backup = backup_create(output=output)
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        figures = backup.figures
        self.stdout.write(f"backup written: {backup.path} ({size_text(backup.bytes)} in {backup.seconds:.1f} s)")
        self.stdout.write(
            f"snapshot (repeatable read, shared with pg_dump): {figures.accounts} accounts, "
            f"{figures.transactions} transactions, {figures.entries} entries, total balance {figures.total_balance}"
        )
        self.stdout.write(f"manifest: {backup.manifest_path} (sha256 {backup.sha256})")
        self.stdout.write(f"verify it: make restore FILE={backup.path}")
