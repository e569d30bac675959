"""Two workers share a run; one is SIGKILLed mid-run, the other a little later, and a fresh
one takes over: the run completes with exactly one result per (run, model, case, rep) in
the summaries and the routing table an uninterrupted run publishes, and the killed
workers' job containers are cleaned up (real Kafka and Docker, SIMULATED provider)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import docker

from contracts.envelope import EventBase
from contracts.events import CaseGraded, RunCompleted
from streams.janitor import LABEL_MANAGED, LABEL_WORKER
from tests.e2e.conftest import Pipeline
from tests.e2e.expected import decider_cases
from tests.e2e.test_pipeline_decider import THREE_MODELS, assert_profile_table


def test_sigkilled_workers_one_after_the_other_and_the_run_completes_exactly_once(
    idle_pipeline: Pipeline,
) -> None:
    p = idle_pipeline
    config = THREE_MODELS
    expected = len(config.deciderModels) * len(decider_cases()) * config.deciderRepetitions
    first, second = p.start_worker(), p.start_worker()
    p.save_config(config)
    run_id = p.start_run("decider")

    def results(evs: Sequence[EventBase]) -> set[tuple[str, str, int]]:
        return {
            (e.model, e.case_id, e.rep)
            for e in evs
            if isinstance(e, CaseGraded) and e.run_id == run_id
        }

    # Mid-run: a fair share of results in, far from all of them; then the other one.
    p.wait(lambda evs: len(results(evs)) >= expected // 4)
    first.kill9()
    p.wait(lambda evs: len(results(evs)) >= expected // 2)
    second.kill9()
    before = p.events()
    in_before = len(results(before))
    assert in_before < expected, "the run finished before the kills: nothing was tested"
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

    # The killed workers stopped beating: their containers go (the new worker's janitor,
    # or its jobs taking the names back).
    killed = {f":{first.pid}:", f":{second.pid}:"}
    deadline = time.monotonic() + 120
    while left := [n for n, w in job_containers() if any(k in w for k in killed)]:
        assert time.monotonic() < deadline, f"containers of killed workers left: {left}"
        time.sleep(2)
    print(
        f"\nkilled after {in_before}/{expected} results; "
        f"{sum(per_key.values()) - expected} duplicate deliveries on the log"
    )


def job_containers() -> list[tuple[str, str]]:
    """(name, worker label) of every provenroute job container on this engine."""
    client = docker.from_env()
    try:
        return [
            (c["Names"][0], (c.get("Labels") or {}).get(LABEL_WORKER, ""))
            for c in client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"})
        ]
    finally:
        client.close()
