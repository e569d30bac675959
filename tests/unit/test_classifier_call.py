"""The one classifier call production /decide and the classifier benchmark share: the empty-
answer retry and the deadline, seen from the benchmark's side (the decide side is in
test_decide_service)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contracts.events import CaseGraded
from contracts.jobs import CaseJob
from datasets.loader import load_classifier_cases
from infra.classifier_call import EMPTY_ANSWER_RETRIES, call_classifier
from infra.provider.errors import ProviderUnavailable
from infra.settings import Settings
from streams.execution import CaseExecutor
from tests.doubles import Reply, ScriptedProvider

CASE = load_classifier_cases()[0]
LABEL = CASE.label.model_dump_json(exclude={"fallback", "fallback_reason"})


def executor(provider: Any, settings: Settings) -> CaseExecutor:
    ex = CaseExecutor(settings, classifier_cases={CASE.id: CASE}, decider_cases={})
    ex._providers[None] = provider  # the job's (credential-less) provider
    return ex


async def run_case(ex: CaseExecutor) -> CaseGraded:
    job = CaseJob(
        job_id="r:m:0:0",
        run_id="r",
        kind="classifier",
        model="sim/m",
        reasoning_effort=None,
        chunk=0,
        rep=0,
        case_ids=(CASE.id,),
    )
    out: list[CaseGraded] = []

    async def emit(e: Any) -> None:
        out.append(e)

    # Generous guard: a benchmark that waits far past the decide deadline fails here.
    await asyncio.wait_for(ex.execute(job, emit, frozenset()), 30)
    [graded] = out
    return graded


async def test_an_empty_answer_is_asked_again_once_then_graded() -> None:
    provider = ScriptedProvider([Reply(""), Reply(LABEL, cost_usd=0.002)])
    graded = await run_case(executor(provider, Settings()))
    assert len(provider.requests) == 1 + EMPTY_ANSWER_RETRIES
    assert graded.score == 1.0 and graded.cost_usd == pytest.approx(0.003)
    assert graded.diagnostics["attempts"] == "2"


async def test_the_benchmark_waits_as_long_as_decide_would_and_no_longer() -> None:
    settings = Settings(decide_budget_ms=600, decide_margin_ms=200)
    provider = ScriptedProvider([Reply(LABEL)], delay_s=3600)
    graded = await run_case(executor(provider, settings))
    assert graded.timed_out and graded.score == 0.0
    assert graded.latency_ms >= settings.classifier_deadline_ms - 10  # timer granularity
    assert provider.requests[0]["timeout_s"] <= settings.classifier_deadline_ms / 1000


async def test_a_provider_error_is_returned_not_raised_with_the_cost_so_far() -> None:
    provider = ScriptedProvider([Reply("", cost_usd=0.004), ProviderUnavailable("down")])
    call = await call_classifier(provider, "sim/m", CASE.messages, timeout_s=5)
    assert isinstance(call.error, ProviderUnavailable) and call.classification is None
    assert (call.attempts, call.cost_usd, call.timed_out) == (2, 0.004, False)
