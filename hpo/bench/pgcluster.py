"""A throwaway PostgreSQL cluster on loopback, for the load test and the test suite.

Debian's server binaries (apt-get install postgresql), a fresh data folder under /tmp, trust authentication on
127.0.0.1 only, durability off (fsync, synchronous_commit): nothing in it outlives the run. As root the server
runs as the `postgres` user (initdb and postgres refuse root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg2

from hpo.errors import HpoError


class NoCluster(HpoError):
    """No PostgreSQL server could be started here (why: the message)."""


def bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class Cluster:
    """`with Cluster(max_connections=...) as c:` starts the server; c.database(NAME) makes a database and
    returns its URL; leaving the block stops the server and removes its folder."""

    def __init__(self, max_connections: int = 100):
        self.max_connections = max_connections
        self.bindir = bindir()
        self.port = free_port()
        self.tmp: Path | None = None
        self.run_as: list[str] = []

    def _pg(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*self.run_as, *args], capture_output=True, text=True, timeout=timeout, check=True)

    def __enter__(self) -> Cluster:
        if self.bindir is None:
            raise NoCluster("no PostgreSQL server binaries (pg_ctl) here: apt-get install postgresql")
        self.tmp = Path(tempfile.mkdtemp(prefix="hpo-pg-"))  # not under a private tmp: postgres must reach it
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                self.stop()
                raise NoCluster("running as root and there is no `postgres` user to run the server as") from None
            os.chown(self.tmp, user.pw_uid, user.pw_gid)
            self.run_as = ["runuser", "-u", "postgres", "--"]
        data, log = self.tmp / "data", self.tmp / "server.log"
        try:
            self._pg(str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                     "--no-locale", "--no-sync")
            self._pg(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                     f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off "
                     f"-c synchronous_commit=off -c max_connections={self.max_connections}", "start", timeout=90)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            detail = _last_line(getattr(e, "stderr", None) or (log.read_text() if log.is_file() else "") or str(e))
            self.stop()
            raise NoCluster(f"cannot start a PostgreSQL server: {detail}") from None
        return self

    def connect(self, dbname: str = "postgres"):
        return psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname)

    def database(self, name: str) -> str:
        conn = self.connect()
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            conn.cursor().execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.tmp is None:
            return
        if (self.tmp / "data" / "postmaster.pid").exists():
            subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.tmp / "data"), "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def __exit__(self, *exc) -> None:
        self.stop()
