"""Pure parts of the projections: folds, the fast path, dedup, diffs, migration files."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any, get_args, get_type_hints

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.synthetic import DEFAULT_MODELS, LogBuilder, SimModel
from contracts.codec import decode_event, encode_event
from contracts.envelope import EventBase
from contracts.events import EVENT_CLASSES, CaseGraded, ModelSummarized, RunStarted
from projections.bulk_restore import Deferred
from projections.bulk_writer import BulkClaims, BulkUnsupported
from projections.fast_fold import FAST_STRUCTS, fast_fold
from projections.fold import FOLDERS, Row, fold
from projections.migrate import load_migrations
from projections.tables import LOG_POSITION, POSITIONED, TABLE, TABLES
from projections.writer import group_rows


def _log() -> LogBuilder:
    b = LogBuilder(seed=3)
    cfg = b.config()
    b.decider_run("r1", cfg, cases=[("a", "low"), ("b", "medium"), ("c", "high")])
    b.classifier_run("c1", cfg, cases=6)
    b.decisions(20, "r1", ["sim/swift-mini"])
    b.decisions(3, None, [])
    b.override("sim/steady-medium")
    b.decider_run("r2", cfg, cases=[("a", "low"), ("b", "medium"), ("c", "high")])
    return b


def test_every_event_type_has_a_folder() -> None:
    assert set(FOLDERS) == set(EVENT_CLASSES.values())


def test_rows_match_their_tables_columns() -> None:
    for _topic, _key, event in _log().messages:
        for table, values in fold(event):
            # the projector appends the log position to positioned tables' rows
            width = len(TABLE[table].columns) - (
                len(LOG_POSITION) if TABLE[table].positioned else 0
            )
            assert len(values) == width, table


def test_a_positioned_row_comes_first_in_its_event() -> None:
    seen = set()
    for _topic, _key, event in _log().messages:
        rows = fold(event)
        for i, (table, _values) in enumerate(rows):
            if table in POSITIONED:
                assert i == 0, (type(event).__name__, table)
                seen.add(table)
    assert seen == POSITIONED


def test_children_come_after_their_parents() -> None:
    order = [t.name for t in TABLES]
    for t in TABLES:
        if t.parent:
            assert order.index(t.parent) < order.index(t.name)
            assert t.parent_key == TABLE[t.parent].key


def _fast(event: EventBase | dict[str, Any]) -> list[Row]:
    raw = encode_event(event) if isinstance(event, EventBase) else orjson.dumps(event)
    folded = fast_fold(raw)
    assert folded is not None
    occurred_at, type_name, rows = folded
    assert occurred_at == datetime.fromisoformat(orjson.loads(raw)["occurred_at"])
    assert type_name == orjson.loads(raw)["type"]
    return rows


def _with_datetimes(rows: list[Row]) -> list[Row]:
    """The validating path's rows with the timestamp columns parsed, as the fast path has them."""
    return [
        (
            table,
            tuple(
                datetime.fromisoformat(v) if c.endswith("_at") and v is not None else v
                for c, v in zip(TABLE[table].columns, values, strict=False)
            ),
        )
        for table, values in rows
    ]


def test_fast_path_folds_exactly_like_the_validating_path() -> None:
    checked: set[str] = set()
    for _topic, _key, event in _log().messages:
        if event.type not in FAST_STRUCTS:
            assert fast_fold(encode_event(event)) is None
            continue
        assert _fast(event) == _with_datetimes(fold(event))
        checked.add(event.type)
    assert checked == set(FAST_STRUCTS)


def test_fast_folded_events_have_the_shape_the_bulk_claims_take_on_trust() -> None:
    plans = BulkClaims([]).plans({t.name: [] for t in TABLES})
    shapes = set()
    for _topic, _key, event in _log().messages:
        folded = fast_fold(encode_event(event))
        if folded is not None:
            rows = folded[2]
            assert plans[rows[0][0]][1] is not None  # a root table: its keys are claimed
            assert BulkClaims.simple(rows, rows[0][0], plans), event.type
            shapes.add(len(rows))
    assert shapes == {1, 2}  # single rows, and a case result with a diagnostic


def test_fast_structs_decode_the_current_schema_versions() -> None:
    for type_name, struct in FAST_STRUCTS.items():
        event_class = EVENT_CLASSES[type_name]
        version = event_class.model_fields["schema_version"].default
        assert get_args(get_type_hints(struct)["schema_version"]) == (version,), type_name


def test_fast_path_leaves_odd_payloads_to_the_validating_path() -> None:
    graded = next(e for _t, _k, e in _log().messages if isinstance(e, CaseGraded))
    d = orjson.loads(encode_event(graded))
    for change in (
        {"schema_version": 2},
        {"occurred_at": "2026-01-01T02:00:00+02:00"},  # not UTC
        {"occurred_at": "2026-01-01T00:00:00"},  # naive
        {"rep": "1"},
        {"timed_out": None},
    ):
        assert fast_fold(orjson.dumps(d | change)) is None, change
    assert fast_fold(orjson.dumps({k: v for k, v in d.items() if k != "job_id"})) is None
    assert fast_fold(b"{not json") is None


def test_fast_decisions_read_the_billing_fields_and_do_without_them() -> None:
    b = LogBuilder(seed=4)
    b.decisions(2, "r1", ["sim/swift-mini"])
    first, second = (e for _t, _k, e in b.messages)
    billed = first.model_copy(
        update={"user_id": "u-7", "classifier_outcome": "timeout", "classifier_cost_usd": None}
    )
    assert _fast(billed) == _with_datetimes(fold(billed))
    old = orjson.loads(encode_event(second))  # written before the billing fields existed
    del old["user_id"], old["classifier_outcome"]
    assert _fast(old) == _with_datetimes(fold(decode_event(orjson.dumps(old))))


def test_fast_path_sees_classifications_and_missing_optionals() -> None:
    b = _log()
    graded = [e for _t, _k, e in b.messages if isinstance(e, CaseGraded)]
    with_cls = [e for e in graded if e.classification is not None]
    assert with_cls
    d = orjson.loads(encode_event(with_cls[0]))
    d.pop("answer_excerpt")
    d.pop("diagnostics")
    rows = _fast(d)
    assert rows == _with_datetimes([r for r in fold(with_cls[0]) if r[0] == "case_results"])
    summary = next(e for _t, _k, e in b.messages if isinstance(e, ModelSummarized))
    d = orjson.loads(encode_event(summary))
    for optional in ("avg_cost_usd", "p95_latency_ms", "timeouts", "source_run_id", "harness"):
        d["summary"].pop(optional)
    assert _fast(d) == _with_datetimes(fold(decode_event(orjson.dumps(d))))


def test_group_rows_keeps_the_first_occurrence_of_a_key() -> None:
    first = (
        "r",
        "m",
        "c",
        0,
        "e",
        "decider",
        "low",
        1.0,
        1.0,
        0.1,
        False,
        "j",
        None,
        "t",
        *(None,) * 9,
    )
    second = (*first[:7], 0.0, *first[8:])
    grouped = group_rows([[("case_results", first)], [("case_results", second)]])
    assert grouped == {"case_results": [first]}


def _run_started_twice() -> tuple[list[Row], list[Row]]:
    """Two RunStarted for one run: the second re-emitted with a longer model list."""
    b = LogBuilder(seed=4)
    cfg = b.config()
    b.decider_run("r1", cfg, cases=[("a", "low")])
    started = next(e for _t, _k, e in b.messages if isinstance(e, RunStarted))
    more = cfg.model_copy(update={"classifierModels": (*cfg.classifierModels, "sim/extra")})
    return fold(started), fold(started.model_copy(update={"config": more}))


def test_a_refolded_parent_never_grafts_children_onto_the_first_version() -> None:
    first, second = _run_started_twice()
    grouped = group_rows([first, second])
    assert grouped["run_config_classifier_models"] == [
        v for t, v in first if t == "run_config_classifier_models"
    ]
    # the bulk path keeps the same rows, in one batch or across batches
    for batches in ([[first, second]], [[first], [second]]):
        claims = BulkClaims([])
        got: dict[str, list[Any]] = {}
        for events in batches:
            for t, rows in claims.claim(events).items():
                got.setdefault(t, []).extend(rows)
        assert {t: v for t, v in got.items() if v} == grouped


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_synthetic_runs_carry_models_measured_earlier() -> None:
    b = LogBuilder()
    cfg = b.config()
    b.decider_run("r1", cfg, cases=[("a", "low"), ("b", "medium"), ("c", "high")])
    new = SimModel("sim/new-one", {"low": 0.9, "medium": 0.9, "high": 0.9}, 0.001, 100)
    cfg2 = b.config((*DEFAULT_MODELS, new))
    done = b.decider_run(
        "r2", cfg2, (*DEFAULT_MODELS, new), cases=[("a", "low"), ("b", "medium"), ("c", "high")]
    )
    types = [e.type for _t, _k, e in b.messages]
    assert types.count("RunModelCarried") == len(DEFAULT_MODELS)
    assert "RoutingTablePublished" in [e.type for e in done]


# ---- property: duplicates and cross-partition reordering change nothing ----------------

Store = dict[str, dict[Any, tuple[Any, ...]]]


def live_apply(store: Store, events: list[list[Row]]) -> None:
    """One live batch, as `write_rows` does it: `group_rows`, then per table in order
    INSERT ... ON CONFLICT DO NOTHING, children only under parents inserted by this batch."""
    grouped = group_rows(events)
    fresh: dict[str, set[Any]] = {}
    for spec in TABLES:
        rows = grouped.get(spec.name, [])
        if spec.parent is not None:
            idx = [spec.columns.index(c) for c in spec.parent_key]
            rows = [r for r in rows if tuple(r[i] for i in idx) in fresh.get(spec.parent, set())]
        table = store.setdefault(spec.name, {})
        for r in rows:
            key = spec.key_of(r)
            if key not in table:
                table[key] = r
                fresh.setdefault(spec.name, set()).add(key)


def rows_of(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(v.values(), key=repr) for t, v in store.items() if v}


def _streams() -> list[list[EventBase]]:
    """A small log cut into its ordered streams: one per partition key (a run, a
    conversation, the admin key). Kafka keeps each in order and may interleave them."""
    b = LogBuilder(seed=8)
    cfg = b.config(DEFAULT_MODELS[:2])
    b.decider_run(
        "r1", cfg, DEFAULT_MODELS[:2], cases=[("a", "low"), ("b", "medium"), ("c", "high")]
    )
    b.classifier_run("c1", cfg, cases=3)
    b.decisions(6, "r1", ["sim/swift-mini"])
    b.decider_run(
        "r2", cfg, DEFAULT_MODELS[:2], cases=[("a", "low"), ("b", "medium"), ("c", "high")]
    )
    by_key: dict[str, list[EventBase]] = {}
    for _topic, key, event in b.messages:
        by_key.setdefault(key, []).append(event)
    return list(by_key.values())


STREAMS = _streams()
IN_ORDER = [e for stream in STREAMS for e in stream]
# orphans are errors, not part of this property: the runs come before their results
FK_TO_RUNS = [
    Deferred(t.name, f"{t.name}_run_id_fkey", "f", "", ("run_id",), "runs", ("run_id",))
    for t in TABLES
    if "run_id" in t.columns and t.parent is None and t.name != "runs"
]


def _baseline() -> dict[str, list[tuple[Any, ...]]]:
    store: Store = {}
    live_apply(store, [fold(e) for e in IN_ORDER])
    return rows_of(store)


BASELINE = _baseline()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rnd=st.randoms(use_true_random=False),
    dup_rate=st.floats(0.0, 0.6),
    batch=st.integers(1, 40),
)
def test_duplicated_and_reordered_deliveries_leave_the_rows_unchanged(
    rnd: random.Random, dup_rate: float, batch: int
) -> None:
    # Interleave the streams (each stays in order), then deliver copies of any event again
    # anywhere after it: the redeliveries of an at-least-once log.
    cursors = [0] * len(STREAMS)
    log: list[EventBase] = []
    while len(log) < len(IN_ORDER):
        i = rnd.choice([i for i, s in enumerate(STREAMS) if cursors[i] < len(s)])
        log.append(STREAMS[i][cursors[i]])
        cursors[i] += 1
    for event in list(log):
        if rnd.random() < dup_rate:
            at = rnd.randrange(log.index(event) + 1, len(log) + 1)
            log.insert(at, event)

    folded = [fold(e) for e in log]
    batches = [folded[i : i + batch] for i in range(0, len(folded), batch)]
    store: Store = {}
    for events in batches:
        live_apply(store, events)
    assert rows_of(store) == BASELINE

    # the bulk replay's in-memory rules give the same rows
    claims = BulkClaims(FK_TO_RUNS)
    bulk: Store = {}
    for events in batches:
        for table, rows in claims.claim(events).items():
            spec = TABLE[table]
            bulk.setdefault(table, {}).update((spec.key_of(r), r) for r in rows)
    assert rows_of(bulk) == BASELINE


def test_the_bulk_rules_refuse_an_orphan() -> None:
    graded = next(e for e in IN_ORDER if isinstance(e, CaseGraded))
    with pytest.raises(BulkUnsupported, match="orphan"):
        BulkClaims(FK_TO_RUNS).claim([fold(graded)])
