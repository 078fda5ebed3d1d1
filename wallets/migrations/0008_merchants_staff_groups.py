"""The merchant payment tables in the staff groups: operations and support see merchant
profiles, payments, refunds, cashback campaigns and grants; operations also create, pause
and resume campaigns (`manage_cashbackcampaign`) and set a merchant's fee
(`set_merchant_fee`). Permissions are created here, as 0002_staff_groups explains, because
Django only creates them after the last migration."""

from django.db import migrations

from walletsite.staff_groups import staff_permissions_grant, staff_permissions_revoke

VIEWS = {
    "merchantprofile": "merchant profile",
    "payment": "payment",
    "refund": "refund",
    "cashbackcampaign": "cashback campaign",
    "cashbackgrant": "cashback grant",
}
OPERATIONS_EXTRA = (
    ("cashbackcampaign", "manage_cashbackcampaign", "Can create, pause and resume cashback campaigns"),
    ("merchantprofile", "set_merchant_fee", "Can set a merchant's fee"),
)


def add_permissions(apps, schema_editor):
    staff_permissions_grant(apps, app_label="wallets", views=VIEWS, operations_extra=OPERATIONS_EXTRA)


def remove_permissions(apps, schema_editor):
    staff_permissions_revoke(apps, app_label="wallets", views=VIEWS, operations_extra=OPERATIONS_EXTRA)


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0007_merchants_models"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(add_permissions, remove_permissions)]
