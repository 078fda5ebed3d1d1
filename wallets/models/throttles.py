"""The counters of the rate limits (walletsite.throttles) when there is no Redis.

Not money and not a record of anything: a row is one fixed window of one throttle key, and
losing every row only lets a few extra requests through. So the table is UNLOGGED (made so
in its migration): its writes skip the write-ahead log, a check costs no WAL flush, and
PostgreSQL empties it after a crash, which is fail-open too. It is not replicated either,
which is right: a standby has nothing to throttle.
"""

from __future__ import annotations

from django.db import models


class ThrottleCounter(models.Model):
    # `<scope>:<kind>:<identity>`, e.g. `login:ip:203.0.113.7` or `pin:user:<uuid>`; emails
    # are keyed by a keyed hash, never in clear.
    key = models.CharField(max_length=200, primary_key=True)
    # Requests counted in the window, refused ones included. 64-bit, since a flood keeps
    # counting until the window ends.
    hits = models.BigIntegerField()
    # When the window ends: the first request after it starts a new one. Not indexed, so an
    # increment changes no indexed column and stays a HOT update; the purge scans the table,
    # which holds one row per active key.
    window_ends = models.DateTimeField()

    class Meta:
        # Nobody views or edits counters: no admin, no permissions.
        default_permissions = ()

    def __str__(self) -> str:
        return f"{self.key}: {self.hits} until {self.window_ends:%H:%M:%S}"
