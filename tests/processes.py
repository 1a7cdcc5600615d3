"""Child processes for the tests that run real services: started in their own process group, stopped by PID.

Every service (Label Studio, our backend, the RQ worker, in tests/e2e and tests/learning) runs as a
:class:`ManagedProcess`: a new
session whose process-group id is the leader's PID, so stopping it signals the leader *and* what it
forked (uvicorn's workers, RQ's work horse, Django's runserver) by that one PID, never by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import redis

T = TypeVar("T")

#: Seconds a process group gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagedProcess:
    """One service: its command line, environment, log file and process group.

    Args:
        name: Short name used in messages (``label-studio``, ``backend``, ``worker``).
        argv: The command line.
        env: The complete environment (nothing is inherited implicitly).
        cwd: Working directory.
        log_path: stdout and stderr go here.
    """

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._proc.pid

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def group_pids(self) -> list[int]:
        """PIDs of every live process in this process group (the leader's children included)."""
        if self._proc is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Fields after the parenthesised command: state ppid pgrp ...
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == self._proc.pid and fields[0] != "Z":
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        """SIGTERM the process group, wait, then SIGKILL whatever is left. Safe to call twice."""
        if self._proc is None:
            return
        pgid = self._proc.pid
        if self._proc.poll() is None or self.group_pids():
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline and (self._proc.poll() is None or self.group_pids()):
                time.sleep(0.1)
            if self._proc.poll() is None or self.group_pids():
                _signal_group(pgid, signal.SIGKILL)
        try:
            self._proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited with {self._proc.returncode if self._proc else None}"
        return f"{self.name} (pid {self._proc.pid if self._proc else '-'}, {state}, log {self.log_path})"

    def listens_on(self, port: int) -> bool:
        """Whether a process of this group holds the listening socket of ``port`` on loopback."""
        inodes = _listening_inodes(port)
        if not inodes:
            return False
        for pid in self.group_pids():
            try:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    try:
                        target = os.readlink(fd)
                    except OSError:
                        continue
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        return True
            except OSError:
                continue
        return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes in LISTEN state (``0A``) on ``port``, from /proc/net/tcp and tcp6."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


class RedisServer(ManagedProcess):
    """A private ``redis-server`` on a free loopback port; the one Redis starter.

    The session's Redis (``redis_server`` in tests/conftest.py) and the learning tests' own Redis, which
    they stop, restart and freeze (SIGSTOP) to play an outage, are both this class. Nothing is saved to
    disk unless ``appendonly``: then the append-only file (fsync every second, Redis's default) lives in
    ``workdir`` and a :meth:`start` after a :meth:`kill` reloads it on the same port, as a restarted
    deployment does.
    """

    def __init__(self, workdir: Path, binary: str = "redis-server", *, appendonly: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "yes" if appendonly else "no", "--dir", str(workdir)]
        super().__init__("redis-server", argv, dict(os.environ), workdir, workdir / "redis-server.log")

    def start(self) -> RedisServer:
        """Start it and wait until it answers PING."""
        super().start()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2, socket_timeout=0.5)
        try:
            wait_until(
                client.ping, timeout=10, what=f"redis-server on port {self.port}", processes=[self], interval=0.05
            )
        finally:
            client.close()
        return self

    def stop(self) -> None:
        """Thaw it if frozen, then stop it (safe to call twice)."""
        if self.alive():
            self.thaw()
        super().stop()

    def kill(self) -> None:
        """SIGKILL: a crash (nothing flushed beyond what the append-only file already holds)."""
        os.kill(self.pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing answers (a hung Redis)."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    processes: Sequence[ManagedProcess] = (),
    interval: float = 0.25,
    errors: Literal["retry", "raise"] = "retry",
) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    Fails (AssertionError) after ``timeout`` seconds, or at once when one of ``processes`` has exited,
    with the tail of that process's log in the message.

    Args:
        check: The condition; its truthy result is returned.
        timeout: Seconds before giving up.
        what: What is awaited, for the failure message.
        processes: Services whose death fails the wait at once.
        interval: Seconds between calls.
        errors: What an exception raised by ``check`` means: ``"retry"`` (not ready yet; the last one
            is reported on timeout) or ``"raise"`` (it fails the wait at once: checks that detect a
            dead service raise on purpose).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            if errors == "raise":
                raise
            last_error = exc
        for proc in processes:
            if not proc.alive():
                raise AssertionError(
                    f"{proc.describe()} died while waiting for {what}; its log ends with:\n{proc.log_tail()}"
                )
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.describe()}:\n{p.log_tail(30)}" for p in processes)
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r})\n{logs}"
            )
        time.sleep(interval)
