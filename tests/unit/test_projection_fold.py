"""Pure parts of the projections: folds, the fast path, dedup, diffs, migration files."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from contracts.codec import encode_event
from contracts.events import EVENT_CLASSES, CaseGraded
from projections.fold import FAST_FOLDERS, FOLDERS, fold
from projections.migrate import load_migrations
from projections.queries import Candidate, TableAt, diff_tables
from projections.synthetic import DEFAULT_MODELS, LogBuilder, SimModel
from projections.tables import TABLE, TABLES
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
            assert len(values) == len(TABLE[table].columns), table


def test_children_come_after_their_parents() -> None:
    order = [t.name for t in TABLES]
    for t in TABLES:
        if t.parent:
            assert order.index(t.parent) < order.index(t.name)
            assert t.parent_key == TABLE[t.parent].key


def test_fast_path_folds_exactly_like_the_validating_path() -> None:
    checked = 0
    for _topic, _key, event in _log().messages:
        d = orjson.loads(encode_event(event))
        fast = FAST_FOLDERS.get((d["type"], d["schema_version"]))
        if fast is None:
            continue
        assert fast(d) == fold(event)
        checked += 1
    assert checked > 40


def test_fast_path_sees_classifications_and_missing_optionals() -> None:
    b = _log()
    graded = [e for _t, _k, e in b.messages if isinstance(e, CaseGraded)]
    with_cls = [e for e in graded if e.classification is not None]
    assert with_cls
    d = orjson.loads(encode_event(with_cls[0]))
    d.pop("answer_excerpt")
    d.pop("diagnostics")
    rows = FAST_FOLDERS[("CaseGraded", 1)](d)
    assert rows == [r for r in fold(with_cls[0]) if r[0] == "case_results"]


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
    grouped = group_rows([("case_results", first), ("case_results", second)])
    assert grouped == {"case_results": [first]}


def _table(version: str, cands: list[tuple[str, int, str, float, float, bool]]) -> TableAt:
    return TableAt(
        version,
        version,
        datetime(2026, 1, 1, tzinfo=UTC),
        0.7,
        3.0,
        "point",
        tuple(
            Candidate(t, r, m, "medium", acc, acc, cost, None, 10, ok)
            for t, r, m, acc, cost, ok in cands
        ),
    )


def test_diff_explains_entries_exits_and_rank_changes() -> None:
    a = _table(
        "r1",
        [
            ("low", 1, "x", 0.9, 0.1, True),
            ("low", 2, "y", 0.95, 0.5, True),
            ("medium", 1, "z", 0.8, 1.0, True),
        ],
    )
    b = _table(
        "r2",
        [
            ("low", 1, "y", 0.95, 0.05, True),
            ("low", 2, "x", 0.9, 0.1, True),
            ("medium", 1, "z", 0.85, 1.0, True),
            ("medium", 2, "w", 0.5, 0.1, False),
        ],
    )
    kinds = {(c.tier, c.model): c.kind for c in diff_tables(a, b).changes}
    assert kinds == {
        ("low", "x"): "rank_down",
        ("low", "y"): "rank_up",
        ("medium", "z"): "numbers",
        ("medium", "w"): "entered",
    }
    text = {c.model: c.explain() for c in diff_tables(a, b).changes}
    assert "$0.500000/case -> acc 0.950 (meets threshold), $0.050000/case" in text["y"]
    gone = diff_tables(b, a).changes
    assert any(c.kind == "left" and c.model == "w" for c in gone)


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
