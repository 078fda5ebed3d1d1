"""The ledger's invariants, checked from SQL after a test has moved money.

Import `assert_ledger_consistent` at the end of any test that posts: it fails with the
offending rows when the ledger is out of balance, so a bug that creates or loses money is
caught by the test that caused it rather than by a later reconciliation.
"""

from __future__ import annotations

from django.db import connection


def assert_ledger_consistent() -> None:
    """Assert that all balances sum to zero, that every cached balance equals the sum of
    its account's entries, that each account's latest entry records that balance, that every
    held balance equals its account's pending holds, and that
    every ledger transaction's entries sum to zero."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(SUM(balance), 0) FROM ledger_account")
        (total,) = cursor.fetchone()
        assert total == 0, f"the balances of all accounts sum to {total}, not 0"

        cursor.execute(
            """
            SELECT a.id, a.balance, COALESCE(SUM(e.amount), 0) AS entries
            FROM ledger_account a LEFT JOIN ledger_entry e ON e.account_id = a.id
            GROUP BY a.id, a.balance
            HAVING a.balance <> COALESCE(SUM(e.amount), 0)
            """
        )
        drifted = cursor.fetchall()
        assert not drifted, f"cached balances differ from their entries (id, balance, sum): {drifted}"

        cursor.execute(
            """
            SELECT a.id, a.balance, last.balance_after
            FROM ledger_account a
            JOIN LATERAL (
                SELECT balance_after FROM ledger_entry WHERE account_id = a.id ORDER BY id DESC LIMIT 1
            ) last ON TRUE
            WHERE last.balance_after <> a.balance
            """
        )
        stale = cursor.fetchall()
        assert not stale, f"latest balance_after differs from the balance (id, balance, balance_after): {stale}"

        cursor.execute(
            """
            SELECT a.id, a.held_balance, COALESCE(h.pending, 0)
            FROM ledger_account a
            LEFT JOIN (SELECT account_id, SUM(amount) AS pending FROM ledger_hold
                       WHERE status = 'pending' GROUP BY account_id) h ON h.account_id = a.id
            WHERE a.held_balance <> COALESCE(h.pending, 0)
            """
        )
        held = cursor.fetchall()
        assert not held, f"held balances differ from their pending holds (id, held, pending): {held}"

        cursor.execute(
            "SELECT transaction_id, SUM(amount) FROM ledger_entry GROUP BY transaction_id HAVING SUM(amount) <> 0"
        )
        unbalanced = cursor.fetchall()
        assert not unbalanced, f"ledger transactions whose entries do not sum to zero: {unbalanced}"
