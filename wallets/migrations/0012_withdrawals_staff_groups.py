"""The withdrawal tables in the staff groups: operations and support see withdrawals, bank
accounts (masked) and bank callback events; operations also re-check withdrawals with the
bank (`recheck_withdrawal`). Permissions are created here, as 0002_staff_groups explains,
because Django only creates them after the last migration."""

from django.db import migrations

MODELS = {
    "withdrawal": "withdrawal",
    "bankaccount": "bank account",
    "bankevent": "bank event",
}
EXTRA = {"withdrawal": ("recheck_withdrawal", "Can re-check withdrawals with the bank")}


def _permission(apps, model: str, codename: str, name: str):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    content_type, _ = ContentType.objects.get_or_create(app_label="wallets", model=model)
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename=codename, defaults={"name": name}
    )
    return permission


def add_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    views = [_permission(apps, model, f"view_{model}", f"Can view {name}") for model, name in MODELS.items()]
    extra = [_permission(apps, model, *codename_name) for model, codename_name in EXTRA.items()]
    operations, _ = Group.objects.get_or_create(name="operations")
    operations.permissions.add(*views, *extra)
    support, _ = Group.objects.get_or_create(name="support")
    support.permissions.add(*views)


def remove_permissions(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    codenames = [f"view_{model}" for model in MODELS] + [codename for codename, _ in EXTRA.values()]
    for group in apps.get_model("auth", "Group").objects.filter(name__in=["operations", "support"]):
        group.permissions.remove(*Permission.objects.filter(content_type__app_label="wallets", codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0011_adjustments_staff_groups"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(add_permissions, remove_permissions)]
