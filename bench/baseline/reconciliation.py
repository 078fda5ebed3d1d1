"""The baseline's ledger invariants, each one whole-table statement that lists what breaks it:
every transaction has two entries summing to zero, every wallet's balance is the sum of its
entries and its latest entry's balance_after, no customer balance is negative, and all
balances sum to zero. bench.run checks them after every row, over its own connection."""

from __future__ import annotations

CHECKS = {
    "transaction_unbalanced": """
        SELECT t.id, coalesce(sum(e.amount), 0), count(e.id)
          FROM baseline_transaction t LEFT JOIN baseline_entry e ON e.transaction_id = t.id
         GROUP BY t.id HAVING coalesce(sum(e.amount), 0) <> 0 OR count(e.id) <> 2
    """,
    "balance_not_sum_of_entries": """
        WITH sums AS (
            SELECT wallet_id, sum(amount) AS total, (max(ARRAY[id, balance_after]))[2] AS last_after
              FROM baseline_entry GROUP BY wallet_id
        )
        SELECT w.id, w.balance, coalesce(s.total, 0), coalesce(s.last_after, 0)
          FROM baseline_wallet w LEFT JOIN sums s ON s.wallet_id = w.id
         WHERE w.balance <> coalesce(s.total, 0) OR w.balance <> coalesce(s.last_after, 0)
    """,
    "customer_balance_negative": "SELECT id, balance FROM baseline_wallet WHERE NOT is_system AND balance < 0",
    "balances_total_not_zero": "SELECT sum(balance) FROM baseline_wallet HAVING sum(balance) <> 0",
}

COUNTS = """
SELECT (SELECT count(*) FROM baseline_wallet), (SELECT count(*) FROM baseline_transaction),
       (SELECT count(*) FROM baseline_entry)
"""


def baseline_reconcile(conn) -> tuple[str, list[str]]:
    """(a one-line summary, one line per broken invariant), all read in one REPEATABLE READ
    snapshot over `conn`, a psycopg connection to the baseline's database."""
    problems: list[str] = []
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for kind, sql in CHECKS.items():
            cursor.execute(sql)
            problems += [f"{kind}: {row}" for row in cursor.fetchmany(20)]
        cursor.execute(COUNTS)
        wallets, transactions, entries = cursor.fetchone()
    verdict = "OK" if not problems else "MISMATCH"
    return (
        f"baseline reconciliation: {verdict}; {wallets} wallets, {transactions} transactions, {entries} entries",
        problems,
    )
