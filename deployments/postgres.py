"""A private PostgreSQL cluster for the local Prefect server: `crisis up --postgres`.

Why: on SQLite, the Prefect server's automation actions wait for the database's
single write lock. Measured here (Prefect 3.9.1, 2 cores), a RunDeployment
action took 1.8-6.5 s from trigger to flow run on SQLite and 0.06-0.2 s on
PostgreSQL 15, the same server otherwise; Prefect recommends PostgreSQL beyond
local trials. The escalation ladder is automations, so that is the difference
between a response in seconds and one in a poll interval.

The cluster lives in `<CRISIS_HOME>/postgres` (data, log, the generated
password in a 0600 file), listens on 127.0.0.1 only, on a free port recorded in
`postgres.json`; `crisis down` stops it after the server. As root, initdb and
the server run as the `postgres` account (PostgreSQL refuses root); when that
account cannot reach the state folder, the cluster goes to
`/var/tmp/prefect-crisis-pg/<digest of the folder>`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect_crisis.core.errors import StackError
from prefect_crisis.deployments.process import free_port

FOLDER = "postgres"
STATE_FILE = "postgres.json"
USER = "crisis"
DATABASE = "prefect"
BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin",)


def find_binaries() -> Path:
    """The folder holding initdb and pg_ctl (PostgreSQL 15 first).

    Raises:
        StackError: none found (one line naming the package).
    """
    for folder in BIN_CANDIDATES:
        if (Path(folder) / "pg_ctl").exists() and (Path(folder) / "initdb").exists():
            return Path(folder)
    found = shutil.which("pg_ctl")
    if found and (Path(found).resolve().parent / "initdb").exists():
        return Path(found).resolve().parent
    for versioned in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (versioned / "pg_ctl").exists() and (versioned / "initdb").exists():
            return versioned
    raise StackError("PostgreSQL's initdb and pg_ctl are not installed: `apt-get install postgresql`, or pass --database URL for a server you run")


@dataclass(frozen=True)
class Cluster:
    """The private cluster of one stack."""

    data: str
    port: int
    bin: str
    run_as: tuple[str, ...] = ()

    @property
    def folder(self) -> Path:
        return Path(self.data).parent

    def password(self) -> str:
        return (self.folder / "password").read_text().strip()

    def url(self) -> str:
        """SQLAlchemy URL of the server's database (holds the password: never print it, mask it)."""
        return f"postgresql+asyncpg://{USER}:{self.password()}@127.0.0.1:{self.port}/{DATABASE}"

    def running(self) -> bool:
        """True when the cluster accepts connections on its port (pg_isready: a killed postmaster left as a
        zombie, or a stale pid file, still passes `pg_ctl status`)."""
        done = subprocess.run(
            [f"{self.bin}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "3"], capture_output=True, text=True, timeout=30
        )
        return done.returncode == 0


def _run(command: list[str], what: str, timeout: float = 120, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        last = next((line for line in reversed((done.stdout + done.stderr).splitlines()) if line.strip()), "no output")
        raise StackError(f"PostgreSQL {what} failed: {last.strip()[:200]}")


def read_cluster(home: Path) -> Cluster | None:
    try:
        recorded = json.loads((home / STATE_FILE).read_text())
        return Cluster(recorded["data"], int(recorded["port"]), recorded["bin"], tuple(recorded.get("run_as", ())))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _reachable_by(account: str, folder: Path) -> bool:
    done = subprocess.run(["runuser", "-u", account, "--", "test", "-x", str(folder)], capture_output=True, timeout=30)
    return done.returncode == 0


def cluster_folder(home: Path, as_root: bool) -> Path:
    """Where the cluster lives: `<home>/postgres`; as root, when the postgres account cannot reach the
    state folder (a 0700 temporary folder), `/var/tmp/prefect-crisis-pg/<digest of home>` instead."""
    inside = home / FOLDER
    if not as_root or _reachable_by("postgres", home):
        return inside
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    return Path("/var/tmp/prefect-crisis-pg") / digest


def cluster_exists(home: Path) -> bool:
    """True when `crisis up --postgres` made a cluster for this state folder (running or not)."""
    return (cluster_folder(home.resolve(), os.geteuid() == 0) / "data" / "PG_VERSION").exists()


def start_cluster(home: Path, progress=lambda message: None) -> Cluster:
    """Create (first time) and start the stack's cluster, or return the running one.

    Raises:
        StackError: the binaries are missing, or initdb, start or createdb failed (one line from PostgreSQL).
    """
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    recorded = read_cluster(home)
    if recorded is not None and recorded.running():
        return recorded
    binaries = find_binaries()
    as_root = os.geteuid() == 0
    folder = cluster_folder(home, as_root)
    data = folder / "data"
    run_as: tuple[str, ...] = ()
    folder.mkdir(parents=True, exist_ok=True)
    if as_root:
        account = pwd.getpwnam("postgres")
        if folder.parent != home:
            folder.parent.chmod(0o755)
        os.chown(folder, account.pw_uid, account.pw_gid)
        folder.chmod(0o700)
        run_as = ("runuser", "-u", "postgres", "--")
    if not (data / "PG_VERSION").exists():
        password = secrets.token_urlsafe(24)
        secret = folder / "password"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        if run_as:
            os.chown(secret, account.pw_uid, account.pw_gid)  # initdb reads it as postgres; root still reads it
        progress(f"creating the PostgreSQL cluster in {data}")
        _run([*run_as, f"{binaries}/initdb", "-D", str(data), "-U", USER, f"--pwfile={secret}", "--auth=scram-sha-256", "-E", "UTF8"], "initdb")
    cluster = Cluster(str(data), free_port("127.0.0.1"), str(binaries), run_as)
    options = f"-p {cluster.port} -k {data} -c listen_addresses=127.0.0.1"
    _run([*run_as, f"{binaries}/pg_ctl", "-D", str(data), "start", "-w", "-t", "60", "-l", str(folder / "server.log"), "-o", options], "start")
    (home / STATE_FILE).write_text(json.dumps(asdict(cluster)))
    environment = {**os.environ, "PGPASSWORD": cluster.password()}
    exists = subprocess.run(
        [
            f"{binaries}/psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            USER,
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
    )
    if exists.stdout.strip() != "1":
        _run([f"{binaries}/createdb", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", USER, DATABASE], "createdb", env=environment)
    progress(f"PostgreSQL on 127.0.0.1:{cluster.port} (data {data})")
    return cluster


def stop_cluster(home: Path) -> Cluster | None:
    """Stop the stack's cluster (fast shutdown); the record goes, the data stays. None when none was running."""
    home = home.resolve()
    cluster = read_cluster(home)
    if cluster is None or not cluster.running():
        (home / STATE_FILE).unlink(missing_ok=True)
        return None
    _run([*cluster.run_as, f"{cluster.bin}/pg_ctl", "-D", cluster.data, "stop", "-m", "fast", "-w"], "stop", timeout=60)
    (home / STATE_FILE).unlink(missing_ok=True)  # only now: a failed stop keeps the record of a running cluster
    return cluster


def purge_cluster(home: Path, recorded_folder: Path | None = None) -> list[Path]:
    """Delete the stack's cluster folders (data, password, log) once it is stopped: `<home>/postgres` and its
    `/var/tmp/prefect-crisis-pg/<digest>` twin, whichever exist. Returns what was deleted.

    Raises:
        StackError: the cluster still runs (stop it first), or a folder could not be deleted.
    """
    home = home.resolve()
    recorded = read_cluster(home)
    if recorded is not None and recorded.running():
        raise StackError(f"the stack's PostgreSQL (port {recorded.port}) still runs: `crisis down` stops it before purging")
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    candidates = {home / FOLDER, Path("/var/tmp/prefect-crisis-pg") / digest}
    candidates |= {folder for folder in (recorded_folder, recorded.folder if recorded else None) if folder is not None}
    deleted = []
    for folder in sorted(candidates):
        if folder.is_dir() and ((folder / "data").exists() or (folder / "password").exists()):
            try:
                shutil.rmtree(folder)
            except OSError as error:
                raise StackError(f"cannot delete the PostgreSQL folder {folder}: {error.strerror}") from None
            deleted.append(folder)
    (home / STATE_FILE).unlink(missing_ok=True)
    return deleted
