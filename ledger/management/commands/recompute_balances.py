"""`python manage.py recompute_balances [--fix --reason "..."] [--actor email]`: compare
every account's cached balance with the sum of its entries.

Dry run by default: prints each drifted account and exits 1 when any has drifted (nothing
is written). With --fix (which needs --reason) each drifted balance is set to the sum of its
entries, an audit record is written per account, and the command exits 0 once every drift
is fixed. The work is `ledger.reconciliation.balances_recompute`."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from ledger.reconciliation import balances_recompute

BAR_WIDTH = 30


class Command(BaseCommand):
    help = "Compare cached balances with their entries; --fix --reason '...' rebuilds the drifted ones."

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true", help="Set drifted balances to the sum of their entries.")
        parser.add_argument("--reason", default="", help="Why (required with --fix; kept in the audit log).")
        parser.add_argument("--actor", default="", help="Email of the staff user running this (for the audit log).")

    def handle(self, *args, fix: bool, reason: str, actor: str, **options):
        if fix and not reason.strip():
            raise CommandError("--fix needs --reason '...': every fixed balance is audited with it")
        user = None
        if actor:
            user = get_user_model().objects.filter(email__iexact=actor).first()
            if user is None:
                raise CommandError(f"no user has the email {actor!r}")
        label = user.email if user else "system:recompute_balances"
        drifts = balances_recompute(fix=fix, actor=user, actor_label=label, reason=reason, progress=self._progress())
        for drift in drifts:
            self.stdout.write(
                f"  {drift['account']} ({drift['kind']}): cached {drift['cached']}, entries {drift['entries']},"
                f" difference {drift['difference']:+d}{' -> fixed' if drift['fixed'] else ''}"
            )
        unfixed = [d for d in drifts if not d["fixed"]]
        if not drifts:
            self.stdout.write("every cached balance equals the sum of its entries")
        elif fix:
            self.stdout.write(f"fixed {len(drifts) - len(unfixed)} drifted balances")
        if unfixed:
            raise CommandError(
                f"{len(unfixed)} accounts' cached balances differ from their entries"
                + ("" if fix else "; run again with --fix --reason '...' to rebuild them")
            )

    def _progress(self):
        """A progress bar on a terminal; on a pipe or file, a plain line at every tenth."""
        tty = self.stdout.isatty()
        reported = {"tenth": -1}

        def report(done: int, total: int) -> None:
            if tty:
                filled = BAR_WIDTH * done // max(total, 1)
                self.stdout.write(
                    f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} accounts",
                    ending="\n" if done >= total else "",
                )
                self.stdout.flush()
                return
            tenth = 10 * done // max(total, 1)
            if tenth != reported["tenth"]:
                reported["tenth"] = tenth
                self.stdout.write(f"checked {done}/{total} accounts")

        return report
