"""The command decider (contracts/command_decider.py): given state, when a command, then events.

Tables of given/when/then; every outcome carries the command id as correlation id, and the
same input always decides to the same bytes (derived ids, clock passed in)."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.codec import encode_event
from contracts.command_decider import (
    ADMIN_KEY,
    AdminState,
    CommandOutcome,
    ModelRecord,
    decide_command,
    event_key,
    evolve_admin,
    history_key,
    run_id_for,
)
from contracts.commands import Command, SaveBenchmarkConfig, SetClassifierOverride, StartRun
from contracts.config import BenchmarkConfig, DeciderModel
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
from contracts.jobs import CHUNK_SIZE
from contracts.results import ModelSummary

NOW = "2026-06-11T09:30:00.000Z"
CID = "cmd-1"
CREDENTIALS = frozenset({"bench"})
CASES: dict[Any, list[str]] = {
    "classifier": [f"c{i:02d}" for i in range(12)],  # 3 chunks: 5 + 5 + 2
    "decider": [f"d{i:02d}" for i in range(7)],  # 2 chunks: 5 + 2
}


def config(**kw: Any) -> BenchmarkConfig:
    base: dict[str, Any] = dict(
        classifierModels=("sim/c1", "sim/c2"),
        deciderModels=(
            DeciderModel(model="sim/d1", reasoningEffort="low"),
            DeciderModel(model="sim/d2", reasoningEffort="high"),
        ),
        classifierRepetitions=1,
        deciderRepetitions=2,
        maxConcurrency=3,
        benchmarkIdentity="bench",
    )
    return BenchmarkConfig(**{**base, **kw})


def summary(model: str, tier: Any = "low", **kw: Any) -> ModelSummary:
    base: dict[str, Any] = dict(
        model=model,
        tier=tier,
        accuracy=0.9,
        accuracy_lower_bound=0.8,
        graded=10,
        avg_cost_usd=0.01,
        p95_latency_ms=100.0,
    )
    return ModelSummary(**{**base, **kw})


HASHES: dict[Any, str] = {"classifier": "hash-c", "decider": "hash-d"}
"""The datasets' content hashes the worker passes in."""


def record(kind: Any, model: str, effort: Any, run: str = "run-0") -> tuple[str, ModelRecord]:
    """A model measured on today's dataset with `config()`'s repetitions."""
    rec = ModelRecord(
        kind=kind,
        model=model,
        reasoning_effort=effort,
        run_id=run,
        summaries=(summary(model, "low"), summary(model, "high")),
        dataset_hash=HASHES[kind],
        repetitions=1 if kind == "classifier" else 2,
    )
    return rec.key, rec


def start(kind: Any = "decider", force: bool = False, cid: str = CID) -> StartRun:
    return StartRun(command_id=cid, issued_at=NOW, kind=kind, force=force)


def decide(
    command: Command,
    state: AdminState | None = None,
    history: dict[str, ModelRecord] | None = None,
    *,
    credentials: frozenset[str] = CREDENTIALS,
    cases: dict[Any, list[str]] | None = None,
    hashes: dict[Any, str] | None = None,
) -> CommandOutcome:
    return decide_command(
        state if state is not None else AdminState(config=config()),
        history or {},
        command,
        now=NOW,
        case_ids=CASES if cases is None else cases,
        dataset_hashes=HASHES if hashes is None else hashes,
        credentials=credentials,
    )


def types(outcome: CommandOutcome) -> list[str]:
    return [e.type for e in outcome.events]


# ---------------------------------------------------------------------------- config, override
def test_save_config_is_accepted_and_saved() -> None:
    new = config(minAccuracy=0.8)
    out = decide(SaveBenchmarkConfig(command_id=CID, issued_at=NOW, config=new), AdminState())
    assert types(out) == ["CommandAccepted", "BenchmarkConfigSaved"]
    assert out.jobs == ()
    saved = out.events[1]
    assert isinstance(saved, BenchmarkConfigSaved) and saved.config == new
    assert all(e.correlation_id == CID for e in out.events)
    state = AdminState()
    for e in out.events:
        state = evolve_admin(state, e)
    assert state.config == new


@pytest.mark.parametrize(
    ("given_override", "when_model", "then_override"),
    [
        (None, "sim/c2", "sim/c2"),  # pin
        ("sim/c1", "sim/c2", "sim/c2"),  # re-pin
        ("sim/c1", None, None),  # clear: the winner applies again
    ],
)
def test_classifier_override(
    given_override: str | None, when_model: str | None, then_override: str | None
) -> None:
    state = AdminState(config=config(), classifier_override=given_override)
    out = decide(SetClassifierOverride(command_id=CID, issued_at=NOW, model=when_model), state)
    assert types(out) == ["CommandAccepted", "ClassifierOverrideSet"]
    assert isinstance(out.events[1], ClassifierOverrideSet)
    for e in out.events:
        state = evolve_admin(state, e)
    assert state.classifier_override == then_override
    assert state.config == config()  # untouched


# ---------------------------------------------------------------------------- rejections
@pytest.mark.parametrize(
    ("given_config", "credentials", "cases", "when_kind", "then_reason"),
    [
        (None, CREDENTIALS, None, "classifier", "no benchmark config saved"),
        (None, CREDENTIALS, None, "decider", "no benchmark config saved"),
        (
            config(benchmarkIdentity=None),
            CREDENTIALS,
            None,
            "decider",
            "decider runs need a benchmarkIdentity",
        ),
        (
            config(benchmarkIdentity="nobody"),
            CREDENTIALS,
            None,
            "decider",
            "benchmarkIdentity 'nobody' names no configured provider credential",
        ),
        (config(), frozenset(), None, "decider", "names no configured provider credential"),
        (
            config(),
            CREDENTIALS,
            {"classifier": [], "decider": []},
            "decider",
            "the decider dataset is empty",
        ),
    ],
)
def test_start_run_rejected(
    given_config: BenchmarkConfig | None,
    credentials: frozenset[str],
    cases: dict[Any, list[str]] | None,
    when_kind: str,
    then_reason: str,
) -> None:
    out = decide(
        start(when_kind), AdminState(config=given_config), credentials=credentials, cases=cases
    )
    assert types(out) == ["CommandRejected"]
    assert out.jobs == ()
    rejected = out.events[0]
    assert isinstance(rejected, CommandRejected)
    assert then_reason in rejected.reason
    assert (rejected.correlation_id, rejected.command_type) == (CID, "StartRun")


@pytest.mark.parametrize("identity", [None, "nobody"])
def test_classifier_runs_need_no_benchmark_identity(identity: str | None) -> None:
    out = decide(start("classifier"), AdminState(config=config(benchmarkIdentity=identity)))
    assert types(out)[:2] == ["CommandAccepted", "RunStarted"]
    assert all(j.credential is None for j in out.jobs)


# ---------------------------------------------------------------------------- run start
def test_run_start_snapshots_config_and_fans_out() -> None:
    out = decide(start("decider"))
    run_id = run_id_for(CID)
    assert types(out) == [
        "CommandAccepted",
        "RunStarted",
        "RunModelEnqueued",
        "RunModelEnqueued",
        "CaseJobsFannedOut",
    ]
    assert all(e.correlation_id == CID for e in out.events)
    started = out.events[1]
    assert isinstance(started, RunStarted)
    assert (started.run_id, started.kind, started.force, started.config, started.dataset_size) == (
        run_id,
        "decider",
        False,
        config(),
        7,
    )
    enqueued = [e for e in out.events if isinstance(e, RunModelEnqueued)]
    assert [(e.model, e.reasoning_effort) for e in enqueued] == [
        ("sim/d1", "low"),
        ("sim/d2", "high"),
    ]
    # 2 models x 2 chunks x 2 reps jobs; 2 models x 7 cases x 2 reps results.
    fan = out.events[-1]
    assert isinstance(fan, CaseJobsFannedOut)
    assert (fan.jobs, fan.expected_results) == (8, 28) == (len(out.jobs), 2 * 7 * 2)
    assert {(j.model, j.reasoning_effort) for j in out.jobs} == {
        ("sim/d1", "low"),
        ("sim/d2", "high"),
    }
    assert all(j.run_id == run_id and j.kind == "decider" for j in out.jobs)
    assert all(j.credential == "bench" and j.max_concurrency == 3 for j in out.jobs)
    assert all(j.correlation_id == CID and j.attempt == 1 for j in out.jobs)
    covered = sorted((j.model, c, j.rep) for j in out.jobs for c in j.case_ids)
    assert covered == sorted(
        (m, c, r) for m in ("sim/d1", "sim/d2") for c in CASES["decider"] for r in range(2)
    )


@pytest.mark.parametrize(
    ("kind", "models", "cases", "reps", "chunks"),
    [
        ("classifier", 2, 12, 1, 3),
        ("decider", 2, 7, 2, 2),
    ],
)
def test_expected_results_is_models_times_cases_times_reps(
    kind: str, models: int, cases: int, reps: int, chunks: int
) -> None:
    out = decide(start(kind))
    fan = out.events[-1]
    assert isinstance(fan, CaseJobsFannedOut)
    assert fan.expected_results == models * cases * reps
    assert fan.jobs == len(out.jobs) == models * chunks * reps
    assert chunks == -(-cases // CHUNK_SIZE)


H_D1 = dict([record("decider", "sim/d1", "low")])
H_BOTH = dict([record("decider", "sim/d1", "low"), record("decider", "sim/d2", "high")])


@pytest.mark.parametrize(
    ("given_config", "given_history", "when_kind", "force", "then_carried", "then_enqueued"),
    [
        # no history: everything is measured
        (config(), {}, "decider", False, [], ["sim/d1", "sim/d2"]),
        # history for one model: it is carried, the other measured
        (config(), H_D1, "decider", False, ["sim/d1"], ["sim/d2"]),
        # history for all: all carried, nothing enqueued
        (config(), H_BOTH, "decider", False, ["sim/d1", "sim/d2"], []),
        # forced: history ignored
        (config(), H_BOTH, "decider", True, [], ["sim/d1", "sim/d2"]),
        # a changed reasoning effort is another model for carrying
        (
            config(
                deciderModels=(
                    DeciderModel(model="sim/d1", reasoningEffort="high"),
                    DeciderModel(model="sim/d2", reasoningEffort="high"),
                )
            ),
            H_BOTH,
            "decider",
            False,
            ["sim/d2"],
            ["sim/d1"],
        ),
        # decider history does not carry a classifier model of the same name
        (config(classifierModels=("sim/d1",)), H_BOTH, "classifier", False, [], ["sim/d1"]),
        # classifier history carries classifier models (no effort)
        (
            config(),
            dict([record("classifier", "sim/c2", None)]),
            "classifier",
            False,
            ["sim/c2"],
            ["sim/c1"],
        ),
    ],
)
def test_carried_vs_enqueued(
    given_config: BenchmarkConfig,
    given_history: dict[str, ModelRecord],
    when_kind: str,
    force: bool,
    then_carried: list[str],
    then_enqueued: list[str],
) -> None:
    out = decide(start(when_kind, force), AdminState(config=given_config), given_history)
    carried = [e for e in out.events if isinstance(e, RunModelCarried)]
    enqueued = [e for e in out.events if isinstance(e, RunModelEnqueued)]
    assert [e.model for e in carried] == then_carried
    assert [e.model for e in enqueued] == then_enqueued
    assert sorted({j.model for j in out.jobs}) == then_enqueued
    n_cases = len(CASES[when_kind])
    reps = (
        given_config.classifierRepetitions
        if when_kind == "classifier"
        else given_config.deciderRepetitions
    )
    fan = out.events[-1]
    assert isinstance(fan, CaseJobsFannedOut)
    assert fan.expected_results == len(then_enqueued) * n_cases * reps
    for e in carried:
        source = next(
            r for r in given_history.values() if (r.kind, r.model) == (when_kind, e.model)
        )
        assert e.source_run_id == source.run_id
        assert [s.tier for s in e.summaries] == [s.tier for s in source.summaries]
        assert all(s.carried and s.source_run_id == source.run_id for s in e.summaries)


def test_carrying_a_carried_summary_keeps_the_measuring_run() -> None:
    measured_in_run0 = summary("sim/d1", carried=True, source_run_id="run-0")
    rec = ModelRecord(
        kind="decider",
        model="sim/d1",
        reasoning_effort="low",
        run_id="run-1",
        summaries=(measured_in_run0,),
        dataset_hash=HASHES["decider"],
        repetitions=2,
    )
    history = {rec.key: rec}
    out = decide(start(), history=history)
    carried = next(e for e in out.events if isinstance(e, RunModelCarried))
    assert carried.source_run_id == "run-1"
    assert carried.summaries[0].source_run_id == "run-0"


def test_all_carried_fans_out_nothing() -> None:
    out = decide(start(), history=H_BOTH)
    fan = out.events[-1]
    assert isinstance(fan, CaseJobsFannedOut)
    assert (fan.jobs, fan.expected_results, out.jobs) == (0, 0, ())


# ---------------------------------------------------------------------------- determinism
@pytest.mark.parametrize(
    "command",
    [
        start("decider"),
        start("classifier", force=True),
        SaveBenchmarkConfig(command_id=CID, issued_at=NOW, config=config()),
        SetClassifierOverride(command_id=CID, issued_at=NOW, model="sim/c1"),
        start("decider", cid="other"),
    ],
    ids=["decider", "classifier-forced", "save", "override", "decider-other"],
)
def test_redeciding_a_command_gives_the_same_bytes(command: Command) -> None:
    a, b = decide(command, history=H_D1), decide(command, history=H_D1)
    assert [encode_event(e) for e in a.events] == [encode_event(e) for e in b.events]
    assert a.jobs == b.jobs


def test_run_and_event_ids_are_derived_from_the_command() -> None:
    a, again, other = decide(start(cid="A")), decide(start(cid="A")), decide(start(cid="B"))
    assert run_id_for("A") == run_id_for("A") != run_id_for("B")
    ids_a = [e.event_id for e in a.events]
    assert ids_a == [e.event_id for e in again.events]
    assert len(set(ids_a)) == len(ids_a)  # every event its own id
    assert not set(ids_a) & {e.event_id for e in other.events}
    assert {j.job_id for j in a.jobs}.isdisjoint({j.job_id for j in other.jobs})


def test_rejections_have_derived_ids_too() -> None:
    a = decide(start(cid="A"), AdminState())
    assert a.events[0].event_id == decide(start(cid="A"), AdminState()).events[0].event_id
    assert a.events[0].event_id != decide(start(cid="B"), AdminState()).events[0].event_id


# ---------------------------------------------------------------------------- keys
def test_event_keys_keep_a_run_together_and_admin_events_apart() -> None:
    run = decide(start())
    run_id = run_id_for(CID)
    assert {event_key(e) for e in run.events if not isinstance(e, CommandAccepted)} == {run_id}
    save = decide(SaveBenchmarkConfig(command_id=CID, issued_at=NOW, config=config()))
    assert {event_key(e) for e in save.events} == {ADMIN_KEY}


def test_evolve_admin_ignores_other_events() -> None:
    state = AdminState(config=config(), classifier_override="sim/c1")
    for e in decide(start()).events:
        assert evolve_admin(state, e) == state


# ---------------------------------------------------------------------------- the carry key
def _dispositions(out: CommandOutcome) -> dict[str, str]:
    return {
        e.model: type(e).__name__
        for e in out.events
        if isinstance(e, RunModelCarried | RunModelEnqueued)
    }


def test_an_edited_dataset_re_runs_that_kind_only() -> None:
    history = dict([record("decider", "sim/d1", "low")])
    history.update([record("classifier", "sim/c1", None)])
    edited = {**HASHES, "decider": "hash-d-after-an-edit"}
    decider = decide(start("decider"), history=history, hashes=edited)
    assert _dispositions(decider)["sim/d1"] == "RunModelEnqueued"
    started = next(e for e in decider.events if isinstance(e, RunStarted))
    assert started.dataset_hash == "hash-d-after-an-edit"
    classifier = decide(start("classifier", cid="cmd-2"), history=history, hashes=edited)
    assert _dispositions(classifier)["sim/c1"] == "RunModelCarried"


def test_other_repetitions_re_run_the_model() -> None:
    history = dict([record("decider", "sim/d1", "low")])
    same = decide(start(), history=history)
    assert _dispositions(same)["sim/d1"] == "RunModelCarried"
    more = decide(
        start(cid="cmd-3"), AdminState(config=config(deciderRepetitions=3)), history=history
    )
    assert _dispositions(more)["sim/d1"] == "RunModelEnqueued"


def test_records_from_before_the_key_carried_no_dataset_are_measured_again() -> None:
    old = ModelRecord(
        kind="decider",
        model="sim/d1",
        reasoning_effort="low",
        run_id="run-0",
        summaries=(summary("sim/d1"),),
    )
    out = decide(start(), history={old.key: old})
    assert _dispositions(out)["sim/d1"] == "RunModelEnqueued"
    assert history_key("decider", "sim/d1", "low", None, None) == old.key


# ---------------------------------------------------------------------------- harness
def harness_record(model: str, effort: Any, harness: Any) -> tuple[str, ModelRecord]:
    rec = ModelRecord(
        kind="decider",
        model=model,
        reasoning_effort=effort,
        run_id=f"run-{harness}",
        summaries=(summary(model, "low", harness=harness),),
        dataset_hash=HASHES["decider"],
        repetitions=2,
        harness=harness,
    )
    return rec.key, rec


@pytest.mark.parametrize(
    ("run_harness", "measured_by", "then_carried"),
    [
        ("builtin", "builtin", ["sim/d1"]),
        ("kilo", "kilo", ["sim/d1"]),
        ("kilo", "builtin", []),
        ("mini-swe-agent", "kilo", []),
        ("builtin", "kilo", []),
    ],
)
def test_results_carry_only_within_the_harness_that_measured_them(
    run_harness: Any, measured_by: Any, then_carried: list[str]
) -> None:
    history = dict([harness_record("sim/d1", "low", measured_by)])
    state = AdminState(config=config(deciderHarness=run_harness))
    out = decide(start(), state, history)
    carried = [e.model for e in out.events if isinstance(e, RunModelCarried)]
    assert carried == then_carried
    assert out.jobs and {j.harness for j in out.jobs} == {run_harness}
    started = next(e for e in out.events if e.type == "RunStarted")
    assert started.config.deciderHarness == run_harness  # type: ignore[attr-defined]


def test_builtin_adds_nothing_to_the_carry_key() -> None:
    plain = history_key("decider", "sim/d1", "low", "hash-d", 2)
    assert history_key("decider", "sim/d1", "low", "hash-d", 2, "builtin") == plain
    assert history_key("decider", "sim/d1", "low", "hash-d", 2, "kilo") != plain


def test_classifier_jobs_never_name_an_agent_cli() -> None:
    out = decide(start("classifier"), AdminState(config=config(deciderHarness="kilo")))
    assert out.jobs and {j.harness for j in out.jobs} == {"builtin"}
