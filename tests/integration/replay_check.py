"""A shared check: a bulk replay of the log rebuilds a schema equal to the live one."""

from __future__ import annotations

from infra.settings import Settings
from projections.db import connect
from projections.export import compare_schemas
from projections.replay import drop_schema, replay


async def assert_bulk_replay_equals(settings: Settings, live: str) -> None:
    """Replay the log (bulk path) into a scratch schema and compare it row for row."""
    target = f"{live}_replay"
    try:
        result = await replay(settings, schema=target)
        assert result.mode == "bulk"
        with connect(settings.database_url, live) as conn:
            assert compare_schemas(conn, live, target) == {}
    finally:
        drop_schema(settings.database_url, target)
