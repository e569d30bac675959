"""The one read model over the projections: what /decide's live state, the admin API, the
admin page and the CLI read, with one row type per thing.

`ReadModel` is the contract; `PostgresReadModel` reads the tables that `projections/`
folds from the event log. A routing table is `contracts.RoutingTable` everywhere (its
`version` is the publishing run's id); runs are `run_history` rows as JSON-ready dicts
(what the admin API returns). Tables and columns relied on:

- routing_tables(version, run_id, published_at, min_accuracy, switch_cost_factor, acceptance)
- routing_table_candidates(version, tier, rank, model, reasoning_effort, accuracy,
  accuracy_lower_bound, avg_cost_usd, p95_latency_ms, graded, meets_threshold, harness)
- classifier_winners(run_id, model, accuracy, avg_cost_usd, p95_latency_ms, reason,
  published_at)
- classifier_overrides(event_id, set_at, model)
- benchmark_configs(+ config_classifier_models, config_decider_models)
- runs, run_models, run_fanouts, run_completions, model_summaries, case_results and the
  run_history view
- command_outcomes(event_id, command_id, command_type, outcome, reason, occurred_at)

Connections set `search_path` to the schema and use no server-side prepared statements, so
names re-resolve after a replay swaps a fresh schema in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from contracts.config import BenchmarkConfig, DeciderModel
from contracts.envelope import iso_utc
from contracts.events.runs import MeasurementConditions
from contracts.routing_table import ClassifierWinner, RoutingCandidate, RoutingTable
from contracts.taxonomy import TIERS
from projections.db import check_schema


@dataclass(frozen=True)
class SavedConfig:
    config_id: str
    saved_at: str
    config: BenchmarkConfig


@dataclass(frozen=True)
class CommandOutcomeRow:
    command_id: str
    command_type: str | None
    outcome: str
    """accepted or rejected."""
    reason: str | None
    occurred_at: str


@dataclass(frozen=True)
class Provenance:
    """Where one cell (version, tier, model) of a routing table comes from."""

    version: str
    tier: str
    model: str
    summary_run_id: str
    """The run whose model_summaries row the cell was built from (the publishing run)."""
    measured_in_run: str
    """The run whose case results produced the numbers (differs when carried)."""
    carried: bool
    accuracy: float | None
    graded: int | None
    case_results: int
    """Case results of (measured_in_run, model, tier) in the projection."""
    passed: int
    cost_usd: float | None


class ReadModel(Protocol):
    """Reads of the projections; every method may raise on a database failure."""

    async def latest_routing_table(self) -> RoutingTable | None: ...
    async def routing_table_as_of(self, as_of: datetime | None) -> RoutingTable | None: ...
    async def routing_table(self, version: str) -> RoutingTable | None: ...
    async def resolve_table(self, ref: str) -> RoutingTable | None: ...
    async def provenance(self, version: str, tier: str, model: str) -> Provenance: ...
    async def latest_classifier_winner(self) -> ClassifierWinner | None: ...
    async def classifier_winner_of(self, run_id: str) -> ClassifierWinner | None: ...
    async def classifier_override(self) -> str | None: ...
    async def run_conditions(self, run_id: str) -> MeasurementConditions | None: ...
    async def live_config(self) -> SavedConfig | None: ...
    async def runs(self, limit: int) -> list[dict[str, Any]]: ...
    async def run(self, run_id: str) -> dict[str, Any] | None: ...
    async def command_outcome(self, command_id: str) -> CommandOutcomeRow | None: ...
    async def close(self) -> None: ...


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value if value.tzinfo else value.replace(tzinfo=UTC))
    return value


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _iso(v) for k, v in row.items()}


def table_of(head: dict[str, Any], candidates: Sequence[dict[str, Any]]) -> RoutingTable:
    """A contracts RoutingTable from a routing_tables row and its candidate rows."""
    tiers: dict[str, list[RoutingCandidate]] = {t: [] for t in TIERS}
    for c in sorted(candidates, key=lambda r: (r["tier"], r["rank"])):
        tiers.setdefault(c["tier"], []).append(
            RoutingCandidate(
                model=c["model"],
                reasoningEffort=c["reasoning_effort"],
                accuracy=c["accuracy"],
                accuracyLowerBound=c["accuracy_lower_bound"],
                avgCostUsd=c["avg_cost_usd"],
                p95LatencyMs=c["p95_latency_ms"],
                graded=c["graded"],
                meetsThreshold=c["meets_threshold"],
                harness=c.get("harness") or "builtin",
            )
        )
    return RoutingTable(
        version=head["version"],
        published_at=_iso(head["published_at"]),
        minAccuracy=head["min_accuracy"],
        switchCostFactor=head["switch_cost_factor"],
        acceptance=head["acceptance"],
        tiers={t: tuple(cs) for t, cs in tiers.items()},  # type: ignore[misc]
    )


def config_of(
    head: dict[str, Any], classifiers: Sequence[dict[str, Any]], deciders: Sequence[dict[str, Any]]
) -> BenchmarkConfig:
    """A config from a benchmark_configs (or runs snapshot) row and its model rows."""
    return BenchmarkConfig(
        classifierModels=tuple(r["model"] for r in classifiers),
        deciderModels=tuple(
            DeciderModel(model=r["model"], reasoningEffort=r["reasoning_effort"]) for r in deciders
        ),
        minAccuracy=head["min_accuracy"],
        switchCostFactor=head["switch_cost_factor"],
        maxConcurrency=head["max_concurrency"],
        classifierRepetitions=head["classifier_repetitions"],
        deciderRepetitions=head["decider_repetitions"],
        classifierMaxP95LatencyMs=head["classifier_max_p95_latency_ms"],
        acceptance=head["acceptance"],
        benchmarkIdentity=head["benchmark_identity"],
        deciderHarness=head.get("decider_harness") or "builtin",
    )


def _winner(row: dict[str, Any] | None) -> ClassifierWinner | None:
    if row is None:
        return None
    return ClassifierWinner(
        run_id=row["run_id"],
        model=row["model"],
        accuracy=row["accuracy"],
        avgCostUsd=row["avg_cost_usd"],
        p95LatencyMs=row["p95_latency_ms"],
        reason=row["reason"],
    )


class PostgresReadModel:
    """`ReadModel` over an async psycopg pool bound to one projection schema."""

    def __init__(
        self, url: str, schema: str, *, max_size: int = 4, app: str = "provenroute-decide"
    ) -> None:
        self.schema = check_schema(schema)
        self.pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=5.0,
            kwargs={
                "options": f"-c search_path={self.schema}",
                "autocommit": True,
                "prepare_threshold": None,
                "connect_timeout": 5,
                "application_name": app,
            },
        )
        self._opened = False

    async def open(self) -> None:
        if not self._opened:
            await self.pool.open(wait=False)
            self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self.pool.close()
            self._opened = False

    async def _all(
        self, query: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> list[dict[str, Any]]:
        await self.open()
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            try:
                await cur.execute(query, params)
            except pg_errors.UndefinedTable:
                # The projector has not migrated this schema yet: nothing is published.
                return []
            return await cur.fetchall()

    async def _one(
        self, query: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> dict[str, Any] | None:
        rows = await self._all(query, params)
        return rows[0] if rows else None

    # ---- live state ------------------------------------------------------------------

    async def routing_table(self, version: str) -> RoutingTable | None:
        head = await self._one(
            "select version, run_id, published_at, min_accuracy, switch_cost_factor, acceptance"
            " from routing_tables where version = %s",
            (version,),
        )
        if head is None:
            return None
        candidates = await self._all(
            "select tier, rank, model, reasoning_effort, accuracy, accuracy_lower_bound,"
            " avg_cost_usd, p95_latency_ms, graded, meets_threshold, harness"
            " from routing_table_candidates where version = %s order by tier, rank",
            (version,),
        )
        return table_of(head, candidates)

    async def latest_routing_table(self) -> RoutingTable | None:
        return await self.routing_table_as_of(None)

    async def routing_table_as_of(self, as_of: datetime | None) -> RoutingTable | None:
        row = await self._one(
            "select version from routing_tables_in_log_order"
            " where %(t)s::timestamptz is null or log_time <= %(t)s::timestamptz"
            " order by log_rank desc limit 1",
            {"t": as_of},
        )
        return None if row is None else await self.routing_table(row["version"])

    async def resolve_table(self, ref: str) -> RoutingTable | None:
        """A table by version (run id), or the one live at `ref` when it parses as a
        timestamp (UTC when it names no zone)."""
        found = await self.routing_table(ref)
        if found is not None:
            return found
        try:
            moment = datetime.fromisoformat(ref)
        except ValueError:
            return None
        return await self.routing_table_as_of(
            moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        )

    async def provenance(self, version: str, tier: str, model: str) -> Provenance:
        """The summary and case results behind one cell; LookupError for an unknown table."""
        row = await self._one(
            "select t.run_id, s.carried, coalesce(s.source_run_id, s.run_id) as measured,"
            " s.accuracy, s.graded"
            " from routing_tables t"
            " left join model_summaries s"
            "   on s.run_id = t.run_id and s.model = %(m)s and s.tier = %(tier)s"
            " where t.version = %(v)s",
            {"v": version, "m": model, "tier": tier},
        )
        if row is None:
            raise LookupError(f"no routing table {version!r}")
        measured = row["measured"] or row["run_id"]
        counts = await self._one(
            "select count(*) as n, count(*) filter (where score >= 1.0) as passed,"
            " sum(cost_usd) as cost from case_results"
            " where run_id = %s and model = %s and tier = %s",
            (measured, model, tier),
        )
        assert counts is not None
        return Provenance(
            version=version,
            tier=tier,
            model=model,
            summary_run_id=row["run_id"],
            measured_in_run=measured,
            carried=bool(row["carried"]),
            accuracy=row["accuracy"],
            graded=row["graded"],
            case_results=counts["n"],
            passed=counts["passed"],
            cost_usd=counts["cost"],
        )

    async def run_conditions(self, run_id: str) -> MeasurementConditions | None:
        """What run `run_id` measured under; None for runs from before it was recorded."""
        row = await self._one(
            "select provider_base_url, sim_latency_scale, classifier_deadline_ms from runs"
            " where run_id = %s",
            (run_id,),
        )
        if row is None or row["provider_base_url"] is None:
            return None
        return MeasurementConditions(
            provider_base_url=row["provider_base_url"],
            simulated_latency_scale=row["sim_latency_scale"],
            classifier_deadline_ms=row["classifier_deadline_ms"],
        )

    async def latest_classifier_winner(self) -> ClassifierWinner | None:
        return _winner(
            await self._one(
                "select run_id, model, accuracy, avg_cost_usd, p95_latency_ms, reason"
                " from classifier_winners_in_log_order order by log_rank desc limit 1"
            )
        )

    async def classifier_winner_of(self, run_id: str) -> ClassifierWinner | None:
        """The winner a classifier run published, if it did."""
        return _winner(
            await self._one(
                "select run_id, model, accuracy, avg_cost_usd, p95_latency_ms, reason"
                " from classifier_winners where run_id = %s",
                (run_id,),
            )
        )

    async def classifier_override(self) -> str | None:
        row = await self._one(
            "select model from classifier_overrides_in_log_order order by log_rank desc limit 1"
        )
        return None if row is None else row["model"]

    # ---- admin -----------------------------------------------------------------------

    async def live_config(self) -> SavedConfig | None:
        head = await self._one(
            "select * from benchmark_configs_in_log_order order by log_rank desc limit 1"
        )
        if head is None:
            return None
        cid = head["config_id"]
        classifiers = await self._all(
            "select model from config_classifier_models where config_id = %s order by position",
            (cid,),
        )
        deciders = await self._all(
            "select model, reasoning_effort from config_decider_models"
            " where config_id = %s order by position",
            (cid,),
        )
        return SavedConfig(cid, _iso(head["saved_at"]), config_of(head, classifiers, deciders))

    async def runs(self, limit: int) -> list[dict[str, Any]]:
        rows = await self._all(
            "select run_id, kind, force, started_at, status, models_enqueued, models_carried,"
            " jobs, expected_results, results_projected, graded, ungraded, completed_at,"
            " spend_usd, outcome, table_version, skip_reason, classifier_winner, failure_reason"
            " from run_history order by started_at desc, run_id limit %s",
            (limit,),
        )
        return [_jsonable(r) for r in rows]

    async def run(self, run_id: str) -> dict[str, Any] | None:
        rows = await self._all(
            "select run_id, kind, force, started_at, status, models_enqueued, models_carried,"
            " jobs, expected_results, results_projected, graded, ungraded, completed_at,"
            " spend_usd, outcome, table_version, skip_reason, classifier_winner,"
            " failure_reason, min_accuracy, switch_cost_factor, acceptance"
            " from run_history where run_id = %s",
            (run_id,),
        )
        if not rows:
            return None
        run = _jsonable(rows[0])
        harness = await self._one("select decider_harness from runs where run_id = %s", (run_id,))
        run["decider_harness"] = harness["decider_harness"] if harness else "builtin"
        run["models"] = [
            _jsonable(r)
            for r in await self._all(
                "select model, disposition, reasoning_effort, source_run_id from run_models"
                " where run_id = %s order by model",
                (run_id,),
            )
        ]
        run["summaries"] = [
            _jsonable(r)
            for r in await self._all(
                "select model, tier, accuracy, accuracy_lower_bound, graded, avg_cost_usd,"
                " p95_latency_ms, timeouts, carried, source_run_id, harness from model_summaries"
                " where run_id = %s"
                " order by model, case tier when 'low' then 0 when 'medium' then 1 else 2 end",
                (run_id,),
            )
        ]
        return run

    async def command_outcome(self, command_id: str) -> CommandOutcomeRow | None:
        # A rejection is final; otherwise the acceptance. (A command has at most one of each.)
        row = await self._one(
            "select command_id, command_type, outcome, reason, occurred_at from command_outcomes"
            " where command_id = %s"
            " order by case outcome when 'rejected' then 0 else 1 end, occurred_at limit 1",
            (command_id,),
        )
        if row is None:
            return None
        return CommandOutcomeRow(
            command_id=row["command_id"],
            command_type=row["command_type"],
            outcome=row["outcome"],
            reason=row["reason"],
            occurred_at=_iso(row["occurred_at"]),
        )


@asynccontextmanager
async def open_read_model(
    url: str, schema: str, *, app: str = "provenroute"
) -> AsyncIterator[PostgresReadModel]:
    """A short-lived read model (one connection), for the CLI and one-shot readers."""
    model = PostgresReadModel(url, schema, max_size=1, app=app)
    try:
        yield model
    finally:
        await model.close()
