"""One decider case through one harness in a fresh container, for debugging a harness
(`provenroute harness try`): the result with everything the harness saw, and its grade."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from contracts.cases import DeciderCase
from contracts.config import HarnessName
from contracts.decider_grading import CheckResult, grade_decider_case
from datasets.verify import run_post_check
from infra.provider.client import ProviderClient
from infra.settings import Settings
from streams.cli_job import cli_job, settings_secrets
from streams.docker_sandbox import DockerSandbox
from streams.harness import BuiltinHarness, HarnessResult
from streams.sandbox import Sandbox


@dataclass(frozen=True)
class TryOutcome:
    result: HarnessResult
    check: CheckResult | None
    """None when there was no answer to grade."""

    @property
    def passed(self) -> bool:
        return bool(self.check and self.check.passed)


async def try_case(
    settings: Settings,
    *,
    harness: HarnessName,
    model: str,
    case: DeciderCase,
    reasoning_effort: str | None,
    credential: str | None,
    rep: int = 0,
) -> TryOutcome:
    key = f"harness-try:{harness}:{model}:{uuid.uuid4().hex[:8]}"
    if harness == "builtin":
        async with ProviderClient.from_settings(settings, credential) as provider:
            builtin = BuiltinHarness(
                provider,
                redact=settings_secrets(settings),
                call_timeout_s=settings.provider_timeout_s,
            )
            async with DockerSandbox(key, image=settings.docker_image) as sandbox:
                result = await builtin.run_case(
                    case, sandbox, model=model, reasoning_effort=reasoning_effort, rep=rep
                )
                return await _graded(case, sandbox, result)
    async with cli_job(
        settings,
        job_key=key,
        harness=harness,
        model=model,
        reasoning_effort=reasoning_effort,
        credential=credential,
    ) as (cli, sandbox):
        result = await cli.run_case(
            case, sandbox, model=model, reasoning_effort=reasoning_effort, rep=rep
        )
        return await _graded(case, sandbox, result)


async def _graded(case: DeciderCase, sandbox: Sandbox, result: HarnessResult) -> TryOutcome:
    post = await run_post_check(sandbox, case) if case.post_check is not None else None
    check = grade_decider_case(case, result.answer, post) if result.answer else None
    return TryOutcome(result, check)
