"""walletsite.db.pipelined: statements sent together keep the meaning they have one by one."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from walletsite.db import Query, pipelined

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
