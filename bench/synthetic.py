"""Realistic synthetic event logs (tests, the replay benchmark), built from the contracts.

Runs are produced the way the worker produces them: RunStarted with the config snapshot,
RunModelEnqueued / RunModelCarried, CaseJobsFannedOut, one CaseGraded per (model, case,
rep) with its derived id, then `completion_events` (the worker's own completion logic:
summaries, RunCompleted, the routing table or classifier winner). Deterministic per seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from contracts.classification import Classification
from contracts.command_decider import event_key
from contracts.config import BenchmarkConfig, DeciderModel, RunKind
from contracts.envelope import EventBase, iso_utc
from contracts.events import (
    BenchmarkConfigSaved,
    CaseGraded,
    CaseJobsFannedOut,
    ClassifierOverrideSet,
    CommandAccepted,
    DecisionMade,
    RunModelCarried,
    RunModelEnqueued,
    RunStarted,
)
from contracts.ids import case_job_id, case_result_id, derive_id
from contracts.jobs import CHUNK_SIZE
from contracts.results import CaseOutcome, ModelSummary
from contracts.run_progress import RunProgress, completion_events, result_key
from contracts.summaries import carry_summaries, summarize
from contracts.taxonomy import TIERS, Tier


@dataclass(frozen=True)
class SimModel:
    model: str
    accuracy: dict[Tier, float]
    cost_usd: float
    latency_ms: float
    effort: str = "medium"


DEFAULT_MODELS: tuple[SimModel, ...] = (
    SimModel("sim/swift-mini", {"low": 0.92, "medium": 0.55, "high": 0.2}, 0.0004, 900),
    SimModel("sim/steady-medium", {"low": 0.95, "medium": 0.82, "high": 0.5}, 0.002, 1800),
    SimModel("sim/deep-large", {"low": 0.97, "medium": 0.93, "high": 0.85}, 0.012, 4200),
    SimModel("sim/budget-nano", {"low": 0.75, "medium": 0.3, "high": 0.05}, 0.0001, 600),
)


def decider_cases(n: int = 76) -> list[tuple[str, Tier]]:
    return [(f"dec-{i:03d}", TIERS[i % 3]) for i in range(n)]


@dataclass
class LogBuilder:
    """Accumulates (topic name, key, event) in log order."""

    start: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    seed: int = 0
    messages: list[tuple[str, str, EventBase]] = field(default_factory=list)
    history: dict[str, tuple[str, tuple[ModelSummary, ...]]] = field(default_factory=dict)
    """Latest measured summaries per decider model: (run id, summaries)."""

    def __post_init__(self) -> None:
        self.seq = 0
        self.clock = self.start
        self.rng = random.Random(self.seed)

    def now(self, advance_s: float = 0.0) -> str:
        self.clock += timedelta(seconds=advance_s)
        return iso_utc(self.clock)

    def emit(self, event: EventBase, topic: str = "events") -> EventBase:
        self.messages.append((topic, event_key(event), event))
        return event

    def config(
        self,
        models: tuple[SimModel, ...] = DEFAULT_MODELS,
        *,
        min_accuracy: float = 0.7,
        command_id: str | None = None,
    ) -> BenchmarkConfig:
        cfg = BenchmarkConfig(
            classifierModels=tuple(m.model for m in models[:2]),
            deciderModels=tuple(
                DeciderModel(model=m.model, reasoningEffort=m.effort)  # type: ignore[arg-type]
                for m in models
            ),
            minAccuracy=min_accuracy,
            benchmarkIdentity="sim-benchmark",
        )
        cid = command_id or derive_id("cmd", str(len(self.messages)), str(self.seed))
        at = self.now(1)
        self.emit(
            CommandAccepted(
                event_id=derive_id("CommandAccepted", cid),
                occurred_at=at,
                correlation_id=cid,
                command_type="SaveBenchmarkConfig",
            )
        )
        self.emit(
            BenchmarkConfigSaved(
                event_id=derive_id("BenchmarkConfigSaved", cid),
                occurred_at=at,
                correlation_id=cid,
                config=cfg,
            )
        )
        return cfg

    def override(self, model: str | None) -> None:
        cid = derive_id("cmd-override", str(len(self.messages)))
        self.emit(
            ClassifierOverrideSet(
                event_id=derive_id("ClassifierOverrideSet", cid),
                occurred_at=self.now(1),
                correlation_id=cid,
                model=model,
            )
        )

    def _start_run(
        self, run_id: str, kind: RunKind, config: BenchmarkConfig, *, force: bool, dataset_size: int
    ) -> tuple[str, str]:
        """Emit RunStarted; returns the run's (correlation id, start time)."""
        cid = derive_id("cmd-run", run_id)
        at = self.now(1)
        self.emit(
            RunStarted(
                event_id=derive_id("RunStarted", run_id),
                occurred_at=at,
                correlation_id=cid,
                run_id=run_id,
                kind=kind,
                force=force,
                config=config,
                dataset_size=dataset_size,
            )
        )
        return cid, at

    def _fan_out(self, run_id: str, cid: str, at: str, *, jobs: int, expected: int) -> None:
        self.emit(
            CaseJobsFannedOut(
                event_id=derive_id("CaseJobsFannedOut", run_id),
                occurred_at=at,
                correlation_id=cid,
                run_id=run_id,
                jobs=jobs,
                expected_results=expected,
            )
        )

    def _complete(self, progress: RunProgress) -> list[EventBase]:
        """Emit the worker's completion events for a finished run, and return them."""
        done = completion_events(progress, now=self.now(1))
        for finished in done:
            self.emit(finished)
        return done

    def decider_run(
        self,
        run_id: str,
        config: BenchmarkConfig,
        models: tuple[SimModel, ...] = DEFAULT_MODELS,
        *,
        cases: list[tuple[str, Tier]] | None = None,
        reps: int = 1,
        force: bool = False,
        step_s: float = 0.5,
    ) -> list[EventBase]:
        """Events of one decider run, with carrying like the worker; returns the completion."""
        cases = cases if cases is not None else decider_cases()
        cid, at = self._start_run(run_id, "decider", config, force=force, dataset_size=len(cases))
        by_name = {m.model: m for m in models}
        measured: list[SimModel] = []
        carried: dict[str, tuple[ModelSummary, ...]] = {}
        enqueued: dict[str, str | None] = {}
        for d in config.deciderModels:
            prior = None if force else self.history.get(d.model)
            if prior is not None:
                summaries = tuple(carry_summaries(prior[1], prior[0]))
                carried[d.model] = summaries
                self.emit(
                    RunModelCarried(
                        event_id=derive_id("RunModelCarried", run_id, d.model),
                        occurred_at=at,
                        correlation_id=cid,
                        run_id=run_id,
                        model=d.model,
                        reasoning_effort=d.reasoningEffort,
                        source_run_id=prior[0],
                        summaries=summaries,
                    )
                )
            else:
                measured.append(by_name[d.model])
                enqueued[d.model] = d.reasoningEffort
                self.emit(
                    RunModelEnqueued(
                        event_id=derive_id("RunModelEnqueued", run_id, d.model),
                        occurred_at=at,
                        correlation_id=cid,
                        run_id=run_id,
                        model=d.model,
                        reasoning_effort=d.reasoningEffort,
                    )
                )
        chunks = -(-len(cases) // CHUNK_SIZE)
        expected = len(measured) * len(cases) * reps
        self._fan_out(run_id, cid, at, jobs=len(measured) * chunks * reps, expected=expected)
        outcomes: dict[str, CaseOutcome] = {}
        for m in measured:
            for rep in range(reps):
                for i, (case_id, tier) in enumerate(cases):
                    ok = self.rng.random() < m.accuracy[tier]
                    timed_out = not ok and self.rng.random() < 0.05
                    ev = CaseGraded(
                        event_id=case_result_id(run_id, m.model, case_id, rep),
                        occurred_at=self.now(step_s),
                        correlation_id=cid,
                        run_id=run_id,
                        kind="decider",
                        model=m.model,
                        case_id=case_id,
                        rep=rep,
                        tier=tier,
                        score=1.0 if ok else 0.0,
                        latency_ms=round(m.latency_ms * (0.5 + self.rng.random()), 1),
                        cost_usd=round(m.cost_usd * (0.5 + self.rng.random()), 7),
                        timed_out=timed_out,
                        answer_excerpt="42" if ok else "no idea",
                        diagnostics={"exit_code": "124" if timed_out else "0"},
                        job_id=case_job_id(run_id, m.model, i // CHUNK_SIZE, rep),
                    )
                    self.emit(ev)
                    outcomes[result_key(m.model, case_id, rep)] = ev.to_outcome()
        for m in measured:
            mine = [o for o in outcomes.values() if o.model == m.model]
            self.history[m.model] = (run_id, tuple(summarize(mine)))
        progress = RunProgress(
            run_id=run_id,
            kind="decider",
            config=config,
            correlation_id=cid,
            started_at=at,
            enqueued=enqueued,
            carried=carried,
            expected=expected,
            outcomes=outcomes,  # type: ignore[arg-type]
        )
        return self._complete(progress)

    def classifier_run(
        self, run_id: str, config: BenchmarkConfig, *, cases: int = 24, step_s: float = 0.2
    ) -> list[EventBase]:
        cid, at = self._start_run(run_id, "classifier", config, force=False, dataset_size=cases)
        for model in config.classifierModels:
            self.emit(
                RunModelEnqueued(
                    event_id=derive_id("RunModelEnqueued", run_id, model),
                    occurred_at=at,
                    correlation_id=cid,
                    run_id=run_id,
                    model=model,
                    reasoning_effort=None,
                )
            )
        self._fan_out(
            run_id,
            cid,
            at,
            jobs=len(config.classifierModels) * -(-cases // CHUNK_SIZE),
            expected=len(config.classifierModels) * cases,
        )
        outcomes: dict[str, CaseOutcome] = {}
        for j, model in enumerate(config.classifierModels):
            for i in range(cases):
                fallback = self.rng.random() < 0.05
                cls = Classification(
                    taskType="debugging",
                    subtaskType="bug_fix",
                    reasoningComplexity=("low", "medium", "high")[i % 3],  # type: ignore[arg-type]
                    contextComplexity="medium",
                    executionMode="single_turn",
                    requiresTools=bool(i % 2),
                    riskLevel="low",
                    fallback=fallback,
                    fallback_reason="unparseable output" if fallback else None,
                )
                score = 0.0 if fallback else round(0.6 + 0.4 * self.rng.random(), 4)
                case_id = f"cls-{i:03d}"
                ev = CaseGraded(
                    event_id=case_result_id(run_id, model, case_id, 0),
                    occurred_at=self.now(step_s),
                    correlation_id=cid,
                    run_id=run_id,
                    kind="classifier",
                    model=model,
                    case_id=case_id,
                    rep=0,
                    tier=TIERS[i % 3],
                    score=score,
                    latency_ms=300.0 + 50 * j + i,
                    cost_usd=0.00002 * (j + 1),
                    timed_out=False,
                    classification=cls,
                    job_id=case_job_id(run_id, model, i // CHUNK_SIZE, 0),
                )
                self.emit(ev)
                outcomes[result_key(model, case_id, 0)] = ev.to_outcome()
        progress = RunProgress(
            run_id=run_id,
            kind="classifier",
            config=config,
            correlation_id=cid,
            started_at=at,
            enqueued={m: None for m in config.classifierModels},
            expected=len(outcomes),
            outcomes=outcomes,
        )
        return self._complete(progress)

    def decisions(self, n: int, table_version: str | None, models: list[str]) -> None:
        for _ in range(n):
            self.seq += 1
            conv = f"conv-{self.rng.randrange(max(1, n // 4))}"
            tier: Tier = TIERS[self.rng.randrange(3)]
            null = table_version is None or not models
            self.emit(
                DecisionMade(
                    event_id=derive_id("DecisionMade", str(self.seed), str(self.seq)),
                    occurred_at=self.now(0.05),
                    decision_id=derive_id("decision", str(self.seed), str(self.seq)),
                    conversation_id=conv,
                    model=None if null else models[self.rng.randrange(len(models))],
                    reasoning_effort=None if null else "medium",
                    tier=tier,
                    sticky=False if null else self.rng.random() < 0.3,
                    null_reason="no routing table" if null else None,
                    classifier_model="sim/swift-mini",
                    classifier_cost_usd=0.00002,
                    classification_fallback=False,
                    table_version=table_version,
                    latency_ms=3.5,
                ),
                topic="decisions",
            )


async def produce(
    bootstrap: str,
    prefix: str,
    messages: list[tuple[str, str, EventBase]] | list[tuple[str, bytes, bytes]],
) -> None:
    """Send (topic, key, event) or pre-encoded (topic, key, value) with an idempotent producer."""
    from aiokafka import AIOKafkaProducer

    from contracts.codec import encode_event

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    try:
        futures = []
        for topic, key, value in messages:
            k = key.encode() if isinstance(key, str) else key
            v = value if isinstance(value, bytes) else encode_event(value)
            futures.append(await producer.send(f"{prefix}{topic}", v, key=k))
        await producer.flush()
        for f in futures:
            await f
    finally:
        await producer.stop()
