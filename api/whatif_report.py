"""A what-if report from live sources: decisions from the decisions topic, tables and run
snapshots from the projection, the replay from `contracts.whatif` (CLI and admin page)."""

from __future__ import annotations

from datetime import datetime

from contracts.config import Acceptance
from contracts.routing_builder import PublishSkipped
from contracts.routing_table import RoutingTable
from contracts.whatif import ServedDecision, WhatIfReport, replay
from infra.settings import Settings
from projections.run_snapshots import RunSnapshots
from streams.decision_log import read_decisions


class WhatIfError(Exception):
    """A what-if request that cannot be answered (unknown table or run, nothing to build)."""


async def candidate_table(
    model: RunSnapshots,
    *,
    table: str | None,
    run: str | None,
    min_accuracy: float | None,
    acceptance: Acceptance | None,
    switch_cost_factor: float | None,
) -> RoutingTable:
    """A past table by version, or one rebuilt from a run's summaries with other settings."""
    if table is not None:
        found = await (
            model.latest_routing_table() if table == "latest" else model.resolve_table(table)
        )
        if found is None:
            raise WhatIfError(f"no routing table {table!r} in the projection")
        return found
    assert run is not None
    if run == "latest":  # the run behind the live table
        live = await model.latest_routing_table()
        if live is None:
            raise WhatIfError("no routing table is published yet")
        run = live.version
    built = await model.rebuild_table(
        run,
        min_accuracy=min_accuracy,
        acceptance=acceptance,
        switch_cost_factor=switch_cost_factor,
    )
    if built is None:
        raise WhatIfError(f"no decider run {run!r} with summaries in the projection")
    if isinstance(built, PublishSkipped):
        raise WhatIfError(f"run {run} gives no table under these settings: {built.reason}")
    return built


async def build_report(
    settings: Settings,
    *,
    since: datetime,
    until: datetime | None,
    table: str | None = None,
    run: str | None = None,
    min_accuracy: float | None = None,
    acceptance: Acceptance | None = None,
    switch_cost_factor: float | None = None,
) -> WhatIfReport:
    rm = RunSnapshots(settings.database_url, settings.db_schema, max_size=1, app="whatif")
    try:
        candidate = await candidate_table(
            rm,
            table=table,
            run=run,
            min_accuracy=min_accuracy,
            acceptance=acceptance,
            switch_cost_factor=switch_cost_factor,
        )
        served: list[ServedDecision] = []
        async for d in read_decisions(settings, since, until):
            served.append(
                ServedDecision(
                    conversation_id=d.conversation_id,
                    tier=d.tier,
                    model=d.model,
                    reasoning_effort=d.reasoning_effort,
                    sticky=d.sticky,
                    classification_fallback=d.classification_fallback,
                    table_version=d.table_version,
                )
            )
        tables: dict[str, RoutingTable] = {}
        for version in sorted({d.table_version for d in served if d.table_version}):
            found = await rm.routing_table(version)
            if found is not None:
                tables[version] = found
    finally:
        await rm.close()
    return replay(served, candidate, tables)
