"""A real PostgreSQL 15 server for the session, in a temporary folder on a free loopback port.

initdb refuses to run as root: as root the server runs as the `postgres` user.
Missing binaries fail the fixture (they do not skip it): `.ci/run` installs them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from prefect_crisis.core.errors import StackError
from prefect_crisis.deployments.postgres import find_binaries


def postgres_bin() -> Path:
    try:
        return find_binaries()
    except StackError as error:
        pytest.fail(f"{error} (.ci/run installs them)", pytrace=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    bin: Path
    data: Path
    port: int
    user: str
    password: str
    run_as: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run([*self.run_as, str(self.bin / "pg_ctl"), "-D", str(self.data), *args], capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"pg_ctl {' '.join(args)}: {done.stdout}{done.stderr}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("start", "-w", "-t", "60", "-l", str(self.data / "server.log"), "-o", options)

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast", "-w")


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL 15 server (password authentication over TCP), stopped and deleted at the end."""
    binaries = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="crisis-pg-"))  # not under pytest's 0700 folder: the postgres user reads it
    data = root / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    password = f"pg-{uuid.uuid4().hex}"
    secret_file = root / "pwfile"
    secret_file.write_text(password + "\n")
    if run_as:
        os.chown(secret_file, account.pw_uid, account.pw_gid)
    server = PostgresServer(binaries, data, free_port(), "crisis", password, run_as)
    made = subprocess.run(
        [
            *run_as,
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            "crisis",
            f"--pwfile={secret_file}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    secret_file.unlink()
    server.start()
    try:
        yield server
    finally:
        subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "stop", "-m", "immediate", "-w"], capture_output=True, timeout=60)
        pid_file = data / "postmaster.pid"
        if pid_file.exists():  # pg_ctl could not stop it: kill the postmaster we started
            try:
                os.kill(int(pid_file.read_text().split()[0]), 9)
            except ProcessLookupError:
                print(f"postgres of {data} was already gone")
        shutil.rmtree(root, ignore_errors=True)
