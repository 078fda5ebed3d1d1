"""Processes for bench.run: starting and stopping the servers, and the CPU they use.

CPU comes from /proc: for a process tree, the user + system time of every live process in it
plus the time of its children that have already exited and been reaped (cutime + cstime in
/proc/<pid>/stat), so a PostgreSQL backend that ends between two readings is still counted.
Steal and the whole machine's use come from the first line of /proc/stat.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from walletsite.serve import _die_with

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces or parentheses; the fields after it do not.
    return raw[raw.rindex(")") + 2 :].split()


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])
    return parents


def tree(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def children(pid: int) -> list[int]:
    return [child for child, parent in _parents().items() if parent == pid]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def tree_cpu(root: int | None) -> float:
    """CPU seconds used so far by the tree under `root` (see the module docstring)."""
    if root is None:
        return 0.0
    total = 0
    for pid in tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            # utime, stime, cutime, cstime: fields 14-17 of proc(5), 11-14 after the name.
            total += sum(int(value) for value in fields[11:15])
    return total / TICKS


@dataclass(frozen=True)
class Machine:
    busy: float
    steal: float
    total: float


def machine() -> Machine:
    """Seconds of all CPUs so far: busy (not idle or iowait), steal, and in all."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return Machine(busy=(user + nice + system + irq + softirq) / TICKS, steal=steal / TICKS, total=sum(fields) / TICKS)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def http_answers(url: str, host: str | None = None) -> int | None:
    """The status of a GET, or None when nothing answers."""
    request = urllib.request.Request(url, headers={"Host": host} if host else {})  # noqa: S310 - our own URL
    try:
        with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


class Server:
    """A server process bench.run started: its own session, SIGTERM when bench dies."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path, probe: str) -> None:
        self.name, self.args, self.env, self.log, self.probe = name, args, env, log, probe
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # bench.run runs no threads, so preexec_fn is safe.
                preexec_fn=_die_with(os.getpid()),
            )

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while http_answers(self.probe) is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start-up (exit {self.proc.returncode}); see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer {self.probe} within {timeout:.0f} s; see {self.log}")
            time.sleep(0.2)

    def stop(self, grace: float = 90.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            print(f"bench: {self.name} did not stop in {grace:.0f} s; killing it", file=sys.stderr)
            self.proc.kill()
            self.proc.wait()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def child(self, marker: bytes) -> int | None:
        """The pid of this server's child whose command line holds `marker`."""
        return next((pid for pid in children(self.pid) if marker in cmdline(pid)), None)
