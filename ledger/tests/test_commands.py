"""`manage.py reconcile` and `manage.py recompute_balances`: in-process with call_command,
and once each as a real process against the test database for the exit codes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from ledger.models import AuditLog, Entry, ReconciliationRun
from ledger.posting import system_account
from ledger.tests.test_reconciliation import drift, funded_account

pytestmark = pytest.mark.django_db

ROOT = Path(settings.BASE_DIR)


class TtyIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(name: str, *args: str, stdout=None) -> str:
    out = stdout or io.StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


def test_reconcile_prints_a_summary_and_passes_on_a_consistent_ledger():
    # given
    funded_account(1000)
    # when
    output = run("reconcile")
    # then
    last = ReconciliationRun.objects.latest("id")
    assert last.ok and last.triggered_by == "command:reconcile"
    assert f"reconciliation run {last.id}: OK" in output
    assert f"{last.checked_accounts} accounts, 1 transactions, total balance 0" in output


def test_reconcile_prints_every_mismatch_and_fails():
    # given
    account = funded_account(1000)
    drift(account, 9)
    out = io.StringIO()
    # when
    with pytest.raises(CommandError, match="does not reconcile"):
        call_command("reconcile", stdout=out)
    # then
    output = out.getvalue()
    assert "MISMATCH" in output
    assert f"balance_not_sum_of_entries: account {account.id}: expected 1000, actual 1009" in output
    assert f"balance_not_last_balance_after: account {account.id}: expected 1000, actual 1009" in output
    assert "balances_total_not_zero: INR: expected 0, actual 9" in output


def test_recompute_dry_run_lists_drift_exits_non_zero_and_changes_nothing():
    # given
    account = funded_account(1000)
    drift(account, -30)
    out = io.StringIO()
    # when
    with pytest.raises(CommandError, match="1 accounts' cached balances differ"):
        call_command("recompute_balances", stdout=out)
    # then
    assert f"account {account.id} (customer): cached 970, entries 1000, difference -30" in out.getvalue()
    account.refresh_from_db()
    assert account.balance == 970
    assert not AuditLog.objects.exists()


def test_recompute_on_a_consistent_ledger_exits_zero():
    funded_account(1000)
    output = run("recompute_balances")
    assert "every cached balance equals the sum of its entries" in output


def test_recompute_fix_needs_a_reason():
    with pytest.raises(CommandError, match="--reason"):
        call_command("recompute_balances", "--fix", stdout=io.StringIO())


def test_recompute_refuses_an_unknown_actor():
    with pytest.raises(CommandError, match="no user"):
        call_command("recompute_balances", "--actor", "nobody@example.com", stdout=io.StringIO())


def test_recompute_fix_rebuilds_audits_and_then_reconcile_passes(django_user_model):
    # given
    staff = django_user_model.objects.create_user("ops@example.com", "x" * 12, is_staff=True)
    account = funded_account(1000)
    drift(account, 77)
    drift(system_account("gateway_clearing"), -77)
    entries_before = list(Entry.objects.order_by("id").values_list("id", "account_id", "amount", "balance_after"))
    with pytest.raises(CommandError):
        call_command("reconcile", stdout=io.StringIO())
    # when
    output = run("recompute_balances", "--fix", "--reason", "incident 7", "--actor", "OPS@example.com")
    # then
    assert f"account {account.id} (customer): cached 1077, entries 1000, difference +77 -> fixed" in output
    assert "fixed 2 drifted balances" in output
    account.refresh_from_db()
    assert account.balance == 1000
    audit = AuditLog.objects.get(target=f"account:{account.id}")
    assert (audit.action, audit.actor_id, audit.actor_label, audit.reason, audit.data) == (
        "ledger.balance_recompute",
        staff.id,
        "ops@example.com",
        "incident 7",
        {"old": 1077, "new": 1000},
    )
    assert (
        list(Entry.objects.order_by("id").values_list("id", "account_id", "amount", "balance_after")) == entries_before
    )
    assert "OK" in run("reconcile")


def test_recompute_without_actor_is_audited_as_the_command():
    account = funded_account(10)
    drift(account, 1)
    run("recompute_balances", "--fix", "--reason", "nightly repair")
    assert AuditLog.objects.get().actor_label == "system:recompute_balances"


def test_recompute_progress_is_plain_text_off_a_terminal():
    funded_account(10)
    output = run("recompute_balances")
    assert "\r" not in output
    assert "checked " in output and " accounts" in output


def test_recompute_progress_is_a_bar_on_a_terminal():
    funded_account(10)
    output = run("recompute_balances", stdout=TtyIO())
    assert "\r[" in output and "#" * 30 in output


def _database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgresql://{quote(db['USER'])}@localhost:{db['PORT']}/{quote(db['NAME'])}?host={quote(db['HOST'])}"


def _manage(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": _database_url(), "DJANGO_ENV": "test"}
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.django_db(transaction=True)
def test_commands_exit_codes_as_real_processes():
    # given: committed data, so another process sees it (conftest re-seeds the system
    # accounts a transactional test needs)
    account = funded_account(1000)
    # when / then
    passed = _manage("reconcile")
    assert passed.returncode == 0, passed.stderr
    assert "OK" in passed.stdout

    drift(account, 3)
    failed = _manage("reconcile")
    assert failed.returncode == 1
    assert f"balance_not_sum_of_entries: account {account.id}" in failed.stdout
    assert "does not reconcile" in failed.stderr

    dry = _manage("recompute_balances")
    assert dry.returncode == 1
    fixed = _manage("recompute_balances", "--fix", "--reason", "subprocess test")
    assert fixed.returncode == 0, fixed.stderr
    assert _manage("reconcile").returncode == 0
