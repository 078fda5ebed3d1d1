"""Prepared statements for the hot paths' fixed SQL.

PostgreSQL spends most of a short statement's CPU planning it: a history page's statement
cost 1.1 ms of backend CPU, 0.8 of it planning; prepared and run on its generic plan, 0.3
(benchmark ledger, 1M-entry wallet). Django runs every statement unprepared (client-side
binding, psycopg's prepare_threshold None). `prepared_cursor` gives a cursor of Django's
connection that binds on the server and runs each statement prepared: psycopg prepares a
statement text (with its parameter types) once per connection, and the pool's connections
live on, so later runs skip parsing and planning.

Every connection is opened with `plan_cache_mode = force_generic_plan` (settings.DATABASES):
left to choose, PostgreSQL re-planned the history statement on every run, its generic plan's
estimates never being below the custom ones. The setting touches prepared statements only,
and only this module prepares any. A generic plan does not see the parameters' values, so
each statement run here has a test that its generic plan reads the index ranges it should
(`EXPLAIN (GENERIC_PLAN)`).

Parameter types are part of a prepared statement: psycopg sends a Python int as int2, int4
or int8 by its size, so integers that vary widely are passed as `Int8` (one statement, not
three), and arrays are cast in the SQL.
"""

from __future__ import annotations

from django.db import connection
from django.db.backends.postgresql.base import ServerBindingCursor
from psycopg.types.numeric import Int8

__all__ = ["Int8", "prepared_cursor"]


class _PreparedCursor(ServerBindingCursor):
    """Binds on the server and prepares every statement it runs. Django sets psycopg's
    prepare_threshold to None, under which `prepare=True` is ignored too, so a threshold no
    statement reaches is set around each execute: only an explicit `prepare=True` prepares,
    and Django's own cursors never do."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        conn = self.connection
        threshold = conn.prepare_threshold
        conn.prepare_threshold = 2**31
        try:
            return super().execute(query, params, prepare=True, binary=binary)
        finally:
            conn.prepare_threshold = threshold


def prepared_cursor():
    """A cursor of Django's connection, wrapped as Django wraps its own (errors, query
    logging, CaptureQueriesContext), whose statements run prepared."""
    connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = _PreparedCursor(connection.connection)
    return connection.make_debug_cursor(cursor) if connection.queries_logged else connection.make_cursor(cursor)
