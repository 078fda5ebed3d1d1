"""`manage.py purge_idempotency_keys [--dry-run]`: what the worker does every hour."""

from django.conf import settings
from django.core.management.base import BaseCommand

from wallets.retention import idempotency_keys_purge


class Command(BaseCommand):
    help = "Delete idempotency keys older than IDEMPOTENCY_RETENTION_HOURS (at least 24)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle(self, *args, dry_run: bool = False, **options):
        hours = settings.WALLET["IDEMPOTENCY_RETENTION_HOURS"]
        count = idempotency_keys_purge(dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(f"{verb} {count} idempotency keys older than {hours} hours")
