"""Faults injected into a real PostgreSQL session, for tests of what the code does after."""

from __future__ import annotations

from collections.abc import Callable

from django.db import connection, connections


def backend_killer() -> Callable[[], None]:
    """A hook that, the first time it is called, has PostgreSQL terminate the calling
    thread's own session (from a second connection), as a crash of the server process or a
    broken network would; later calls do nothing. Used as a Batcher's `before_commit`, it
    makes the COMMIT that follows fail on a dead connection."""
    killed: list[int] = []

    def kill() -> None:
        if killed:
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (pid,) = cursor.fetchone()
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        finally:
            other.close()
        killed.append(pid)

    return kill
