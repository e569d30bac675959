"""Numbered plain-SQL migrations (`migrations/NNNN_name.sql`), applied in order, once.

Applied versions are recorded in `<schema>.schema_migrations` with a checksum; an applied
file that changed afterwards is refused (write a new migration instead). The whole run
holds a per-schema advisory lock and is one transaction, so concurrent starters are safe
and a failing migration leaves nothing half-applied.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg
from psycopg import sql

from projections.db import check_schema

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")
_FILE: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.iterdir()):
        m = _FILE.match(path.name)
        if m is None:
            continue
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {directory}")
    return found


def _statements(schema: str) -> tuple[sql.Composed, sql.Composed, sql.Composed]:
    ident = sql.Identifier(schema)
    return (
        sql.SQL("create schema if not exists {}").format(ident),
        sql.SQL("set local search_path to {}").format(ident),
        sql.SQL(
            "create table if not exists {}.schema_migrations ("
            " version int primary key, name text not null, checksum text not null,"
            " applied_at timestamptz not null default now())"
        ).format(ident),
    )


def _plan(applied: dict[int, str], migrations: list[Migration]) -> list[Migration]:
    todo = []
    for m in migrations:
        if m.version in applied:
            if applied[m.version] != m.checksum:
                raise MigrationError(
                    f"migration {m.version:04d}_{m.name} changed after it was applied"
                )
        else:
            todo.append(m)
    return todo


def migrate(url: str, schema: str) -> list[str]:
    """Apply pending migrations to `schema` (created if missing); returns the names applied."""
    check_schema(schema)
    migrations = load_migrations()
    with psycopg.connect(url, autocommit=False) as conn:
        create, set_path, create_table = _statements(schema)
        conn.execute(
            "select pg_advisory_xact_lock(hashtext(%s))", (f"provenroute.migrate.{schema}",)
        )
        conn.execute(create)
        conn.execute(set_path)
        conn.execute(create_table)
        rows = conn.execute("select version, checksum from schema_migrations").fetchall()
        todo = _plan(dict(rows), migrations)
        for m in todo:
            conn.execute(m.sql)  # type: ignore[arg-type]  # trusted file, no parameters
            conn.execute(
                "insert into schema_migrations (version, name, checksum) values (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
        conn.commit()
    return [f"{m.version:04d}_{m.name}" for m in todo]


async def amigrate(url: str, schema: str) -> list[str]:
    """`migrate` for async callers (runs the sync migrator in a thread)."""
    import asyncio

    return await asyncio.to_thread(migrate, url, schema)
