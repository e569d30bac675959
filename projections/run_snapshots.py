"""Reads of what a run measured, for rebuilding its routing table under other settings
(what-if analysis): its config snapshot and its per-(model, tier) summaries."""

from __future__ import annotations

from contracts.config import Acceptance, BenchmarkConfig
from contracts.envelope import iso_utc
from contracts.results import ModelSummary
from contracts.routing_builder import PublishSkipped, build_routing_table
from contracts.routing_table import RoutingTable
from projections.read_model import PostgresReadModel, config_of


class RunSnapshots(PostgresReadModel):
    """The read model plus run snapshots (a separate room: only analysts need these)."""

    async def run_config(self, run_id: str) -> BenchmarkConfig | None:
        """The config snapshot a run started with."""
        head = await self._one("select * from runs where run_id = %s", (run_id,))
        if head is None:
            return None
        classifiers = await self._all(
            "select model from run_config_classifier_models where run_id = %s order by position",
            (run_id,),
        )
        deciders = await self._all(
            "select model, reasoning_effort from run_config_decider_models"
            " where run_id = %s order by position",
            (run_id,),
        )
        return config_of(head, classifiers, deciders)

    async def run_summaries(self, run_id: str) -> list[ModelSummary]:
        rows = await self._all(
            "select model, tier, accuracy, accuracy_lower_bound, graded, avg_cost_usd,"
            " p95_latency_ms, timeouts, carried, source_run_id from model_summaries"
            " where run_id = %s order by model, tier",
            (run_id,),
        )
        return [ModelSummary(**r) for r in rows]

    async def rebuild_table(
        self,
        run_id: str,
        *,
        min_accuracy: float | None = None,
        acceptance: Acceptance | None = None,
        switch_cost_factor: float | None = None,
    ) -> RoutingTable | PublishSkipped | None:
        """The table decider run `run_id`'s summaries give under other settings; None when
        the run is unknown, not a decider run, or has no summaries."""
        head = await self._one("select kind, started_at from runs where run_id = %s", (run_id,))
        config = await self.run_config(run_id)
        if head is None or head["kind"] != "decider" or config is None:
            return None
        summaries = await self.run_summaries(run_id)
        if not summaries:
            return None
        changes: dict[str, object] = {}
        if min_accuracy is not None:
            changes["minAccuracy"] = min_accuracy
        if acceptance is not None:
            changes["acceptance"] = acceptance
        if switch_cost_factor is not None:
            changes["switchCostFactor"] = switch_cost_factor
        config = BenchmarkConfig.model_validate({**config.model_dump(), **changes})
        return build_routing_table(
            summaries,
            config=config,
            run_id=run_id,
            published_at=iso_utc(head["started_at"]),
        )
