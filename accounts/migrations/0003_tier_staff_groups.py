"""Tiers in the staff groups: operations and support see the tiers; operations also move
users between tiers (`change_user_tier`, audited). Changing a tier's limits (`change_tier`)
is left to superusers: the limits are policy, not day-to-day operations. Permissions are
created here, as wallets' 0002_staff_groups explains."""

from django.db import migrations

VIEW = ("view_tier", "Can view tier")
OPERATIONS_EXTRA = (("change_user_tier", "Can change the KYC tier of a user"),)


def _permission(apps, codename: str, name: str):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    content_type, _ = ContentType.objects.get_or_create(app_label="accounts", model="tier")
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename=codename, defaults={"name": name}
    )
    return permission


def add_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    view = _permission(apps, *VIEW)
    extra = [_permission(apps, *codename_name) for codename_name in OPERATIONS_EXTRA]
    operations, _ = Group.objects.get_or_create(name="operations")
    operations.permissions.add(view, *extra)
    support, _ = Group.objects.get_or_create(name="support")
    support.permissions.add(view)


def remove_permissions(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    codenames = [VIEW[0], *(codename for codename, _ in OPERATIONS_EXTRA)]
    permissions = Permission.objects.filter(content_type__app_label="accounts", codename__in=codenames)
    for group in apps.get_model("auth", "Group").objects.filter(name__in=["operations", "support"]):
        group.permissions.remove(*permissions)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_tiers"),
        ("wallets", "0002_staff_groups"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(add_permissions, remove_permissions)]
