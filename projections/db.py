"""Connections bound to one projection schema (search_path per connection)."""

from __future__ import annotations

import re
from typing import Final

import psycopg

SCHEMA_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_schema(name: str) -> str:
    """`name` if it is a plain identifier (letters, digits, underscore), else ValueError.

    Schema names end up in `search_path` and DDL; a plain identifier needs no quoting games.
    """
    if not SCHEMA_NAME.match(name):
        raise ValueError(f"invalid schema name {name!r}: use letters, digits and underscores")
    return name


def _options(schema: str) -> str:
    # pg_catalog first is implicit; the temp schema is searched first implicitly too.
    return f"-c search_path={check_schema(schema)}"


async def aconnect(
    url: str, schema: str, *, app: str = "provenroute", autocommit: bool = False
) -> psycopg.AsyncConnection:
    """An async connection whose unqualified names resolve in `schema`."""
    return await psycopg.AsyncConnection.connect(
        url,
        options=_options(schema),
        application_name=app,
        autocommit=autocommit,
        connect_timeout=5,
    )


def connect(
    url: str, schema: str, *, app: str = "provenroute", autocommit: bool = True
) -> psycopg.Connection:
    """A sync connection whose unqualified names resolve in `schema` (CLI, queries)."""
    return psycopg.connect(
        url,
        options=_options(schema),
        application_name=app,
        autocommit=autocommit,
        connect_timeout=5,
    )
