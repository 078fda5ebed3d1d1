"""Tiers in the staff groups: operations and support see the tiers; operations also move
users between tiers (`change_user_tier`, audited). Changing a tier's limits (`change_tier`)
is left to superusers: the limits are policy, not day-to-day operations. Permissions are
created here, as wallets' 0002_staff_groups explains."""

from django.db import migrations

from walletsite.staff_groups import staff_permissions_grant, staff_permissions_revoke

VIEWS = {"tier": "tier"}
OPERATIONS_EXTRA = (("tier", "change_user_tier", "Can change the KYC tier of a user"),)


def add_permissions(apps, schema_editor):
    staff_permissions_grant(apps, app_label="accounts", views=VIEWS, operations_extra=OPERATIONS_EXTRA)


def remove_permissions(apps, schema_editor):
    staff_permissions_revoke(apps, app_label="accounts", views=VIEWS, operations_extra=OPERATIONS_EXTRA)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_tiers"),
        ("wallets", "0002_staff_groups"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(add_permissions, remove_permissions)]
