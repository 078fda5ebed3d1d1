"""The withdrawal tables in the staff groups: operations and support see withdrawals, bank
accounts (masked) and bank callback events; operations also re-check withdrawals with the
bank (`recheck_withdrawal`). Permissions are created here, as 0002_staff_groups explains,
because Django only creates them after the last migration."""

from django.db import migrations

from walletsite.staff_groups import staff_permissions_grant, staff_permissions_revoke

VIEWS = {
    "withdrawal": "withdrawal",
    "bankaccount": "bank account",
    "bankevent": "bank event",
}
OPERATIONS_EXTRA = (("withdrawal", "recheck_withdrawal", "Can re-check withdrawals with the bank"),)


def add_permissions(apps, schema_editor):
    staff_permissions_grant(apps, app_label="wallets", views=VIEWS, operations_extra=OPERATIONS_EXTRA)


def remove_permissions(apps, schema_editor):
    staff_permissions_revoke(apps, app_label="wallets", views=VIEWS, operations_extra=OPERATIONS_EXTRA)


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0011_adjustments_staff_groups"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(add_permissions, remove_permissions)]
