"""Prepared statements for the hot paths' fixed SQL, and statements sent in one round trip.

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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db import InterfaceError, OperationalError, connection
from django.db.backends.postgresql.base import ServerBindingCursor
from psycopg.types.numeric import Int8

__all__ = [
    "CommitOutcomeUnknown",
    "Int8",
    "Query",
    "model_columns",
    "model_from_row",
    "pipelined",
    "prepared_cursor",
    "sqlstate_of",
]

T = TypeVar("T")


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


# -- one round trip for many statements ----------------------------------------------------
#
# A statement on its own costs a round trip, and on a gthread worker the round trip costs
# more than its latency: the thread gives up the GIL while it waits and, the answer in, waits
# for it again behind the request threads (up to the 5 ms switch interval each time). The
# transfer batch (wallets.transfers) runs about a dozen statements whose texts do not depend
# on one another's answers, so it sends them as two pipelines instead: the reads and locks,
# then the writes with the COMMIT.


@dataclass(frozen=True)
class Query(Generic[T]):
    """One statement, its parameters and how its rows are read (`read` gets every row)."""

    sql: str
    params: Sequence[Any] | Mapping[str, Any]
    read: Callable[[list[tuple]], T] = list


def pipelined(*queries: Query, commit: bool = False) -> list:
    """Run `queries` in order, sent together and answered together (psycopg's pipeline mode):
    one round trip instead of one per statement, and one result per query, as its `read`
    gives it. A single query runs as a plain statement.

    PostgreSQL still runs them one after another, each a statement of its own: under READ
    COMMITTED each sees what committed before it started (so a read after a lock sees what
    the lock's previous holder committed) and everything the statements before it did. If one
    fails, the ones after it do not run, and its error is raised as Django raises database
    errors (the transaction is then aborted, as after any failed statement). More than one
    query must run inside transaction.atomic, so that they commit or roll back together.

    With `commit`, the COMMIT of the transaction goes in the same round trip, after the last
    query, when the atomic block is the connection's outermost (inside a caller's own
    transaction, a test's, the block commits with it instead); leaving the block then has
    nothing left to commit. A COMMIT sent on a connection that breaks before its answer may or
    may not have committed: that is raised as CommitOutcomeUnknown, never as an error the
    caller could take for a rollback and run again."""
    if (len(queries) > 1 or commit) and not connection.in_atomic_block:
        raise RuntimeError("pipelined statements must run inside transaction.atomic")
    commit = commit and len(connection.atomic_blocks) == 1
    statements = [*queries, _COMMIT] if commit else list(queries)
    cursors = []
    try:
        if len(statements) == 1:
            cursors.append(connection.cursor())
            cursors[0].execute(statements[0].sql, statements[0].params)
        else:
            connection.ensure_connection()
            with connection.wrap_database_errors, connection.connection.pipeline():
                for query in statements:
                    cursors.append(connection.cursor())
                    cursors[-1].execute(query.sql, query.params)
        return [
            query.read(cursor.fetchall() if cursor.description is not None else [])
            for query, cursor in zip(queries, cursors[: len(queries)], strict=True)
        ]
    except (OperationalError, InterfaceError) as exc:
        if commit and not _answered_by_the_server(exc):
            raise CommitOutcomeUnknown("the connection failed while COMMIT was on its way") from exc
        raise
    finally:
        for cursor in cursors:
            cursor.close()


class CommitOutcomeUnknown(Exception):
    """The connection failed while COMMIT was on its way: the transaction may have committed."""


_COMMIT = Query("COMMIT", [])
# SQLSTATEs of errors that end the session itself (class 08, connection exceptions; 57P01-05,
# the server shutting down or crashing, the session terminated): the statements in flight may
# or may not have run. Any other error answers a statement, which aborts the transaction.
_SESSION_ENDING = ("08", "57P")


def _answered_by_the_server(exc: Exception) -> bool:
    """True when PostgreSQL answered a statement with this error, so the transaction is known
    not to have committed (a failed statement aborts it, the COMMIT after it never runs); False
    for a broken connection, whose statements' fate is unknown."""
    sqlstate = sqlstate_of(exc)
    return sqlstate is not None and not sqlstate.startswith(_SESSION_ENDING)


def sqlstate_of(exc: Exception) -> str | None:
    """The SQLSTATE PostgreSQL answered with, for an error as Django raises it (psycopg's own
    error is its cause); None when no answer came (a broken connection)."""
    return getattr(getattr(exc, "__cause__", None), "sqlstate", None)


def model_columns(model, alias: str) -> str:
    """The SELECT list of `model`'s columns, in the order `model_from_row` reads them."""
    return ", ".join(f'{alias}."{field.column}"' for field in model._meta.concrete_fields)


def model_from_row(model, row: Sequence[Any]):
    """A saved `model` instance from a row of `model_columns` (as a queryset would build it,
    for fields whose database values need no conversion: not JSON)."""
    return model.from_db(connection.alias, None, row)
