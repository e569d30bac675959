"""Two workers in one consumer group and two decide replicas, as real processes: both run
kinds complete with exactly one result per (run, model, case, rep), the routing table is the
one the profiles imply (what one worker publishes, test_pipeline_decider), the work spreads
over both workers, and both replicas serve that table (real Kafka, PostgreSQL and Docker,
SIMULATED provider)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx

from contracts.taxonomy import TIERS
from infra.processes import free_port, start_projector
from infra.settings import Settings
from tests.e2e.conftest import Pipeline, run_async
from tests.e2e.test_pipeline_decider import (
    DECIDER_RUN_DEADLINE_S,
    THREE_MODELS,
    assert_profile_table,
)
from tests.integration.replica_support import INTERNAL_SECRET, Replica, replica_env, replicas

JOB_DONE = re.compile(r"job \S+ #\d+ done: \d+ results")


def jobs_done(p: Pipeline) -> list[int]:
    """Jobs each worker finished, from its own log."""
    return [len(JOB_DONE.findall(w.text())) for w in p.workers]


def test_two_workers_and_two_replicas_complete_both_kinds_exactly_once(
    idle_pipeline: Pipeline, pg_schema: str, settings_for: Callable[..., Settings]
) -> None:
    p = idle_pipeline
    p.start_worker()
    p.start_worker()
    p.save_config(THREE_MODELS)

    classifier = p.run(p.start_run("classifier"), timeout_s=DECIDER_RUN_DEADLINE_S)
    done = classifier.completed
    assert done.expected == classifier.fanned_out.expected_results
    assert (done.graded, done.ungraded) == (done.expected, 0)
    keys = {(e.model, e.case_id, e.rep) for e in classifier.graded}
    assert len(keys) == done.expected
    ids = {(e.model, e.case_id, e.rep): e.event_id for e in classifier.graded}
    assert all(ids[(e.model, e.case_id, e.rep)] == e.event_id for e in classifier.graded), (
        "a result key under two event ids"
    )

    decider = p.run(p.start_run("decider"), timeout_s=DECIDER_RUN_DEADLINE_S)
    table = assert_profile_table(decider, THREE_MODELS)
    per_worker = jobs_done(p)
    assert all(n > 0 for n in per_worker), f"the work did not spread: {per_worker}"

    # Two decide replicas behind no affinity serve the table the two workers published.
    settings = settings_for(p.prefix, pg_schema)
    projector = start_projector(
        p.workdir,
        {
            **p.worker_env(),
            "PROVENROUTE_DATABASE_URL": settings.database_url,
            "PROVENROUTE_DB_SCHEMA": pg_schema,
        },
        schema=pg_schema,
        log_dir=p.workdir,
    )
    try:
        env = replica_env(settings, p.sim_url)
        with replicas(["A", "B"], env, p.workdir, [free_port(), free_port()]) as pair:
            answers = run_async(_served_by_both(pair, table.version))
    finally:
        projector.stop()
    for prompt, (a, b) in answers.items():
        assert a["model"] == b["model"], (prompt, a, b)
        assert a["tier"] in TIERS and a["model"] == table.tiers[a["tier"]][0].model, a


async def _served_by_both(
    pair: list[Replica], version: str
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each prompt's answer from A and from B (new conversations), once both serve
    `version`."""
    await asyncio.gather(*(r.wait_ready() for r in pair))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while True:
        versions = [(await r.status())["routing_table"]["version"] for r in pair]
        if versions == [version, version]:
            break
        assert loop.time() < deadline, f"replicas serve {versions}, not {version}"
        await asyncio.sleep(0.5)
    auth = {"Authorization": f"Bearer {INTERNAL_SECRET}"}
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        for i, prompt in enumerate(PROMPTS):
            got = []
            for r in pair:
                body = {
                    "conversationId": f"{r.name}-{i}",
                    "messages": [{"role": "user", "content": prompt}],
                }
                resp = await http.post(f"{r.url}/decide", json=body, headers=auth)
                answer = resp.json()
                assert resp.status_code == 200 and answer["tableVersion"] == version, answer
                got.append(answer)
            out[prompt] = (got[0], got[1])
    return out


PROMPTS = (
    "What does HTTP 404 mean? One line.",
    "Refactor this module to split parsing from IO and add tests.",
    "Design a multi-region failover for our payments database, with a migration plan.",
)
