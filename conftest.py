"""Fixtures shared by every app's tests."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # bcrypt at cost 12 takes ~250 ms; the tests create hundreds of users. Production keeps
    # Django's BCryptSHA256PasswordHasher at its default cost.
    settings.PASSWORD_HASHERS = ["walletsite.testing.FastBCryptSHA256PasswordHasher"]


@pytest.fixture
def api() -> APIClient:
    return APIClient()


# Rows that data migrations create: a transactional test's teardown flushes every table, so
# the next test that needs them gets them back from the same functions the migrations run.
SEEDS = (
    ("ledger.migrations.0003_system_accounts", "create"),
    ("wallets.migrations.0002_staff_groups", "create_groups"),
    ("accounts.migrations.0002_tiers", "seed_tiers"),
    ("accounts.migrations.0003_tier_staff_groups", "add_permissions"),
    ("wallets.migrations.0011_adjustments_staff_groups", "add_permissions"),
    ("wallets.migrations.0008_merchants_staff_groups", "add_permissions"),
    ("wallets.migrations.0006_notifications_staff_groups", "add_permissions"),
    ("wallets.migrations.0012_withdrawals_staff_groups", "add_permissions"),
)


@pytest.fixture(autouse=True)
def _seed_rows_after_flush(request):
    marker = request.node.get_closest_marker("django_db")
    transactional = {"transactional_db", "live_server"} & set(request.fixturenames) or (
        marker is not None and marker.kwargs.get("transaction")
    )
    if not transactional:
        return
    import importlib

    from django.apps import apps

    request.getfixturevalue("transactional_db")
    for module, function in SEEDS:
        getattr(importlib.import_module(module), function)(apps, None)
