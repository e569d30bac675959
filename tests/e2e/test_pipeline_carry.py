"""A second run carries every model: zero jobs, zero spend, published at once; a forced run
measures again (real Kafka and Docker, SIMULATED provider)."""

from __future__ import annotations

from contracts.config import BenchmarkConfig
from contracts.events import RoutingTablePublished
from contracts.routing_table import RoutingTable
from contracts.taxonomy import TIERS
from tests.e2e.conftest import Pipeline
from tests.e2e.expected import decider_cases
from tests.e2e.test_pipeline_decider import THREE_MODELS

# One model keeps the two measured runs short; carrying does not depend on the model count.
ONE_MODEL = THREE_MODELS.model_copy(
    update={"deciderModels": THREE_MODELS.deciderModels[1:2]}  # sim/balanced
)


def comparable(table: RoutingTable) -> dict[str, list[tuple[object, ...]]]:
    """A table without what differs between runs (version, publish time)."""
    return {
        t: [
            (c.model, c.reasoningEffort, c.accuracy, c.graded, c.meetsThreshold, c.avgCostUsd)
            for c in table.tiers[t]
        ]
        for t in TIERS
    }


def test_second_run_carries_every_model_and_forced_run_reruns(pipeline: Pipeline) -> None:
    config: BenchmarkConfig = ONE_MODEL
    n_cases = len(decider_cases())
    pipeline.save_config(config)

    first = pipeline.run(pipeline.start_run("decider"))
    assert len(first.graded) >= n_cases
    table1 = first.one(RoutingTablePublished).table

    # -- second run: carried, nothing enqueued, published without executing anything
    second = pipeline.run(pipeline.start_run("decider"))
    assert second.carried == {"sim/balanced"} and second.enqueued == set()
    assert (second.fanned_out.jobs, second.fanned_out.expected_results) == (0, 0)
    assert second.graded == []
    done = second.completed
    assert (done.expected, done.graded, done.ungraded) == (0, 0, 0)
    summaries = second.summaries
    assert summaries and all(
        s.summary.carried and s.summary.source_run_id == first.run_id for s in summaries.values()
    )
    table2 = second.one(RoutingTablePublished).table
    assert table2.version == second.run_id
    assert comparable(table2) == comparable(table1)

    # -- forced run: every model measured again, same deterministic outcome
    forced = pipeline.run(pipeline.start_run("decider", force=True))
    assert forced.started.force
    assert forced.enqueued == {"sim/balanced"} and forced.carried == set()
    assert forced.fanned_out.expected_results == n_cases
    assert {(e.model, e.case_id, e.rep) for e in forced.graded} == {
        (e.model, e.case_id, e.rep) for e in first.graded
    }
    assert not any(s.summary.carried for s in forced.summaries.values())
    table3 = forced.one(RoutingTablePublished).table
    assert table3.version == forced.run_id
    got = {t: [(c.model, c.accuracy, c.graded) for c in table3.tiers[t]] for t in TIERS}
    want = {t: [(c.model, c.accuracy, c.graded) for c in table1.tiers[t]] for t in TIERS}
    assert got == want
