"""Idempotency keys are kept for the retention window (at least 24 hours), then purged; a
retry with a purged key is a new request, a retry inside the window is a replay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import IdempotencyKey
from wallets.retention import idempotency_keys_purge
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import balance_of, fund, transfer

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(api, settings):
    settings.WALLET = {**settings.WALLET, "IDEMPOTENCY_RETENTION_HOURS": 24}
    user, wallet = register_user()
    _, recipient = register_user()
    fund(wallet, 10_000)
    auth = auth_header(user)
    assert transfer(api, auth, to=recipient.handle, amount=100, key="old-key").status_code == 201
    return auth, recipient


def _age(key: str, hours: float) -> None:
    # Idempotency keys are ordinary rows (not ledger entries): ageing one is a plain UPDATE.
    IdempotencyKey.objects.filter(key=key).update(created_at=timezone.now() - timedelta(hours=hours))


def test_a_key_inside_the_window_is_kept_and_replays(api, sent):
    auth, recipient = sent
    _age("old-key", 23.5)
    assert idempotency_keys_purge() == 0
    again = transfer(api, auth, to=recipient.handle, amount=100, key="old-key")
    assert again["Idempotent-Replayed"] == "true"
    assert balance_of(recipient) == 100


def test_a_purged_key_is_a_new_request(api, sent):
    auth, recipient = sent
    _age("old-key", 24.5)
    assert idempotency_keys_purge() == 1
    again = transfer(api, auth, to=recipient.handle, amount=100, key="old-key")
    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again
    assert balance_of(recipient) == 200
    assert_ledger_consistent()


def test_the_window_cannot_be_shorter_than_24_hours(tmp_path):
    from walletsite import config

    with pytest.raises(config.ConfigError, match="IDEMPOTENCY_RETENTION_HOURS"):
        config.load({"DJANGO_ENV": "test", "DATA_DIR": str(tmp_path), "IDEMPOTENCY_RETENTION_HOURS": "23"})


def test_purge_works_in_batches(sent, monkeypatch):
    import wallets.retention as retention

    monkeypatch.setattr(retention, "PURGE_BATCH", 2)
    user = IdempotencyKey.objects.get(key="old-key").user
    IdempotencyKey.objects.bulk_create(
        IdempotencyKey(user=user, key=f"k{i}", request_hash="x", response_status=201, response_body={})
        for i in range(5)
    )
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(days=3))
    assert idempotency_keys_purge(dry_run=True) == 6
    assert idempotency_keys_purge() == 6
    assert IdempotencyKey.objects.count() == 0


def test_the_command(sent, capsys):
    _age("old-key", 30)
    call_command("purge_idempotency_keys", "--dry-run")
    assert "would delete 1 " in capsys.readouterr().out
    call_command("purge_idempotency_keys")
    assert "deleted 1 " in capsys.readouterr().out
    assert not IdempotencyKey.objects.exists()


def test_the_worker_purges_every_hour(sent):
    from wallets.worker import default_jobs

    (job,) = [job for job in default_jobs() if job.name == "purge_idempotency_keys"]
    assert job.interval_seconds == 3600
    _age("old-key", 49)
    assert job.run() == 1
