"""A worker SIGKILLed mid-run and restarted completes the run with exactly one result per
(run, model, case, rep) in the summaries and the routing table an uninterrupted run
publishes (real Kafka and Docker, SIMULATED provider)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from contracts.envelope import EventBase
from contracts.events import CaseGraded, RunCompleted
from tests.e2e.conftest import Pipeline
from tests.e2e.expected import decider_cases
from tests.e2e.test_pipeline_decider import THREE_MODELS, assert_profile_table


def test_sigkilled_worker_restarts_and_completes_the_run_exactly_once(
    idle_pipeline: Pipeline,
) -> None:
    p = idle_pipeline
    config = THREE_MODELS
    expected = len(config.deciderModels) * len(decider_cases()) * config.deciderRepetitions
    first = p.start_worker()
    p.save_config(config)
    run_id = p.start_run("decider")

    def results(evs: Sequence[EventBase]) -> set[tuple[str, str, int]]:
        return {
            (e.model, e.case_id, e.rep)
            for e in evs
            if isinstance(e, CaseGraded) and e.run_id == run_id
        }

    # Mid-run: a fair share of results in, far from all of them.
    p.wait(lambda evs: len(results(evs)) >= expected // 4)
    first.kill9()
    before = p.events()
    in_before = len(results(before))
    assert in_before < expected, "the run finished before the kill: nothing was tested"
    assert not any(isinstance(e, RunCompleted) and e.run_id == run_id for e in before)

    p.start_worker()
    run = p.run(run_id)

    # Exactly one result per (model, case, rep) counted; re-deliveries may repeat an event
    # on the log, but always under the same derived id.
    per_key = Counter((e.model, e.case_id, e.rep) for e in run.graded)
    ids_per_key: dict[tuple[str, str, int], set[str]] = {}
    for e in run.graded:
        ids_per_key.setdefault((e.model, e.case_id, e.rep), set()).add(e.event_id)
    assert len(per_key) == expected
    assert all(len(ids) == 1 for ids in ids_per_key.values())
    assert_profile_table(run, config)  # completed, counts, the profiles' table
    print(
        f"\nkilled after {in_before}/{expected} results; "
        f"{sum(per_key.values()) - expected} duplicate deliveries on the log"
    )
