"""A decider run through the Kilo CLI end to end: real worker process, Kafka, network-less
containers with the CLI inside, the SIMULATED provider behind the job's model proxy. A
subset of cases (one agentic case per tier) keeps it to a few minutes."""

from __future__ import annotations

import json

from contracts.events import RoutingTablePublished, RoutingTablePublishSkipped
from contracts.taxonomy import TIERS
from simulator import behaviour
from simulator.catalog import decider_case_hash, load_cases
from tests.e2e.conftest import Pipeline
from tests.e2e.test_pipeline_decider import THREE_MODELS

# The three-model fleet of the builtin decider test, measured through the Kilo CLI.
KILO_RUN = THREE_MODELS.model_copy(update={"deciderHarness": "kilo", "maxConcurrency": 3})


def subset() -> list[str]:
    _, decider = load_cases()
    agentic = sorted((c for c in decider if behaviour.is_agentic(c)), key=decider_case_hash)
    return [next(c.id for c in agentic if c.tier == t) for t in TIERS]


def test_a_kilo_decider_run_publishes_a_table_whose_cells_name_the_harness(
    idle_pipeline: Pipeline,
) -> None:
    pipeline = idle_pipeline
    pipeline.worker_env_extra["PROVENROUTE_WORKER_DECIDER_CASES"] = ",".join(subset())
    pipeline.start_worker()
    pipeline.save_config(KILO_RUN)
    run = pipeline.run(pipeline.start_run("decider"), timeout_s=1800)

    assert run.started.config.deciderHarness == "kilo"
    done = run.completed
    assert (done.expected, done.graded, done.ungraded) == (9, 9, 0), pipeline.diagnostics()
    graded = {(e.model, e.case_id): e for e in run.graded}
    for e in graded.values():
        d = e.diagnostics
        print(e.model, e.case_id, e.score, e.cost_usd, e.timed_out, d.get("stop_reason"))
    assert {e.diagnostics.get("harness") for e in graded.values()} == {"kilo"}
    # Every case that was not a (simulated) timeout was answered through the proxy and paid.
    answered = [e for e in graded.values() if not e.timed_out]
    assert answered, "every case timed out"
    assert all(e.cost_usd and e.cost_usd > 0 for e in answered)
    assert all(int(e.diagnostics.get("steps", "0")) >= 1 for e in answered)
    assert {s.summary.harness for s in run.summaries.values()} == {"kilo"}
    assert not run.of(RoutingTablePublishSkipped)
    table = run.one(RoutingTablePublished).table
    cells = [c for t in TIERS for c in table.tiers[t]]
    assert cells and {c.harness for c in cells} == {"kilo"}
    print(
        json.dumps(
            {t: [(c.model, c.accuracy, c.avgCostUsd) for c in table.tiers[t]] for t in TIERS}
        )
    )
