"""A real PostgreSQL server for the tests: Debian's postgresql-15, initdb into a temporary directory, pg_ctl on a
free port on 127.0.0.1. PostgreSQL refuses to run as root, so as root it runs as the `postgres` user."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, List

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(argv: List[str]) -> List[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PostgresServer:
    """One server in its own directory; `url(db)` for a fresh database in it."""

    def __init__(self) -> None:
        # a directory the postgres user can enter: pytest's tmp_path is root's and 0700
        self.root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self.data, self.port = self.root / "data", free_port()
        subprocess.run(_as_server_user([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                                        "postgres", "--no-sync"]), check=True, capture_output=True, timeout=120)
        subprocess.run(_as_server_user([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                                        "-w", "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                                                    f"-c fsync=off", "start"]),
                       check=True, capture_output=True, timeout=120)

    def url(self, database: str = "postgres", password: str = "") -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg
        name = f"h_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def stop(self) -> None:
        subprocess.run(_as_server_user([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def postgres_server() -> Iterator[PostgresServer]:
    """For a module-scoped fixture: a started server, stopped and removed afterwards."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()
