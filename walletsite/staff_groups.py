"""Granting model permissions to the two staff groups, for the data migrations that add a
money table to the admin (and for conftest, which re-runs them after a test flush).

Data migrations call these with the historical `apps`, so this module must stay stable: it
touches only auth's Group and Permission and contenttypes' ContentType, and is changed only
in ways every migration that calls it can live with.

Permissions are created here rather than left to Django, which creates them only after the
last migration has run (see wallets/migrations/0002_staff_groups.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

OPERATIONS = "operations"
SUPPORT = "support"


def _permission(apps, *, app_label: str, model: str, codename: str, name: str):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    content_type, _ = ContentType.objects.get_or_create(app_label=app_label, model=model)
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename=codename, defaults={"name": name}
    )
    return permission


def staff_permissions_grant(
    apps, *, app_label: str, views: Mapping[str, str], operations_extra: Iterable[tuple[str, str, str]] = ()
) -> None:
    """Both groups may view the models in `views` ({model: verbose name}); operations also
    gets `operations_extra` ((model, codename, name) custom permissions)."""
    Group = apps.get_model("auth", "Group")
    seen = [
        _permission(apps, app_label=app_label, model=model, codename=f"view_{model}", name=f"Can view {name}")
        for model, name in views.items()
    ]
    extra = [
        _permission(apps, app_label=app_label, model=model, codename=codename, name=name)
        for model, codename, name in operations_extra
    ]
    Group.objects.get_or_create(name=OPERATIONS)[0].permissions.add(*seen, *extra)
    Group.objects.get_or_create(name=SUPPORT)[0].permissions.add(*seen)


def staff_permissions_revoke(
    apps, *, app_label: str, views: Mapping[str, str], operations_extra: Iterable[tuple[str, str, str]] = ()
) -> None:
    """Undo staff_permissions_grant (the permissions themselves stay)."""
    Permission = apps.get_model("auth", "Permission")
    codenames = [f"view_{model}" for model in views] + [codename for _, codename, _ in operations_extra]
    permissions = Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
    for group in apps.get_model("auth", "Group").objects.filter(name__in=[OPERATIONS, SUPPORT]):
        group.permissions.remove(*permissions)
