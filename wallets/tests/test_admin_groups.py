"""The staff groups created by wallets/migrations/0002_staff_groups."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

pytestmark = pytest.mark.django_db


def _codenames(group_name: str) -> set[str]:
    group = Group.objects.get(name=group_name)
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}


def test_operations_can_view_freeze_and_reconcile():
    # given / when
    codenames = _codenames("operations")
    # then
    assert {
        "ledger.view_account",
        "ledger.view_transaction",
        "ledger.view_entry",
        "ledger.view_auditlog",
        "ledger.view_reconciliationrun",
        "ledger.view_outboxevent",
        "wallets.view_wallet",
        "wallets.view_paymentattempt",
        "accounts.view_user",
        "wallets.freeze_wallet",
        "ledger.run_reconciliation",
    } <= codenames
    # Django's own add/change/delete permissions of any model: never granted (custom
    # permissions such as accounts.change_user_tier go through audited services).
    from django.apps import apps

    defaults = {
        f"{m._meta.app_label}.{action}_{m._meta.model_name}"
        for m in apps.get_models()
        for action in ("add", "change", "delete")
    }
    assert not codenames & defaults, sorted(codenames & defaults)


def test_support_only_views():
    codenames = _codenames("support")
    assert "wallets.view_wallet" in codenames
    assert "ledger.view_entry" in codenames
    assert all(c.split(".")[1].startswith("view_") for c in codenames)


@pytest.mark.django_db(transaction=True)
def test_every_group_permission_survives_a_transactional_flush():
    # Transactional tests flush every table; conftest re-seeds what data migrations created.
    # Every migration that grants group permissions must be in that list, or a test after a
    # flush sees groups without them.
    import importlib
    import pkgutil

    import conftest

    seeded = {module for module, _ in conftest.SEEDS}
    for app in ("accounts", "wallets", "ledger"):
        package = importlib.import_module(f"{app}.migrations")
        for info in pkgutil.iter_modules(package.__path__):
            source = importlib.util.find_spec(f"{app}.migrations.{info.name}").loader.get_source(
                f"{app}.migrations.{info.name}"
            )
            if "RunPython" in source and ("permissions" in source or "Group" in source):
                assert f"{app}.migrations.{info.name}" in seeded, info.name
