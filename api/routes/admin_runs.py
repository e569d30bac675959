"""Benchmark runs: start one (posts StartRun), list them, one with its summaries."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict

from api.deps import AdminAuth, RuntimeDep
from api.routes._admin import NOT_AUTHENTICATED, UNAVAILABLE, CommandPosted, post, read
from contracts.command_decider import run_id_for
from contracts.commands import StartRun
from contracts.config import RunKind
from infra.clock import utc_now
from streams.event_log import new_command_id

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminAuth])


class StartRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: RunKind
    force: bool = False
    """Re-run every model instead of carrying earlier summaries forward."""


class RunRow(BaseModel):
    run_id: str
    kind: RunKind
    force: bool
    started_at: str
    status: str
    """running, completed, or failed (it measured nothing, or too little: see
    `failure_reason`)."""
    models_enqueued: int | None = None
    models_carried: int | None = None
    jobs: int | None = None
    expected_results: int | None = None
    results_projected: int | None = None
    graded: int | None = None
    ungraded: int | None = None
    completed_at: str | None = None
    spend_usd: float | None = None
    outcome: str | None = None
    """published, publish_skipped, winner, or null while running."""
    table_version: str | None = None
    skip_reason: str | None = None
    classifier_winner: str | None = None
    failure_reason: str | None = None
    """Why a failed run failed (how much was lost to dead-lettered jobs, the last error)."""


class RunModelRow(BaseModel):
    model: str
    disposition: str
    reasoning_effort: str | None
    source_run_id: str | None


class SummaryRow(BaseModel):
    model: str
    tier: str
    accuracy: float
    accuracy_lower_bound: float
    graded: int
    avg_cost_usd: float | None
    p95_latency_ms: float | None
    timeouts: int
    carried: bool
    source_run_id: str | None
    harness: str | None = None
    """Decider summaries: the agent harness that measured them."""


class RunDetail(RunRow):
    min_accuracy: float
    switch_cost_factor: float
    acceptance: str
    decider_harness: str = "builtin"
    """The run snapshot's agent harness (decider runs)."""
    models: list[RunModelRow]
    summaries: list[SummaryRow]


@router.post(
    "/runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CommandPosted,
    responses={**NOT_AUTHENTICATED, **UNAVAILABLE},
    summary="Start a benchmark run (posts StartRun)",
)
async def start_run(body: StartRunRequest, runtime: RuntimeDep) -> CommandPosted:
    command = StartRun(
        command_id=new_command_id(), issued_at=utc_now(), kind=body.kind, force=body.force
    )
    return await post(runtime, command, run_id=run_id_for(command.command_id))


@router.get(
    "/runs",
    response_model=list[RunRow],
    responses={**NOT_AUTHENTICATED, **UNAVAILABLE},
    summary="Run history, newest first",
)
async def list_runs(
    runtime: RuntimeDep, limit: int = Query(50, ge=1, le=500)
) -> list[dict[str, Any]]:
    return await read(runtime.read_model.runs(limit))


@router.get(
    "/runs/{run_id}",
    response_model=RunDetail,
    responses={404: {"description": "Unknown run id."}, **NOT_AUTHENTICATED, **UNAVAILABLE},
    summary="One run with its models and per-tier summaries",
)
async def get_run(run_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    run = await read(runtime.read_model.run(run_id))
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown run {run_id!r}")
    return run
