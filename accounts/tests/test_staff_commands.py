"""`create_staff` and Django's `createsuperuser` with the email user."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import User

pytestmark = pytest.mark.django_db


def _create_staff(*args, stdin: str = ""):
    out = io.StringIO()
    call_command("create_staff", *args, stdout=out, stdin=io.StringIO(stdin))
    return out.getvalue()


@pytest.mark.parametrize("role", ["operations", "support"])
def test_create_staff_makes_a_staff_user_in_the_role_group(role):
    # given
    password = "a long staff password\n"

    # when
    output = _create_staff("--email", "Ops@Example.com", "--role", role, "--password-from-stdin", stdin=password)

    # then
    user = User.objects.get(email__iexact="ops@example.com")
    assert user.is_staff and not user.is_superuser
    assert list(user.groups.values_list("name", flat=True)) == [role]
    assert user.check_password("a long staff password")
    assert "created staff user" in output


def test_staff_can_log_in_to_the_admin(client):
    # given
    _create_staff(
        "--email", "ops@example.com", "--role", "operations", "--password-from-stdin", stdin="a long staff password\n"
    )

    # when
    logged_in = client.login(email="ops@example.com", password="a long staff password")

    # then
    assert logged_in
    assert client.get("/admin/").status_code == 200


def test_create_staff_without_a_password_leaves_it_unusable():
    # given: standard input is not a terminal and no --password-from-stdin

    # when
    output = _create_staff("--email", "support@example.com", "--role", "support")

    # then
    assert not User.objects.get(email="support@example.com").has_usable_password()
    assert "changepassword" in output


def test_create_staff_missing_group_fails_clearly():
    # given
    Group.objects.filter(name="support").delete()

    # when / then
    with pytest.raises(CommandError, match="group 'support' does not exist"):
        _create_staff(
            "--email", "s@example.com", "--role", "support", "--password-from-stdin", stdin="a long password\n"
        )
    assert not User.objects.exists()


def test_create_staff_missing_group_exits_1(capsys):
    # given: the command as run from the shell
    Group.objects.filter(name="operations").delete()
    from django.core.management import ManagementUtility

    # when
    with pytest.raises(SystemExit) as exit_info:
        ManagementUtility(["manage.py", "create_staff", "--email", "o@example.com", "--role", "operations"]).execute()

    # then
    assert exit_info.value.code == 1
    assert "does not exist" in capsys.readouterr().err


def test_create_staff_refuses_other_roles():
    # when / then
    with pytest.raises(CommandError):
        _create_staff("--email", "a@example.com", "--role", "admin")


def test_create_staff_refuses_a_taken_email_in_any_case():
    # given
    _create_staff(
        "--email", "ops@example.com", "--role", "operations", "--password-from-stdin", stdin="a long staff password\n"
    )

    # when / then
    with pytest.raises(CommandError, match="already exists"):
        _create_staff(
            "--email", "OPS@example.com", "--role", "support", "--password-from-stdin", stdin="another password\n"
        )


def test_create_staff_refuses_a_short_password():
    # given

    # when / then
    with pytest.raises(CommandError, match="password refused"):
        _create_staff("--email", "ops@example.com", "--role", "operations", "--password-from-stdin", stdin="short\n")


def test_createsuperuser_works_with_the_email_user(monkeypatch):
    # given
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a long admin password")

    # when
    call_command("createsuperuser", interactive=False, email="root@example.com", stdout=io.StringIO())

    # then
    user = User.objects.get(email="root@example.com")
    assert user.is_staff and user.is_superuser
    assert user.check_password("a long admin password")
