"""`GET /admin/harness-try`: one decider case through one harness in a fresh container, the
debug view of `provenroute harness try` over HTTP (the reference system's debug endpoint)."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import AdminAuth, SettingsDep
from api.routes._admin import NOT_AUTHENTICATED
from contracts.cases import DeciderCase
from contracts.config import MODEL_ID_PATTERN, HarnessName
from contracts.taxonomy import ReasoningEffort
from datasets.loader import load_decider_cases
from streams.harness import HarnessError
from streams.harness_try import try_case
from streams.sandbox import SandboxError

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminAuth])

_one_at_a_time = asyncio.Lock()
"""A try runs a container and a whole case: one per replica at a time, never a queue."""


@cache
def _cases() -> dict[str, DeciderCase]:
    return {c.id: c for c in load_decider_cases()}


@router.get(
    "/harness-try",
    responses={
        404: {"description": "No decider case with that id."},
        409: {"description": "Another harness try is running on this replica."},
        502: {"description": "The provider refused the harness (e.g. the credential)."},
        422: {"description": "An unknown harness, model id, effort or credential name."},
        503: {"description": "The job sandbox could not run (Docker, the job image)."},
        **NOT_AUTHENTICATED,
    },
    summary="Run one decider case through a harness and return what it saw, and the grade",
)
async def harness_try(
    settings: SettingsDep,
    harness: Annotated[HarnessName, Query(description="builtin, kilo or mini-swe-agent")],
    model: Annotated[str, Query(pattern=MODEL_ID_PATTERN, description="e.g. sim/frontier")],
    case: Annotated[str, Query(min_length=1, max_length=200, description="A decider case id")],
    effort: Annotated[ReasoningEffort | None, Query(description="Reasoning effort to pin")] = None,
    identity: Annotated[
        str | None, Query(max_length=100, description="Named provider credential")
    ] = None,
    rep: Annotated[int, Query(ge=0, le=1000, description="Repetition (seeds the draw)")] = 0,
) -> dict[str, Any]:
    found = _cases().get(case)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no decider case {case!r}")
    if identity is not None and identity not in settings.provider_credentials:
        raise HTTPException(
            422,  # Unprocessable Content (the constant was renamed across Starlette versions)
            f"identity {identity!r} names no configured provider credential",
        )
    if _one_at_a_time.locked():
        raise HTTPException(status.HTTP_409_CONFLICT, "a harness try is already running")
    async with _one_at_a_time:
        try:
            outcome = await try_case(
                settings,
                harness=harness,
                model=model,
                case=found,
                reasoning_effort=effort,
                credential=identity,
                rep=rep,
            )
        except SandboxError as e:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(e)) from None
        except HarnessError as e:  # e.g. the provider refused the credential
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(e)) from None
    return {
        "case": found.id,
        "passed": outcome.passed,
        "check": outcome.check.detail if outcome.check else "no answer",
        "result": outcome.result.to_dict(),
    }
