"""A throwaway PostgreSQL server for the tests and benchmarks: Debian's binaries, ``initdb`` + ``pg_ctl`` into a
temporary folder, listening on 127.0.0.1 only, stopped (and its folder removed) at the end.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the ``postgres`` user that
Debian's package creates (``runuser``), in a folder that user owns. Durability is switched off (``fsync``,
``synchronous_commit``): the data is thrown away, and what the tests check is transactions, not disks.
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

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (``initdb``, ``pg_ctl``), or None."""
    for path in BIN_DIRS:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    folder: Path
    port: int
    bin_dir: Path
    user: str | None  # the OS user the server runs as (None: the current one)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", str(self.folder / "data"), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def new_schema_url(self) -> str:
        """A URL whose connections see only a new, empty schema: one test's database, created in milliseconds
        (a new database would copy a template)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"CREATE SCHEMA {name}")
        return f"{self.url()}?options=-csearch_path%3D{name}"

    def new_database_url(self, template: str = "template0") -> str:
        """A URL of a new database (a copy of ``template``: cloning a seeded database is how a page test gets its
        own copy of a module's rows, as ``private_home`` copies a DuckDB file)."""
        import psycopg

        name = f"d_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def clone(self, url: str) -> str:
        """A new database holding a copy of the database at ``url`` (no one may be connected to it)."""
        return self.new_database_url(template=url.rsplit("/", 1)[1])


def copy_to_postgres(source, url: str):
    """Every row of the DuckDB store ``source`` in a new store at ``url`` (same data folder), by ``COPY`` (CSV);
    returns that store. Seeds are written once, for DuckDB; tests and benchmarks copy them."""
    import psycopg

    from visionqc.store import Store, counts

    target = Store(source.home, url=url)  # creates the schema
    with source.connect() as con:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                "AND table_type = 'BASE TABLE' AND table_name NOT IN ('schema_version', ?)",
                [counts.TABLE],
            ).fetchall()
        ]
        with psycopg.connect(url, autocommit=True) as pg, tempfile.TemporaryDirectory() as tmp:
            for table in tables:
                columns = con.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
                    [table],
                ).fetchall()
                # Lists as PostgreSQL array literals; everything else as DuckDB writes it in CSV.
                select = ", ".join(
                    f"'{{' || array_to_string({name}, ',') || '}}'" if kind.endswith("[]") else name
                    for name, kind in columns
                )
                csv = Path(tmp) / f"{table}.csv"
                con.execute(f"COPY (SELECT {select} FROM {table}) TO '{csv}' (FORMAT csv, HEADER false)")
                names = ", ".join(name for name, _ in columns)
                with pg.cursor().copy(f"COPY {table} ({names}) FROM STDIN (FORMAT csv)") as copy, csv.open("rb") as f:
                    while block := f.read(1 << 20):
                        copy.write(block)
            with target.connect() as target_con:  # the Dashboard's roll-up, recomputed by the server from the rows
                counts.rebuild(target_con)
            # What autovacuum does within a minute of a bulk load: statistics, and the visibility map that lets
            # an index answer alone (index-only scans).
            pg.execute("VACUUM (ANALYZE)")
            for sequence, table, column in (
                ("inspection_seq", "inspections", "inspection_id"),
                ("review_seq", "reviews", "review_id"),
                ("failure_seq", "failures", "failure_id"),
                ("duplicate_seq", "duplicates", "duplicate_id"),
            ):
                pg.execute(f"SELECT setval('{sequence}', coalesce((SELECT max({column}) FROM {table}), 0) + 1)")
    return target


def start() -> Server:
    """Start a new server; raises ``RuntimeError`` when PostgreSQL is not installed."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; scripts/test.sh does it)")
    user = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="visionqc-pg-"))
    if user:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    server = Server(folder, _free_port(), bin_dir, user)
    data = folder / "data"
    try:
        server._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        options = (
            f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200 -c shared_buffers=256MB"
        )
        server._run("pg_ctl", "start", "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return server
