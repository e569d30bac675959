"""A shared check: a bulk replay of the log rebuilds a schema equal to the live one."""

from __future__ import annotations

from infra.settings import Settings
from projections.db import connect
from projections.export import compare_schemas
from projections.replay import drop_schema, replay


async def assert_bulk_replay_equals(settings: Settings, live: str) -> None:
    """Replay the log (bulk path, in one process and split over two) into a scratch schema
    and compare it row for row."""
    target = f"{live}_replay"
    for workers, mode in ((1, "bulk"), (2, "bulk, 2 loader processes")):
        try:
            result = await replay(settings, schema=target, workers=workers)
            assert result.mode == mode
            with connect(settings.database_url, live) as conn:
                assert compare_schemas(conn, live, target) == {}
        finally:
            drop_schema(settings.database_url, target)
