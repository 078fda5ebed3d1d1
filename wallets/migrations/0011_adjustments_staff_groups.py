"""Adjustments in the staff groups: operations and support see them; operations also make
and approve them (`make_adjustment`, `approve_adjustment`). One group holds both roles: the
maker-checker rule is per adjustment (the service and a CHECK refuse an approval by its
maker), so two members of operations check each other. Permissions are created here, as
0002_staff_groups explains, because Django only creates them after the last migration."""

from django.db import migrations

VIEW = ("view_adjustment", "Can view adjustment")
OPERATIONS_EXTRA = (
    ("make_adjustment", "Can create manual adjustments (maker)"),
    ("approve_adjustment", "Can approve or reject adjustments of other staff (checker)"),
)


def _permission(apps, codename: str, name: str):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    content_type, _ = ContentType.objects.get_or_create(app_label="wallets", model="adjustment")
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
    permissions = Permission.objects.filter(content_type__app_label="wallets", codename__in=codenames)
    for group in apps.get_model("auth", "Group").objects.filter(name__in=["operations", "support"]):
        group.permissions.remove(*permissions)


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0010_adjustments_models"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(add_permissions, remove_permissions)]
