"""walletsite.db.pipelined: statements sent together keep the meaning they have one by one, and
a COMMIT sent with them is either answered or reported as an unknown outcome."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, OperationalError, connection, transaction
from psycopg.pq import TransactionStatus

from ledger.tests.faults import backend_killer
from walletsite.db import CommitOutcomeUnknown, Query, pipelined
from walletsite.testing import committed_rows, probe_table

pytestmark = pytest.mark.django_db(transaction=True)


def _scratch() -> Query:
    return Query("CREATE TEMP TABLE scratch (n int PRIMARY KEY) ON COMMIT DROP", [])


def test_statements_run_in_order_and_each_sees_the_ones_before_it():
    with transaction.atomic():
        created, inserted, counted, summed = pipelined(
            _scratch(),
            Query("INSERT INTO scratch SELECT unnest(%s::int[]) RETURNING n", [[1, 2, 3]], read=sorted),
            Query("SELECT count(*) FROM scratch", [], read=lambda rows: rows[0][0]),
            Query("SELECT sum(n) FROM scratch WHERE n > %(low)s", {"low": 1}, read=lambda rows: rows[0][0]),
        )
    assert created == []
    assert inserted == [(1,), (2,), (3,)]
    assert (counted, summed) == (3, 5)


def test_a_failing_statement_raises_as_django_raises_it_and_the_connection_stays_usable():
    with pytest.raises(IntegrityError) as raised, transaction.atomic():
        pipelined(
            _scratch(),
            Query("INSERT INTO scratch VALUES (1), (1)", []),
            Query("SELECT count(*) FROM scratch", []),
        )
    # the database's own error is the cause, as ledger.posting.with_retries reads it
    assert raised.value.__cause__.sqlstate == "23505"
    # the transaction rolled back (the temporary table went with it) and the next one runs
    with transaction.atomic():
        (exists,) = pipelined(Query("SELECT to_regclass('pg_temp.scratch') IS NOT NULL", [], read=lambda r: r[0][0]))
        assert exists is False
        assert pipelined(_scratch(), Query("SELECT 1", []))[1] == [(1,)]


def test_many_statements_need_a_transaction_and_one_does_not():
    with pytest.raises(RuntimeError):
        pipelined(Query("SELECT 1", []), Query("SELECT 2", []))
    assert pipelined(Query("SELECT %s::int + 1", [41], read=lambda rows: rows[0][0])) == [42]
    assert connection.in_atomic_block is False


@pytest.fixture
def probe():
    with probe_table("db_probe", "n int PRIMARY KEY"):
        yield


def _seen_elsewhere() -> list[int]:
    """db_probe's rows as another session sees them (what has committed)."""
    return [n for (n,) in committed_rows("SELECT n FROM db_probe ORDER BY n")]


def test_commit_goes_with_the_last_statements_and_leaves_the_block_nothing_to_commit(probe):
    with transaction.atomic(durable=True):
        (inserted,) = pipelined(Query("INSERT INTO db_probe VALUES (1), (2) RETURNING n", []), commit=True)
        # then: committed before the block ends
        assert _seen_elsewhere() == [1, 2]
        assert connection.connection.info.transaction_status == TransactionStatus.IDLE
    assert inserted == [(1,), (2,)]
    assert _seen_elsewhere() == [1, 2]


def test_inside_a_callers_transaction_commit_waits_for_the_caller(probe):
    with transaction.atomic():
        with transaction.atomic():
            pipelined(Query("INSERT INTO db_probe VALUES (1)", []), commit=True)
        assert _seen_elsewhere() == []
    assert _seen_elsewhere() == [1]


def test_a_statement_the_server_refuses_rolls_back_and_raises_as_it_is(probe):
    # given: a write, then a statement PostgreSQL cancels (57014, an OperationalError)
    with pytest.raises(OperationalError) as raised, transaction.atomic(durable=True):
        pipelined(
            Query("SET LOCAL statement_timeout = 1", []),
            Query("INSERT INTO db_probe VALUES (1)", []),
            Query("SELECT pg_sleep(0.2)", []),
            commit=True,
        )
    # then: known not to have committed (the COMMIT after it never ran), so it is not
    # reported as an unknown outcome, and the connection goes on
    assert raised.value.__cause__.sqlstate == "57014"
    assert _seen_elsewhere() == []
    with transaction.atomic(durable=True):
        pipelined(Query("INSERT INTO db_probe VALUES (2)", []), commit=True)
    assert _seen_elsewhere() == [2]


def test_a_connection_lost_with_the_commit_on_its_way_is_an_unknown_outcome(probe):
    # given: a session terminated just before its writes and COMMIT are sent
    kill = backend_killer()
    with pytest.raises(CommitOutcomeUnknown), transaction.atomic(durable=True):
        kill()
        pipelined(Query("INSERT INTO db_probe VALUES (1)", []), Query("SELECT 1", []), commit=True)
    # then: here nothing had committed; a new connection serves the next transaction
    assert _seen_elsewhere() == []
    connection.close()
    with transaction.atomic(durable=True):
        pipelined(Query("INSERT INTO db_probe VALUES (3)", []), commit=True)
    assert _seen_elsewhere() == [3]
