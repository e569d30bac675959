"""Running case jobs: classifier cases through the provider with the production prompt and
parser, decider cases through the sandbox and the agent harness. One CaseGraded per case."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from contracts.cases import ClassifierCase, DeciderCase
from contracts.classifier_grading import grade_classification
from contracts.classifier_prompt import classify_output
from contracts.decider_grading import grade_decider_case, grade_post_check, needs_post_check
from contracts.events import CaseGraded
from contracts.events.cases import ANSWER_EXCERPT_MAX, DIAGNOSTIC_VALUE_MAX
from contracts.ids import case_result_id
from contracts.jobs import CaseJob
from contracts.tiers import derive_tier
from datasets.verify import PostCheckRun, run_post_check
from infra.classifier_call import call_classifier
from infra.clock import utc_now
from infra.provider.client import ProviderClient
from infra.settings import Settings
from streams.app import Emit
from streams.cli_job import CliSandboxFactory, cli_job, settings_secrets
from streams.docker_sandbox import DockerSandbox
from streams.harness import BuiltinHarness, Harness, HarnessResult
from streams.sandbox import Sandbox
from streams.sandbox_pool import PooledSandbox, SandboxPool

log = logging.getLogger("provenroute.execution")

SandboxFactory = Callable[[str], Sandbox]


def _diag(**facts: object) -> dict[str, str]:
    return {k: str(v)[:DIAGNOSTIC_VALUE_MAX] for k, v in facts.items() if v is not None}


def _ms(value: object) -> float | None:
    return round(value, 1) if isinstance(value, int | float) else None


class CaseExecutor:
    """The worker's JobExecutor. Provider clients are made per credential and reused."""

    def __init__(
        self,
        settings: Settings,
        *,
        classifier_cases: Mapping[str, ClassifierCase],
        decider_cases: Mapping[str, DeciderCase],
        sandbox_factory: SandboxFactory | None = None,
        harness_factory: Callable[[ProviderClient], Harness] | None = None,
        cli_sandbox_factory: CliSandboxFactory | None = None,
        clock: Callable[[], str] = utc_now,
        classifier_timeout_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.classifier_cases = classifier_cases
        self.decider_cases = decider_cases
        # Warm containers for the next jobs, at most one spare per job slot.
        self.pool = SandboxPool(
            lambda key: DockerSandbox(key, image=settings.docker_image),
            spare=settings.worker_job_slots,
        )
        self.sandbox_factory = sandbox_factory
        secrets = settings_secrets(settings)
        self.cli_sandbox_factory = cli_sandbox_factory
        self.harness_factory = harness_factory or (
            lambda provider: BuiltinHarness(
                provider, redact=secrets, call_timeout_s=settings.provider_timeout_s
            )
        )
        self.clock = clock
        # /decide's own deadline unless told otherwise (see `_classifier_case`).
        self.classifier_timeout_s = (
            classifier_timeout_s
            if classifier_timeout_s is not None
            else settings.classifier_deadline_ms / 1000.0
        )
        self._providers: dict[str | None, ProviderClient] = {}

    def provider(self, credential: str | None) -> ProviderClient:
        if credential not in self._providers:
            self._providers[credential] = ProviderClient.from_settings(self.settings, credential)
        return self._providers[credential]

    def prewarm(self) -> None:
        """Worker start: the pool starts its spares now, so the first decider jobs do not
        wait for cold starts (unused, they go after the pool's idle time)."""
        if self.sandbox_factory is None and self.decider_cases:
            self.pool.fill()

    async def aclose(self) -> None:
        await self.pool.aclose()
        for p in self._providers.values():
            await p.aclose()

    async def execute(self, job: CaseJob, emit: Emit, skip: frozenset[str]) -> None:
        todo = [c for c in job.case_ids if c not in skip]
        if job.kind == "classifier":
            for case_id in todo:
                await emit(await self._classifier_case(job, self.classifier_cases[case_id]))
        else:
            await self._decider_job(job, [self.decider_cases[c] for c in todo], emit)

    # ------------------------------------------------------------------ classifier
    async def _classifier_case(self, job: CaseJob, case: ClassifierCase) -> CaseGraded:
        # Exactly the production call (prompt, parser, empty-answer retry) against the same
        # deadline /decide gives it: a call /decide would abandon is a timeout here too.
        call = await call_classifier(
            self.provider(job.credential),
            job.model,
            case.messages,
            timeout_s=self.classifier_timeout_s,
            seed=job.rep,
        )
        if call.error is not None:
            raise call.error  # the job is retried, then dead-lettered
        timed_out = call.timed_out
        classification = call.classification or classify_output("", case.messages)
        score = 0.0 if timed_out else grade_classification(classification, case.label).score
        return CaseGraded(
            event_id=case_result_id(job.run_id, job.model, case.id, job.rep),
            occurred_at=self.clock(),
            correlation_id=job.correlation_id,
            run_id=job.run_id,
            kind="classifier",
            model=job.model,
            case_id=case.id,
            rep=job.rep,
            tier=derive_tier(case.label),
            score=score,
            latency_ms=call.latency_ms,
            cost_usd=call.cost_usd,
            timed_out=timed_out,
            classification=classification,
            answer_excerpt=call.text[:ANSWER_EXCERPT_MAX] or None,
            diagnostics=_diag(
                attempts=call.attempts,
                fallback_reason=classification.fallback_reason,
                job_attempt=job.attempt,
            ),
            job_id=job.job_id,
        )

    # ------------------------------------------------------------------ decider
    async def _decider_job(self, job: CaseJob, cases: list[DeciderCase], emit: Emit) -> None:
        if not cases:
            return
        if job.harness != "builtin":
            async with cli_job(
                self.settings,
                job_key=job.job_id,
                harness=job.harness,
                model=job.model,
                reasoning_effort=job.reasoning_effort,
                credential=job.credential,
                sandbox_factory=self.cli_sandbox_factory,
            ) as (cli_harness, cli_sandbox):
                await self._run_cases(
                    job, cases, cli_harness, cli_sandbox, emit, time.perf_counter()
                )
            return
        harness = self.harness_factory(self.provider(job.credential))
        # The pool's sandbox may take a used container of this run (recycled: see
        # SandboxPool), and hands its own back when the job ends cleanly.
        sandbox = (
            self.sandbox_factory(job.job_id)
            if self.sandbox_factory is not None
            else self.pool.sandbox(job.job_id, reuse_tag=job.run_id)
        )
        t_job = time.perf_counter()
        try:
            await sandbox.start()
            clean = await self._run_cases(job, cases, harness, sandbox, emit, t_job)
            if clean and isinstance(sandbox, PooledSandbox):
                sandbox.keep()  # not after an error, a cancel or a case that timed out
        finally:
            await sandbox.close()

    async def _run_cases(
        self,
        job: CaseJob,
        cases: list[DeciderCase],
        harness: Harness,
        sandbox: Sandbox,
        emit: Emit,
        t_job: float,
    ) -> bool:
        """Cases run serially in the job's (started) container: each gets a clean workspace.
        True when no case timed out."""
        # Per-job diagnostics repeated on each of its cases (the benchmark dedupes them by
        # job id): what the job waited for its container (a warm pool claim), and what that
        # container's create + start + warm-up took.
        start_ms = getattr(sandbox, "start_ms", None)
        starts = (start_ms, getattr(sandbox, "cold_start_ms", start_ms))
        reused = getattr(sandbox, "reused", None)
        clean = True
        for case in cases:
            result = await harness.run_case(
                case,
                sandbox,
                model=job.model,
                reasoning_effort=job.reasoning_effort,
                rep=job.rep,
            )
            # Tasks that change files are graded on the workspace too: the hidden
            # post-check runs in this container now that the agent has finished.
            t_post = time.perf_counter()
            post = (
                await run_post_check(sandbox, case)
                if needs_post_check(case, result.answer)
                else None
            )
            post_ms = (time.perf_counter() - t_post) * 1000.0 if post is not None else None
            clean = clean and not result.timed_out
            await emit(self._graded(job, case, result, (post, post_ms), starts, t_job, reused))
        return clean

    def _graded(
        self,
        job: CaseJob,
        case: DeciderCase,
        result: HarnessResult,
        post_run: tuple[PostCheckRun | None, float | None],
        starts: tuple[object, object],
        t_job: float,
        reused: object = None,
    ) -> CaseGraded:
        post, post_ms = post_run
        check = grade_decider_case(case, result.answer, post) if result.answer else None
        passed = bool(check and check.passed)
        return CaseGraded(
            event_id=case_result_id(job.run_id, job.model, case.id, job.rep),
            occurred_at=self.clock(),
            correlation_id=job.correlation_id,
            run_id=job.run_id,
            kind="decider",
            model=job.model,
            case_id=case.id,
            rep=job.rep,
            tier=case.tier,
            score=1.0 if passed else 0.0,
            latency_ms=result.latency_ms,
            cost_usd=result.cost_usd,
            timed_out=result.timed_out,
            answer_excerpt=result.answer[:ANSWER_EXCERPT_MAX] or None,
            diagnostics=_diag(
                harness=result.harness,
                stop_reason=result.stop_reason,
                steps=result.steps,
                attempts=result.attempts,
                check=check.detail if check else "no answer",
                post_check=(None if post is None else grade_post_check(post).detail),
                post_check_ms=_ms(post_ms),
                transcript_tail=result.transcript_tail[-400:],
                model_latency_ms=round(result.model_latency_ms, 1),
                job_attempt=job.attempt,
                tool_calls=result.tool_calls,
                tool_exec_ms=round(result.tool_exec_ms, 1),
                tool_wall_ms=round(result.tool_wall_ms, 1),
                reset_ms=round(result.reset_ms, 1),
                cli_ms=round(result.cli_ms, 1) if result.harness != "builtin" else None,
                cli_first_call_ms=(
                    round(result.first_call_ms, 1) if result.harness != "builtin" else None
                ),
                container_start_ms=_ms(starts[0]),
                container_cold_start_ms=_ms(starts[1]),
                container_reused=None if reused is None else str(reused).lower(),
                job_elapsed_ms=round((time.perf_counter() - t_job) * 1000.0, 1),
            ),
            job_id=job.job_id,
        )
