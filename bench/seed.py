"""Seed the service or the baseline through their own code, for bench.run.

    python -m bench.seed service  OUT_DIR WALLETS HISTORY_ENTRIES   (walletsite.settings)
    python -m bench.seed baseline OUT_DIR WALLETS                   (bench.baseline.settings)
    python -m bench.seed service-tokens OUT_DIR      (walletsite.settings; fresh logins only)

The service's wallets are made the way its users make them: `user_register` (password,
PIN, wallet), `session_start` (a login and its access token) and a top-up
(`payment_attempt_create`, then the sandbox gateway's succeeded event through
`gateway_event_process`). The history wallet's entries are posted through
`ledger.posting.transactions_post` in batches, transfers to and from a partner wallet, so
every rule of the ledger (locks, running balances, the database's triggers) applies to them.

Writes into OUT_DIR: `<target>-wallets.tsv` (token TAB handle, one customer a line),
`<target>-merchant.tsv` (the wallet everyone pays in the hot-merchant scenario), and for the
service `service-history.tsv` (the history wallet's token) and `service-history-cursors.txt`
(pages of its history: an empty line is the first page). Prints one JSON line with what was
made and how long each step took.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import django

PIN = "2468"
PASSWORD = "bench-password-1"  # noqa: S105 - the benchmark users' password, on throwaway data
FUNDING = 1_000_000
HISTORY_BATCH = 5000
HISTORY_CURSORS = 1000
PROGRESS_EVERY = 100_000


def _timed(timings: dict, name: str, started: float) -> None:
    timings[name] = round(time.monotonic() - started, 2)


def _write_wallets(path: Path, rows: list[tuple[str, str]]) -> None:
    path.write_text("".join(f"{token}\t{handle}\n" for token, handle in rows))


def seed_service(out: Path, wallets: int, history_entries: int) -> dict:
    from django.db import connection
    from django.test.utils import override_settings

    from accounts.tokens import session_start
    from ledger.posting import Leg, PostingCommand, Rejected, atomic, transactions_post
    from wallets.history import cursor_encode
    from wallets.registration import user_register
    from wallets.sandbox import sandbox_event
    from wallets.topups import gateway_event_process, payment_attempt_create

    timings: dict[str, float] = {}

    def register(name: str, **extra):
        user, wallet = user_register(
            email=f"{name}@bench.example", password=PASSWORD, pin=PIN, name=name.replace("-", " "), **extra
        )
        return user, wallet

    def top_up(wallet, amount: int) -> None:
        with atomic():
            attempt = payment_attempt_create(wallet=wallet, amount=amount)
        result = gateway_event_process(event=sandbox_event(attempt=attempt, outcome="succeeded"))
        if result.result != "credited":
            raise RuntimeError(f"top-up of {wallet.handle} was {result.result}")

    # Real, usable passwords, hashed at bcrypt's lowest cost (the test suite's hasher) so that
    # a thousand registrations take seconds: the service verifies a bcrypt hash of any cost.
    with override_settings(PASSWORD_HASHERS=["walletsite.testing.FastBCryptSHA256PasswordHasher"]):
        started = time.monotonic()
        customers = [register(f"bench-{i:06d}") for i in range(wallets)]
        merchant = register("bench-merchant", role="merchant", business_name="Bench Merchant")
        history = register("bench-history")
        partner = register("bench-history-partner")
        _timed(timings, "register_s", started)

    started = time.monotonic()
    tokens = {user.id: session_start(user=user)["access_token"] for user, _ in [*customers, merchant, history]}
    _timed(timings, "login_s", started)

    started = time.monotonic()
    for _, wallet in [*customers, history]:
        top_up(wallet, FUNDING)
    _timed(timings, "top_up_s", started)

    # Transfers between the history wallet and its partner, alternating direction so neither
    # balance drifts; every one is one ledger transaction with an entry on each side.
    started = time.monotonic()
    h, p = history[1], partner[1]
    posted = 0
    while posted < history_entries:
        count = min(HISTORY_BATCH, history_entries - posted)
        commands = []
        for k in range(posted, posted + count):
            out_of_h = k % 2 == 0
            commands.append(
                PostingCommand(
                    type="transfer",
                    legs=(Leg(h.account_id, -1 if out_of_h else 1), Leg(p.account_id, 1 if out_of_h else -1)),
                    reference=f"wallet:{(h if out_of_h else p).id}",
                )
            )
        with atomic():
            results = transactions_post(commands=commands)
        refused = [r for r in results if isinstance(r, Rejected)]
        if refused:
            raise RuntimeError(f"history seeding refused: {refused[0].error.code}")
        posted += count
        if posted % PROGRESS_EVERY < HISTORY_BATCH or posted == history_entries:
            print(f"seed: {posted:,} of {history_entries:,} history transactions", file=sys.stderr, flush=True)
    _timed(timings, "history_s", started)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM ledger_entry WHERE account_id = %s ORDER BY random() LIMIT %s",
            [h.account_id, HISTORY_CURSORS],
        )
        entry_ids = [row[0] for row in cursor.fetchall()]
    cursors = [""] + [cursor_encode(account_id=h.account_id, entry_id=entry_id) for entry_id in entry_ids]

    account_ids = sorted(wallet.account_id for _, wallet in customers)
    # pgbench (bench/pgbench/transfer.sql) picks customers as first + random(0, n - 1).
    if account_ids != list(range(account_ids[0], account_ids[0] + len(account_ids))):
        raise RuntimeError("the customers' ledger accounts are not one range of ids")

    _write_service_wallets(out, customers, merchant, history, tokens)
    (out / "service-history-cursors.txt").write_text("".join(f"{c}\n" for c in cursors))
    return {
        "wallets": wallets,
        "history_entries": history_entries,
        "first_account_id": account_ids[0],
        "merchant_account_id": merchant[1].account_id,
        "timings": timings,
    }


def _write_service_wallets(out: Path, customers: list, merchant: tuple, history: tuple, tokens: dict) -> None:
    _write_wallets(out / "service-wallets.tsv", [(tokens[u.id], w.handle) for u, w in customers])
    _write_wallets(out / "service-merchant.tsv", [(tokens[merchant[0].id], merchant[1].handle)])
    _write_wallets(out / "service-history.tsv", [(tokens[history[0].id], history[1].handle)])


def seed_service_tokens(out: Path) -> dict:
    """For a run that reuses an earlier run's seeded service (BENCH_REUSE): a fresh login for
    each seeded user, so no token expires during the run."""
    from accounts.tokens import session_start
    from wallets.models import Wallet

    started = time.monotonic()
    wallets = Wallet.objects.select_related("user").filter(user__email__endswith="@bench.example")
    by_email = {wallet.user.email: (wallet.user, wallet) for wallet in wallets}
    customers = [pair for email, pair in sorted(by_email.items()) if email[len("bench-") :][:6].isdigit()]
    merchant, history = by_email["bench-merchant@bench.example"], by_email["bench-history@bench.example"]
    tokens = {user.id: session_start(user=user)["access_token"] for user, _ in [*customers, merchant, history]}
    _write_service_wallets(out, customers, merchant, history, tokens)
    return {"wallets": len(customers), "timings": {"login_s": round(time.monotonic() - started, 2)}}


def seed_baseline(out: Path, wallets: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from rest_framework_simplejwt.tokens import AccessToken

    from bench.baseline.models import Wallet
    from bench.baseline.services import pin_bcrypt_hash, pin_digest, wallet_fund

    User = get_user_model()
    timings: dict[str, float] = {}
    # One bcrypt hash (cost 12, ~250 ms to make) for every wallet: checking it costs the same
    # as checking a hash of one's own, and a thousand of them would take minutes to make.
    bcrypt_hash = pin_bcrypt_hash(PIN)

    def make(name: str, first_name: str) -> tuple[str, str]:
        with transaction.atomic():
            user = User(username=name, first_name=first_name)
            user.set_unusable_password()
            user.save()
            wallet = Wallet.objects.create(
                user=user,
                handle=f"{name}@wallet",
                pin_digest=pin_digest(user_id=user.id, pin=PIN),
                pin_bcrypt=bcrypt_hash,
            )
        return str(AccessToken.for_user(user)), wallet

    started = time.monotonic()
    customers = [make(f"bench-{i:06d}", f"bench {i:06d}") for i in range(wallets)]
    merchant = make("bench-merchant", "Bench Merchant")
    _timed(timings, "register_s", started)
    started = time.monotonic()
    for _, wallet in customers:
        wallet_fund(wallet=wallet, amount=FUNDING)
    _timed(timings, "top_up_s", started)

    _write_wallets(out / "baseline-wallets.tsv", [(token, wallet.handle) for token, wallet in customers])
    _write_wallets(out / "baseline-merchant.tsv", [(merchant[0], merchant[1].handle)])
    return {"wallets": wallets, "timings": timings}


def main(argv: list[str]) -> int:
    target, out = argv[0], Path(argv[1])
    django.setup()
    if target == "service":
        made = seed_service(out, wallets=int(argv[2]), history_entries=int(argv[3]))
    elif target == "service-tokens":
        made = seed_service_tokens(out)
    elif target == "baseline":
        made = seed_baseline(out, wallets=int(argv[2]))
    else:
        print(f"unknown target {target!r}", file=sys.stderr)
        return 2
    print(json.dumps(made))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
