"""Deciding admin commands: pure `decide(state, command) -> events + jobs`, `evolve(state, event)`.

The worker's command agent is a thin shell around these: it passes in the clock, the
dataset's case ids and the names of the configured credentials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from contracts.commands import Command, SaveBenchmarkConfig, SetClassifierOverride, StartRun
from contracts.config import BenchmarkConfig, HarnessName, RunKind
from contracts.envelope import EventBase
from contracts.events import (
    BenchmarkConfigSaved,
    CaseJobsFannedOut,
    ClassifierOverrideSet,
    CommandAccepted,
    CommandRejected,
    RunModelCarried,
    RunModelEnqueued,
    RunStarted,
)
from contracts.events.runs import MeasurementConditions
from contracts.ids import derive_id
from contracts.jobs import CaseJob, plan_jobs
from contracts.results import ModelSummary
from contracts.summaries import carry_summaries
from contracts.taxonomy import ReasoningEffort

ADMIN_KEY = "admin"
"""Key of admin (non-run) events on the events topic and of the admin state table."""


class AdminState(BaseModel):
    """What the command agent needs to decide: the live config and the override."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: BenchmarkConfig | None = None
    classifier_override: str | None = None


class ModelRecord(BaseModel):
    """The latest measured summaries of a model, under the conditions that make them
    carryable: kind, reasoning effort, dataset content and repetition count."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: RunKind
    model: str
    reasoning_effort: ReasoningEffort | None
    run_id: str
    """The run that measured them."""
    summaries: tuple[ModelSummary, ...] = Field(min_length=1)
    dataset_hash: str | None = None
    """`dataset_hash` of the kind's dataset the run measured; None for records from before
    it was kept (they match no key, so their models are measured again)."""
    repetitions: int | None = None
    """How often each case was run per model."""
    harness: HarnessName | None = None
    """Decider records: the harness that measured them (None: builtin, or a classifier)."""

    @property
    def key(self) -> str:
        return history_key(
            self.kind,
            self.model,
            self.reasoning_effort,
            self.dataset_hash,
            self.repetitions,
            self.harness,
        )


def history_key(
    kind: RunKind,
    model: str,
    effort: ReasoningEffort | None,
    dataset_hash: str | None,
    repetitions: int | None,
    harness: HarnessName | None = None,
) -> str:
    """What summaries may be carried under: the same model at the same reasoning effort,
    measured on the same dataset content the same number of times, through the same agent
    harness. Anything else measured something else (an edited case, other repetitions,
    another effort, another harness; the builtin harness adds nothing to the key)."""
    key = f"{kind}|{model}|{effort or '-'}|{dataset_hash or '-'}|x{repetitions or '-'}"
    return key if harness in (None, "builtin") else f"{key}|{harness}"


class CommandOutcome(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    events: tuple[EventBase, ...]
    jobs: tuple[CaseJob, ...] = ()


def evolve_admin(state: AdminState, event: EventBase) -> AdminState:
    if isinstance(event, BenchmarkConfigSaved):
        return state.model_copy(update={"config": event.config})
    if isinstance(event, ClassifierOverrideSet):
        return state.model_copy(update={"classifier_override": event.model})
    return state


def run_id_for(command_id: str) -> str:
    """A redelivered StartRun re-creates the same run instead of starting a second one."""
    return derive_id("run", command_id)


def reject(
    command_id: str | None,
    command_type: str | None,
    reason: str,
    *,
    now: str,
    raw_excerpt: str | None = None,
    id_basis: str | None = None,
) -> CommandRejected:
    """`id_basis` (e.g. the message's partition and offset) tells apart two identical
    garbage messages, which carry no command id of their own."""
    return CommandRejected(
        event_id=derive_id("CommandRejected", id_basis or command_id or reason, raw_excerpt or ""),
        occurred_at=now,
        correlation_id=command_id,
        command_type=command_type,
        reason=reason,
        raw_excerpt=raw_excerpt,
    )


def _accepted(command: Command, now: str) -> CommandAccepted:
    return CommandAccepted(
        event_id=derive_id("CommandAccepted", command.command_id),
        occurred_at=now,
        correlation_id=command.command_id,
        command_type=command.type,  # type: ignore[arg-type]
    )


def decide_command(
    state: AdminState,
    history: Mapping[str, ModelRecord],
    command: Command,
    *,
    now: str,
    case_ids: Mapping[RunKind, Sequence[str]],
    dataset_hashes: Mapping[RunKind, str],
    credentials: frozenset[str],
    conditions: MeasurementConditions | None = None,
) -> CommandOutcome:
    """Every outcome is an event carrying the command id as correlation id.

    `dataset_hashes` are the `dataset_hash` of each kind's dataset (part of the carry key);
    `conditions` what a started run will measure under (recorded on RunStarted)."""
    cid = command.command_id
    if isinstance(command, SaveBenchmarkConfig):
        saved = BenchmarkConfigSaved(
            event_id=derive_id("BenchmarkConfigSaved", cid),
            occurred_at=now,
            correlation_id=cid,
            config=command.config,
        )
        return CommandOutcome(events=(_accepted(command, now), saved))
    if isinstance(command, SetClassifierOverride):
        override = ClassifierOverrideSet(
            event_id=derive_id("ClassifierOverrideSet", cid),
            occurred_at=now,
            correlation_id=cid,
            model=command.model,
        )
        return CommandOutcome(events=(_accepted(command, now), override))
    assert isinstance(command, StartRun)
    return _start_run(
        state,
        history,
        command,
        now=now,
        case_ids=case_ids,
        dataset_hash=dataset_hashes.get(command.kind),
        credentials=credentials,
        conditions=conditions,
    )


def _start_run(
    state: AdminState,
    history: Mapping[str, ModelRecord],
    command: StartRun,
    *,
    now: str,
    case_ids: Mapping[RunKind, Sequence[str]],
    dataset_hash: str | None,
    credentials: frozenset[str],
    conditions: MeasurementConditions | None,
) -> CommandOutcome:
    cid = command.command_id

    def refuse(reason: str) -> CommandOutcome:
        return CommandOutcome(events=(reject(cid, command.type, reason, now=now),))

    config = state.config
    if config is None:
        return refuse("no benchmark config saved: post SaveBenchmarkConfig before starting a run")
    if command.kind == "decider":
        if config.benchmarkIdentity is None:
            return refuse("decider runs need a benchmarkIdentity in the saved config")
        if config.benchmarkIdentity not in credentials:
            return refuse(
                f"benchmarkIdentity {config.benchmarkIdentity!r} names no configured "
                "provider credential"
            )
    cases = list(case_ids.get(command.kind, ()))
    if not cases:
        return refuse(f"the {command.kind} dataset is empty")

    run_id = run_id_for(cid)
    models: list[tuple[str, ReasoningEffort | None]] = (
        [(m, None) for m in config.classifierModels]
        if command.kind == "classifier"
        else [(d.model, d.reasoningEffort) for d in config.deciderModels]
    )
    reps = (
        config.classifierRepetitions if command.kind == "classifier" else config.deciderRepetitions
    )
    harness = config.deciderHarness if command.kind == "decider" else None
    events: list[EventBase] = [
        _accepted(command, now),
        RunStarted(
            event_id=derive_id("RunStarted", run_id),
            occurred_at=now,
            correlation_id=cid,
            run_id=run_id,
            kind=command.kind,
            force=command.force,
            config=config,
            dataset_size=len(cases),
            dataset_hash=dataset_hash,
            conditions=conditions,
        ),
    ]
    enqueued: list[tuple[str, ReasoningEffort | None]] = []
    for model, effort in models:
        key = history_key(command.kind, model, effort, dataset_hash, reps, harness)
        record = None if command.force else history.get(key)
        if record is not None:
            events.append(
                RunModelCarried(
                    event_id=derive_id("RunModelCarried", run_id, model),
                    occurred_at=now,
                    correlation_id=cid,
                    run_id=run_id,
                    model=model,
                    reasoning_effort=effort,
                    source_run_id=record.run_id,
                    summaries=tuple(carry_summaries(record.summaries, record.run_id)),
                )
            )
        else:
            enqueued.append((model, effort))
            events.append(
                RunModelEnqueued(
                    event_id=derive_id("RunModelEnqueued", run_id, model),
                    occurred_at=now,
                    correlation_id=cid,
                    run_id=run_id,
                    model=model,
                    reasoning_effort=effort,
                )
            )
    jobs = plan_jobs(
        run_id=run_id,
        kind=command.kind,
        models=enqueued,
        case_ids=cases,
        repetitions=reps,
        credential=config.benchmarkIdentity if command.kind == "decider" else None,
        correlation_id=cid,
        max_concurrency=config.maxConcurrency,
        harness=harness or "builtin",
    )
    events.append(
        CaseJobsFannedOut(
            event_id=derive_id("CaseJobsFannedOut", run_id),
            occurred_at=now,
            correlation_id=cid,
            run_id=run_id,
            jobs=len(jobs),
            expected_results=len(enqueued) * len(cases) * reps,
        )
    )
    return CommandOutcome(events=tuple(events), jobs=tuple(jobs))


def event_key(event: EventBase) -> str:
    """Partition key on the events topic: the run id keeps a run's events ordered."""
    run_id = getattr(event, "run_id", None)
    if isinstance(run_id, str):
        return run_id
    conversation = getattr(event, "conversation_id", None)
    if isinstance(conversation, str):
        return conversation
    return ADMIN_KEY
