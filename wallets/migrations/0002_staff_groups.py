"""The `freeze_wallet` permission, and the two staff groups of the Django admin.

- operations: sees every money table, wallet and user; freezes and unfreezes wallets; runs
  reconciliation.
- support: sees the same tables, and can change nothing.

Django creates permissions after the last migration (post_migrate), so this migration creates
the ones it hands out itself; post_migrate then finds them and leaves them alone.
"""

from django.db import migrations

APPS = ("ledger", "wallets", "accounts")
OPERATIONS_EXTRA = {("wallets", "freeze_wallet"), ("ledger", "run_reconciliation")}


def _permissions(apps):
    """Every view permission and custom permission of the money apps, created if missing, by
    (app label, codename)."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    found = {}
    for label in APPS:
        for model in apps.get_app_config(label).get_models():
            opts = model._meta
            content_type, _ = ContentType.objects.get_or_create(app_label=label, model=opts.model_name)
            wanted = [(f"view_{opts.model_name}", f"Can view {opts.verbose_name_raw}"), *opts.permissions]
            for codename, name in wanted:
                permission, _ = Permission.objects.get_or_create(
                    content_type=content_type, codename=codename, defaults={"name": name}
                )
                found[(label, codename)] = permission
    return found


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    permissions = _permissions(apps)
    view_only = [p for key, p in permissions.items() if key[1].startswith("view_")]
    extra = [permissions[key] for key in sorted(OPERATIONS_EXTRA)]
    operations, _ = Group.objects.get_or_create(name="operations")
    operations.permissions.add(*view_only, *extra)
    support, _ = Group.objects.get_or_create(name="support")
    support.permissions.add(*view_only)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["operations", "support"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0001_initial"),
        ("ledger", "0004_reconciliationrun_permissions"),
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="wallet",
            options={"permissions": [("freeze_wallet", "Can freeze and unfreeze wallets")]},
        ),
        migrations.RunPython(create_groups, remove_groups),
    ]
