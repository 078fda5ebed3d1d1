"""Adjustments in the staff groups: operations and support see them; operations also make
and approve them (`make_adjustment`, `approve_adjustment`). One group holds both roles: the
maker-checker rule is per adjustment (the service and a CHECK refuse an approval by its
maker), so two members of operations check each other. Permissions are created here, as
0002_staff_groups explains, because Django only creates them after the last migration."""

from django.db import migrations

from walletsite.staff_groups import staff_permissions_grant, staff_permissions_revoke

VIEWS = {"adjustment": "adjustment"}
OPERATIONS_EXTRA = (
    ("adjustment", "make_adjustment", "Can create manual adjustments (maker)"),
    ("adjustment", "approve_adjustment", "Can approve or reject adjustments of other staff (checker)"),
)


def add_permissions(apps, schema_editor):
    staff_permissions_grant(apps, app_label="wallets", views=VIEWS, operations_extra=OPERATIONS_EXTRA)


def remove_permissions(apps, schema_editor):
    staff_permissions_revoke(apps, app_label="wallets", views=VIEWS, operations_extra=OPERATIONS_EXTRA)


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0010_adjustments_models"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(add_permissions, remove_permissions)]
