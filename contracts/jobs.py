"""Case jobs: one message per (run, model, chunk of cases, repetition), planned purely."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from contracts.config import HarnessName, RunKind
from contracts.ids import case_job_id
from contracts.taxonomy import ReasoningEffort

CHUNK_SIZE: Final = 5
MAX_JOB_ATTEMPTS: Final = 3
"""The first attempt plus two retries; then the job is dead-lettered."""


class CaseJob(BaseModel):
    """The work of one job container: a chunk of cases for one model and repetition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str
    """`run:model:chunk:rep`; also names the job's container."""
    run_id: str
    kind: RunKind
    model: str
    reasoning_effort: ReasoningEffort | None
    chunk: int = Field(ge=0)
    rep: int = Field(ge=0)
    case_ids: tuple[str, ...] = Field(min_length=1)
    credential: str | None = None
    """Name of the provider credential to use (the run's benchmark identity), never a secret."""
    max_concurrency: int = Field(default=4, ge=1)
    """The run snapshot's maxConcurrency: at most this many of the run's jobs at once."""
    attempt: int = Field(default=1, ge=1)
    """1 for the first delivery; retries re-send the job with attempt + 1."""
    correlation_id: str | None = None
    """The StartRun command's id."""
    harness: HarnessName = "builtin"
    """Who drives the decider cases (the run snapshot's deciderHarness)."""


def chunked(case_ids: Sequence[str], size: int = CHUNK_SIZE) -> list[tuple[str, ...]]:
    ordered = sorted(case_ids)
    return [tuple(ordered[i : i + size]) for i in range(0, len(ordered), size)]


def plan_jobs(
    *,
    run_id: str,
    kind: RunKind,
    models: Sequence[tuple[str, ReasoningEffort | None]],
    case_ids: Sequence[str],
    repetitions: int,
    credential: str | None,
    correlation_id: str | None,
    max_concurrency: int = 4,
    chunk_size: int = CHUNK_SIZE,
    harness: HarnessName = "builtin",
) -> list[CaseJob]:
    """Deterministic fan-out: the same inputs always give the same jobs (ids included), so a
    re-driven run re-creates exactly the jobs it lost."""
    chunks = chunked(case_ids, chunk_size)
    return [
        CaseJob(
            job_id=case_job_id(run_id, model, chunk, rep),
            run_id=run_id,
            kind=kind,
            model=model,
            reasoning_effort=effort,
            chunk=chunk,
            rep=rep,
            case_ids=cases,
            credential=credential,
            correlation_id=correlation_id,
            max_concurrency=max_concurrency,
            harness=harness,
        )
        for rep in range(repetitions)
        for model, effort in models
        for chunk, cases in enumerate(chunks)
    ]
