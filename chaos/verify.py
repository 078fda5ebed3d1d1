"""What a chaos run proves afterwards, from the database (read with plain SQL, as an auditor
would, not through the service's code) against the book of definitive answers
(chaos.traffic.Book), the bank's own record (chaos.bank) and what the merchants' receiver got.

- Every 2xx moved money exactly once, every 4xx moved nothing: each wallet's balance and each
  system account's equals what the 2xx answers add up to (withdrawals as the bank settled
  them); the ledger's transfers, payments and refunds are exactly the ones answered, each once;
  each succeeded top-up has exactly one deposit and nothing else has one; each payout the bank
  paid has exactly one withdrawal posting. Every answered key is stored with the answer the
  client got, and no other key is stored.
- The ledger reconciles (`manage.py reconcile`: sum zero, cached balances equal entries), no
  customer balance is below zero, no hold is left pending, nothing is held.
- Every withdrawal is settled as the bank settled it; every payment attempt is in the state
  the gateway left it in; no payment is refunded beyond its amount.
- Every outbox event was delivered, and the receiver got every merchant webhook at least once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import psycopg

from chaos.bank import Payout
from chaos.net import Violations, canonical
from chaos.traffic import Book, Party
from walletsite import embedded_pg


def connect(pgdata) -> psycopg.Connection:
    sock = embedded_pg.socket_dir(pgdata.resolve())
    return psycopg.connect(
        host=str(sock), port=embedded_pg.PORT, user="postgres", dbname=embedded_pg.DATABASE, autocommit=True
    )


def backlog(conn: psycopg.Connection) -> dict[str, int]:
    """What is still on its way: unsettled withdrawals, undelivered outbox events, pending
    merchant webhooks."""
    (withdrawals,) = conn.execute(
        "SELECT count(*) FROM wallets_withdrawal WHERE status IN ('pending', 'submitting', 'submitted')"
    ).fetchone()
    (events,) = conn.execute("SELECT count(*) FROM ledger_outboxevent WHERE delivered_at IS NULL").fetchone()
    (webhooks,) = conn.execute("SELECT count(*) FROM wallets_webhookdelivery WHERE status = 'pending'").fetchone()
    return {"withdrawals": withdrawals, "outbox": events, "webhooks": webhooks}


@dataclass
class Findings:
    violations: Violations
    summary: dict = field(default_factory=dict)

    def expect(self, ok: bool, message: str) -> bool:
        if not ok:
            self.violations.add(message)
        return ok

    def same_sets(self, what: str, found: set, answered: set) -> None:
        extra, missing = found - answered, answered - found
        self.expect(
            not extra and not missing,
            f"{what}: {len(extra)} in the database that no 2xx answered (e.g. {sorted(extra)[:3]}), "
            f"{len(missing)} answered that are not there (e.g. {sorted(missing)[:3]})",
        )


def verify(
    conn: psycopg.Connection,
    *,
    book: Book,
    parties: list[Party],
    bank: dict[str, Payout],
    received: Counter,
    violations: Violations,
) -> dict:
    f = Findings(violations)
    paid = {ref for ref, payout in bank.items() if payout.status == "succeeded"}
    merchant_wallets = {p.wallet_id for p in parties if p.merchant}
    _balances(conn, f, book=book, parties=parties, paid=paid)
    _transactions(conn, f, book=book, paid=paid)
    _attempts_and_withdrawals(conn, f, book=book, bank=bank, paid=paid)
    _keys(conn, f, book=book)
    _delivery(conn, f, received=received, merchant_wallets=merchant_wallets)
    return f.summary


def _balances(conn, f: Findings, *, book: Book, parties: list[Party], paid: set[str]) -> None:
    expected = Counter(book.wallets)
    for withdrawal_id, (party, amount) in book.withdrawals.items():
        if withdrawal_id in paid:
            expected[party.wallet_id] -= amount
    rows = conn.execute(
        "SELECT w.id::text, a.balance, a.held_balance "
        "FROM wallets_wallet w JOIN ledger_account a ON a.id = w.account_id"
    ).fetchall()
    wrong = [(w, b, expected[w]) for w, b, _ in rows if b != expected[w]]
    f.expect(
        not wrong,
        f"{len(wrong)} wallets' balances differ from what their 2xx answers add up to "
        f"(wallet, balance, expected): {wrong[:5]}",
    )
    held = [(w, h) for w, _, h in rows if h != 0]
    f.expect(not held, f"{len(held)} wallets still hold money after every withdrawal settled: {held[:5]}")
    strangers = {w for w, _, _ in rows} - {p.wallet_id for p in parties}
    f.expect(not strangers, f"wallets nobody of the run opened: {sorted(strangers)[:5]}")

    system = dict(conn.execute("SELECT code, balance FROM ledger_account WHERE kind = 'system'").fetchall())
    want = {code: 0 for code in system}
    want.update(book.system)
    want["bank_payouts"] = sum(amount for w, (_, amount) in book.withdrawals.items() if w in paid)
    for code, balance in sorted(system.items()):
        f.expect(balance == want.get(code, 0), f"system account {code}: balance {balance}, expected {want.get(code)}")
    total, negative, held_total = conn.execute(
        "SELECT coalesce(sum(balance), 0), count(*) FILTER (WHERE kind = 'customer' AND balance < 0), "
        "coalesce(sum(held_balance), 0) FROM ledger_account"
    ).fetchone()
    f.expect(total == 0, f"all balances sum to {total}, not 0")
    f.expect(negative == 0, f"{negative} customer balances below zero")
    f.expect(held_total == 0, f"{held_total} still held in all")
    # The same rules reconcile checks, asked here independently of the service's code.
    drifted = conn.execute(
        "SELECT a.id, a.balance, coalesce(e.total, 0) FROM ledger_account a "
        "LEFT JOIN (SELECT account_id, sum(amount) AS total FROM ledger_entry GROUP BY account_id) e "
        "ON e.account_id = a.id WHERE a.balance <> coalesce(e.total, 0)"
    ).fetchall()
    f.expect(not drifted, f"{len(drifted)} cached balances differ from their entries (id, cached, sum): {drifted[:5]}")
    unbalanced = conn.execute(
        "SELECT transaction_id, sum(amount), count(*) FROM ledger_entry GROUP BY transaction_id "
        "HAVING sum(amount) <> 0 OR count(*) < 2"
    ).fetchall()
    f.expect(not unbalanced, f"{len(unbalanced)} ledger transactions do not balance: {unbalanced[:5]}")
    (pending,) = conn.execute("SELECT count(*) FROM ledger_hold WHERE status = 'pending'").fetchone()
    f.expect(pending == 0, f"{pending} holds left pending")
    (accounts,) = conn.execute("SELECT count(*) FROM ledger_account").fetchone()
    f.summary.update(accounts=accounts, total_balance=total, wallets=len(rows))


def _transactions(conn, f: Findings, *, book: Book, paid: set[str]) -> None:
    rows = conn.execute("SELECT id::text, type, reference FROM ledger_transaction").fetchall()
    by_type: dict[str, list[tuple[str, str]]] = {}
    for txn_id, kind, reference in rows:
        by_type.setdefault(kind, []).append((txn_id, reference))
    f.summary["transactions"] = len(rows)
    f.summary["transactions_by_type"] = {kind: len(v) for kind, v in sorted(by_type.items())}
    f.same_sets("transfers", {t for t, _ in by_type.get("transfer", [])}, set(book.transfers))
    f.same_sets("payments", {t for t, _ in by_type.get("payment", [])}, set(book.payments))
    # A refund the fees account paid all of (the last part of a payment, which gives back the
    # rest of its fee) has no entry of the merchant's, so its answer names no transaction: the
    # refund's own row does.
    refund_rows = dict(conn.execute("SELECT id::text, transaction_id::text FROM wallets_refund").fetchall())
    answered = {refund_rows.get(r) for r in book.refunds} - {None}
    f.same_sets("refunds", {t for t, _ in by_type.get("refund", [])}, answered)
    f.expect(
        book.refund_transactions <= answered,
        f"refund answers name transactions that are no refund's: {sorted(book.refund_transactions - answered)[:5]}",
    )
    deposits = Counter(ref.removeprefix("payment_attempt:") for _, ref in by_type.get("deposit", []))
    credited = {pid for pid, a in book.attempts.items() if a.outcome == "succeeded"}
    twice = [pid for pid, n in deposits.items() if n > 1]
    f.expect(not twice, f"{len(twice)} top-ups credited more than once: {twice[:5]}")
    f.same_sets("deposits (by payment attempt)", set(deposits), credited)
    postings = Counter(ref.removeprefix("withdrawal:") for _, ref in by_type.get("withdrawal", []))
    twice = [w for w, n in postings.items() if n > 1]
    f.expect(not twice, f"{len(twice)} withdrawals posted more than once: {twice[:5]}")
    f.same_sets("withdrawal postings (by payout the bank paid)", set(postings), paid)
    others = set(by_type) - {"transfer", "payment", "refund", "deposit", "withdrawal"}
    f.expect(not others, f"ledger transactions of types no operation of the run makes: {sorted(others)}")


def _attempts_and_withdrawals(conn, f: Findings, *, book: Book, bank: dict[str, Payout], paid: set[str]) -> None:
    attempts = {
        pid: (status, amount)
        for pid, status, amount in conn.execute(
            "SELECT id::text, status, amount FROM wallets_paymentattempt"
        ).fetchall()
    }
    f.same_sets("payment attempts (by add-money 201)", set(attempts), set(book.attempts))
    allowed = {"succeeded": {"succeeded"}, "failed": {"failed"}, "pending": {"pending", "expired"}}
    wrong = [
        (pid, attempts[pid][0], a.outcome)
        for pid, a in book.attempts.items()
        if pid in attempts and (attempts[pid][0] not in allowed[a.outcome] or attempts[pid][1] != a.amount)
    ]
    f.expect(
        not wrong, f"{len(wrong)} payment attempts not as the gateway left them (id, status, gateway's): {wrong[:5]}"
    )
    many = [pid for pid, a in book.attempts.items() if a.credited_answers > 1]
    f.expect(not many, f"{len(many)} top-ups answered 'credited' more than once: {many[:5]}")

    withdrawals = {
        w: (status, amount)
        for w, status, amount in conn.execute("SELECT id::text, status, amount FROM wallets_withdrawal").fetchall()
    }
    f.same_sets("withdrawals (by withdraw 202)", set(withdrawals), set(book.withdrawals))
    wrong = []
    for w, (status, amount) in withdrawals.items():
        want = "succeeded" if w in paid else "failed"
        payout = bank.get(w)
        if status != want or (payout is not None and payout.amount != amount):
            wrong.append((w, status, want, amount, payout.amount if payout else None))
    f.expect(
        not wrong, f"{len(wrong)} withdrawals not settled as the bank did (id, status, bank's, amount): {wrong[:5]}"
    )
    unknown = set(bank) - set(withdrawals)
    f.expect(not unknown, f"the bank got payouts for references that are no withdrawal: {sorted(unknown)[:5]}")
    processing = [ref for ref, payout in bank.items() if payout.status == "processing"]
    f.expect(not processing, f"{len(processing)} payouts still processing at the bank: {processing[:5]}")

    refunds = {r: amount for r, amount in conn.execute("SELECT id::text, amount FROM wallets_refund").fetchall()}
    f.same_sets("refunds (by refund 201)", set(refunds), set(book.refunds))
    payments = conn.execute("SELECT transaction_id::text, amount, refunded FROM wallets_payment").fetchall()
    wrong = []
    for txn, amount, refunded in payments:
        record = book.payments.get(txn)
        if refunded > amount or (record is not None and record.refunded != refunded):
            wrong.append((txn, amount, refunded, record.refunded if record else None))
    f.expect(
        not wrong,
        f"{len(wrong)} payments refunded unlike their 201 refunds (txn, amount, refunded, answered): {wrong[:5]}",
    )
    (flagged_attempts,) = conn.execute(
        "SELECT count(*) FROM wallets_paymentattempt WHERE flagged_for_review"
    ).fetchone()
    (flagged_withdrawals,) = conn.execute("SELECT count(*) FROM wallets_withdrawal WHERE flagged_for_review").fetchone()
    f.summary.update(
        flagged_payment_attempts=flagged_attempts,
        flagged_withdrawals=flagged_withdrawals,
        withdrawals_succeeded=sum(1 for s, _ in withdrawals.values() if s == "succeeded"),
        withdrawals_failed=sum(1 for s, _ in withdrawals.values() if s == "failed"),
    )


def _keys(conn, f: Findings, *, book: Book) -> None:
    stored = {
        (user, key): (status, body)
        for user, key, status, body in conn.execute(
            "SELECT user_id::text, key, response_status, response_body FROM wallets_idempotencykey"
        ).fetchall()
    }
    wrong = []
    for record in book.keys:
        row = stored.get((record.party.user_id, record.key))
        if row is None or row[0] != record.answer.status or canonical(row[1]) != canonical(record.answer.body):
            wrong.append((record.key, record.answer.status, row[0] if row else None))
    f.expect(
        not wrong, f"{len(wrong)} keys not stored with the answer their client got (key, answer, stored): {wrong[:5]}"
    )
    f.expect(
        len(stored) == len(book.keys),
        f"{len(stored)} idempotency keys stored, {len(book.keys)} answered: keys that no client saw answered",
    )
    f.summary["idempotency_keys"] = len(stored)


def _delivery(conn, f: Findings, *, received: Counter, merchant_wallets: set[str]) -> None:
    (undelivered,) = conn.execute("SELECT count(*) FROM ledger_outboxevent WHERE delivered_at IS NULL").fetchone()
    (events,) = conn.execute("SELECT count(*) FROM ledger_outboxevent").fetchone()
    f.expect(undelivered == 0, f"{undelivered} of {events} outbox events never delivered")
    deliveries = conn.execute(
        "SELECT replace(public_id::text, '-', ''), status, event_id FROM wallets_webhookdelivery"
    ).fetchall()
    statuses = Counter(status for _, status, _ in deliveries)
    f.expect(set(statuses) <= {"delivered"}, f"merchant webhook deliveries not delivered: {dict(statuses)}")
    ids = {f"evt_{hex_id}" for hex_id, _, _ in deliveries}
    missing = ids - set(received)
    f.expect(not missing, f"{len(missing)} merchant webhooks the receiver never got: {sorted(missing)[:5]}")
    unknown = set(received) - ids
    f.expect(not unknown, f"the receiver got {len(unknown)} webhooks the service has no delivery for")
    # Every event that concerns a merchant's wallet has a delivery to its endpoint.
    concerning = {
        event_id
        for event_id, wallet_ids in conn.execute(
            "SELECT id, payload->'wallet_ids' FROM ledger_outboxevent WHERE payload ? 'wallet_ids'"
        ).fetchall()
        if merchant_wallets & set(wallet_ids or [])
    }
    delivered_events = {event_id for _, _, event_id in deliveries}
    lost = concerning - delivered_events
    f.expect(not lost, f"{len(lost)} events concerning a merchant have no webhook delivery: {sorted(lost)[:5]}")
    lag = conn.execute(
        "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY lag), max(lag) "
        "FROM (SELECT extract(epoch FROM delivered_at - created_at)::float AS lag FROM ledger_outboxevent) AS lags"
    ).fetchone()
    f.summary.update(
        outbox_lag_seconds={"median": lag[0][0], "p99": lag[0][1], "max": float(lag[1])} if lag[1] is not None else {},
        outbox_events=events,
        webhook_deliveries=len(deliveries),
        webhooks_received=sum(received.values()),
        webhooks_received_more_than_once=sum(1 for n in received.values() if n > 1),
    )
