"""`python manage.py run_worker [--once]`: the background worker (`wallets.worker`).

It delivers outbox events and runs the periodic jobs (expiring payment attempts, watching
reconciliation) until SIGTERM or SIGINT, then finishes the step in progress and exits 0.
`--once` delivers what is deliverable now, runs every job once and exits (for cron, or a
one-off in an operator's shell)."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand

from wallets.worker import Worker


class Command(BaseCommand):
    help = "Deliver outbox events and run the periodic jobs; --once for a single pass."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="One pass over events and jobs, then exit.")

    def handle(self, *args, once: bool, **options):
        worker = Worker()
        previous = {sig: signal.signal(sig, worker.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            if once:
                worker.run_once()
            else:
                worker.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
