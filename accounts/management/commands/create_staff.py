"""`manage.py create_staff --email x --role operations|support [--password-from-stdin]`"""

from __future__ import annotations

import getpass
import sys

from django.core.management.base import BaseCommand, CommandError

from accounts.services import STAFF_ROLES, StaffError, staff_create


class Command(BaseCommand):
    help = (
        "Create a Django staff user for the admin, in the group of their role. Reads the password "
        "from the first line of standard input with --password-from-stdin, asks for it on a "
        "terminal, and otherwise leaves it unusable (set it later with changepassword)."
    )

    # Tests pass a stream in place of the process's standard input, as with createsuperuser.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("--email", required=True)
        parser.add_argument("--role", required=True, choices=STAFF_ROLES)
        parser.add_argument("--name", default="")
        parser.add_argument("--password-from-stdin", action="store_true")

    def handle(self, *args, email: str, role: str, name: str, password_from_stdin: bool, **options):
        password = self._password(from_stdin=password_from_stdin, stream=options.get("stdin") or sys.stdin)
        try:
            user = staff_create(email=email, role=role, password=password, name=name)
        except StaffError as exc:
            raise CommandError(str(exc)) from None
        note = "" if user.has_usable_password() else " (no password yet: run changepassword)"
        self.stdout.write(f"created staff user {user.email} in group {role}{note}")

    def _password(self, *, from_stdin: bool, stream) -> str | None:
        if from_stdin:
            # One line; the newline that ends it is not part of the password.
            line = stream.readline().rstrip("\r\n")
            if not line:
                raise CommandError("--password-from-stdin: standard input has no password")
            return line
        if stream.isatty():
            first = getpass.getpass("Password: ")
            if first != getpass.getpass("Password (again): "):
                raise CommandError("the passwords differ")
            return first
        return None
