#!/usr/bin/env python
"""Django's command-line utility. With no DATABASE_URL, it starts the embedded PostgreSQL
under ./.data/pg when it is not running already (and stops it again afterwards), so every
command works from a fresh clone whether or not `make run` is serving."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "walletsite.settings")
    from walletsite.embedded_pg import ensure_for_command

    ensure_for_command(sys.argv)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
