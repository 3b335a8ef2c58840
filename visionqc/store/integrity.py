"""Checking the database file before anything writes to it.

DuckDB keeps a checksum in every block and verifies it whenever it reads the block, so the check reads
every block that holds data: the headers and the catalogue (opening), and each column of each table (one
aggregate per column that cannot be answered from statistics alone). It runs on a read-only connection,
so a damaged file is never written, not even by replaying its write-ahead log. A damaged block of a
primary-key index is read only when a write looks a key up; that write then fails with the same message
and commits nothing.

Measured on a 20,000-inspection file (136 MB, embeddings included): about 0.1 s.
"""

from __future__ import annotations

import duckdb


def _column_check(name: str, data_type: str) -> list[str]:
    quoted = '"' + name.replace('"', '""') + '"'
    if data_type.endswith("]"):
        # Lists (the embeddings): their lengths and their last elements read every block of the child
        # column at a fraction of the cost of hashing 1,280 floats per row.
        return [f"max(len({quoted}))", f"max({quoted}[-1])"]
    return [f"bit_xor(hash({quoted}))"]


def read_every_table(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Read every column of every table of the main schema; returns the row count of each table.

    Raises the driver's error when a block is damaged or missing."""
    columns: dict[str, list[str]] = {}
    for table, column, data_type in con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() "
        "WHERE schema_name = 'main' AND database_name = current_database() ORDER BY table_name, column_index"
    ).fetchall():
        columns.setdefault(table, []).extend(_column_check(column, data_type))
    counts = {}
    for table, checks in columns.items():
        quoted = '"' + table.replace('"', '""') + '"'
        counts[table] = int(con.execute(f"SELECT count(*), {', '.join(checks)} FROM {quoted}").fetchone()[0])
    return counts
