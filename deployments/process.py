"""One managed-process type for every long-running process of the local stack.

The Prefect server, the MLflow UI, the two workers and `crisis serve`'s scoring server are each a
`ManagedProcess`: started in a process group of its own with its output appended to a log, known
afterwards by pid *and* start time *and* command line (a pid reused by another program, or by another
stack's server, is never signalled), probed over HTTP, stopped as a whole group (SIGTERM, SIGKILL
after a grace period). PostgreSQL is run by `pg_ctl`, which daemonises it: the cluster uses the
free-port and probe helpers here, and `pg_ctl` to start and stop.

Example:
    >>> import sys
    >>> process = ManagedProcess.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"], log=None)
    >>> process.why_not_ours() is None, process.alive()
    (True, True)
    >>> process.stop(grace=5), process.alive()
    (True, False)
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from prefect_crisis.core.waiting import Retrying, stop_after_delay, wait_fixed

CommandMatcher = Callable[[list[str]], bool]
START_TIME_TOLERANCE = 1.0  # seconds: psutil's create_time of one process read twice agrees within this


NO_SERVER = "none"  # the source a stack report names when no server is recorded or configured
EXEC_WINDOW = Retrying(stop=stop_after_delay(1.0), wait=wait_fixed(0.01))


def command_line(process: psutil.Process, policy: Retrying = EXEC_WINDOW) -> list[str]:
    """`process`'s command line. A process caught between fork and the end of exec (a parent's `Popen` returns
    before the kernel has set up the new program's arguments) shows an empty one for a few milliseconds; a live
    process that runs a program always has one, so an empty answer is read again within `policy`'s budget."""
    return policy.poll(process.cmdline)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on `host:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex((host, port)) != 0


def http_ok(url: str, timeout: float = 2.0, method: str = "GET", json: object | None = None) -> bool:
    """True when `url` answers 2xx within `timeout` seconds."""
    try:
        return httpx.request(method, url, timeout=timeout, json=json).is_success
    except httpx.HTTPError:
        return False


def terminate_group(pid: int, timeout: float, waiting: Retrying | None = None) -> None:
    """SIGTERM (and SIGCONT, so a frozen process handles it) to the group `pid` leads (or to `pid`
    alone), SIGKILL what is left after `timeout` seconds.

    The whole group is waited for, not only its leader: a leader may exit at once while its
    children still finish their work (MLflow's CLI and the uvicorn it starts, say).
    """
    try:
        leads = os.getpgid(pid) == pid
    except ProcessLookupError:  # the leader is gone (and reaped); its group may live on
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        leads = True

    def send(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum) if leads else os.kill(pid, signum)

    def gone() -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap a leader that is our own child, or the group never empties
        try:
            os.killpg(pid, 0) if leads else os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    def gone_within(seconds: float) -> bool:
        policy = waiting or Retrying(stop=stop_after_delay(seconds), wait=wait_fixed(0.1))
        return bool(policy.poll(gone))

    send(signal.SIGTERM)
    send(signal.SIGCONT)
    if not gone_within(timeout):
        send(signal.SIGKILL)
        gone_within(5.0)


@dataclass
class ManagedProcess:
    """A process this stack started: what it is called, its pid and start time, how its command line looks, its log.

    `matches` tells this kind of process by its command line; with `started_at` it tells ours from a
    later process that got the same pid. `popen` is set only in the process that started it.
    """

    name: str
    pid: int
    started_at: float | None = None
    matches: CommandMatcher = field(default=lambda cmdline: True, repr=False)
    log: Path | None = None
    log_offset: int = 0
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @classmethod
    def spawn(
        cls,
        name: str,
        command: Sequence[str],
        log: Path | None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        matches: CommandMatcher | None = None,
    ) -> ManagedProcess:
        """Start `command` in a process group of its own, output appended to `log` (discarded when None)."""
        offset = log.stat().st_size if log is not None and log.exists() else 0
        with open(log, "ab") if log is not None else open(os.devnull, "wb") as output:
            popen = subprocess.Popen(
                list(command), env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        try:
            started_at = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            started_at = None
        return cls(name, popen.pid, started_at, matches or (lambda cmdline: True), log, offset, popen)

    def why_not_ours(self) -> str | None:
        """None while `pid` is still the process this stack started; else why a record of it is stale."""
        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return f"pid {self.pid} has exited"
            cmdline, created = command_line(process), process.create_time()
        except psutil.NoSuchProcess:
            return f"pid {self.pid} is not running"
        except psutil.AccessDenied:
            return f"pid {self.pid} belongs to another user"
        if not self.matches(cmdline):
            return f"pid {self.pid} is now another program ({' '.join(cmdline)[:80] or '?'})"
        if self.started_at is not None and abs(created - self.started_at) > START_TIME_TOLERANCE:
            return f"pid {self.pid} is another {self.name}, started at a different time"
        return None

    def alive(self) -> bool:
        """True while it is ours and has not exited (in the starting process: also not yet reaped)."""
        if self.popen is not None and self.popen.poll() is not None:
            return False
        return self.why_not_ours() is None

    def exit_code(self) -> int | None:
        """Its exit code when this process started it and it has exited; None otherwise."""
        return self.popen.poll() if self.popen is not None else None

    def frozen(self) -> bool:
        """True when it is stopped by a signal (SIGSTOP, SIGTSTP)."""
        try:
            return psutil.Process(self.pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
        except psutil.Error:
            return False

    def listens_on(self, port: int) -> bool:
        """True when it (or a child of it) holds a listening socket on `port`: an answer on the port is its own."""
        try:
            process = psutil.Process(self.pid)
            candidates = [process, *process.children(recursive=True)]
        except psutil.Error:
            return False
        for candidate in candidates:
            with contextlib.suppress(psutil.Error):
                if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in candidate.net_connections(kind="tcp")):
                    return True
        return False

    def wait_ready(self, ready: Callable[[], bool], waiting: Retrying) -> bool:
        """Until `ready()` holds while it still runs; False when it exited or the budget was spent."""
        return bool(waiting.poll(lambda: self.exit_code() is not None or (ready() and self.exit_code() is None))) and self.exit_code() is None

    def stop(self, grace: float = 10.0) -> bool:
        """Stop its whole process group when it is still ours; False when there was nothing of ours to stop."""
        if self.popen is None and self.why_not_ours() is not None:
            return False
        terminate_group(self.pid, grace)
        if self.popen is not None:
            with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
                self.popen.wait(timeout=1)
        return True

    def log_text(self) -> str:
        """What it wrote to its log since it was started here (the whole log for a recorded process)."""
        if self.log is None or not self.log.exists():
            return ""
        with self.log.open("rb") as written:
            written.seek(self.log_offset)
            return written.read().decode(errors="replace")

    def last_error(self) -> str:
        """The line of its log that names the cause: the last `SomeError: ...` line, else the last line."""
        lines = [line.strip() for line in self.log_text().splitlines() if line.strip()]
        cause = next((line for line in reversed(lines) if re.match(r"^[\w.]+(Error|Exception): ", line)), None)
        return (cause or (lines[-1] if lines else "(empty log)"))[:200]


def recorded(name: str, pid: int, started_at: float | None, matches: CommandMatcher, log: str | Path | None = None) -> ManagedProcess:
    """The managed process a state file names (its log read from the start)."""
    return ManagedProcess(name, pid, started_at, matches, Path(log) if log else None)
