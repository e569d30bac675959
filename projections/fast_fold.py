"""The trusted fast path of replays: the high-volume events folded straight from their bytes.

CaseGraded, DecisionMade and ModelSummarized are decoded by msgspec into structs that hold
only the fields their rows need, declared in their tables' column order, so a row is a
slice of the struct's tuple (built in C). This skips pydantic validation (~15 us per
CaseGraded: most of a replay's CPU) and the intermediate dict of a JSON parse. Only payloads
at the current schema_version with UTC timestamps take it; anything missing, mistyped or
unknown raises in the decoder, and the validating decoder then says precisely what is
wrong. Unlike the validating path's rows, timestamps here are aware datetimes (what Postgres
would parse the ISO strings to). A unit test pins fast == typed for generated events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from sys import intern as _intern
from typing import Annotated, Any, Final, Literal

import msgspec
from pydantic import BaseModel

from contracts.classification import CLASSIFICATION_FIELDS, Classification
from contracts.events import DecisionMade
from projections.fold import Row

Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]


def _from_model(name: str, model: type[BaseModel], fields: tuple[str, ...]) -> Any:
    """A struct of `model`'s `fields`, in that order, with their types and defaults."""
    spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for f in fields:
        info = model.model_fields[f]
        spec.append(
            (f, info.annotation) if info.is_required() else (f, info.annotation, info.default)
        )
    return msgspec.defstruct(name, spec, forbid_unknown_fields=True, gc=False)


# the cls_* columns of case_results, in order
_Classification = _from_model(
    "_Classification", Classification, (*CLASSIFICATION_FIELDS, "fallback", "fallback_reason")
)


class _Graded(msgspec.Struct, tag_field="type", tag="CaseGraded", kw_only=True, gc=False):
    # case_results' columns up to occurred_at, in order
    run_id: str
    model: str
    case_id: str
    rep: int
    event_id: str
    kind: str
    tier: str
    score: float
    latency_ms: float
    cost_usd: float | None
    timed_out: bool
    job_id: str
    answer_excerpt: str | None = None
    occurred_at: Timestamp
    # then
    classification: _Classification | None = None  # type: ignore[valid-type]
    diagnostics: dict[str, str] = {}
    schema_version: Literal[1]  # CaseGraded's current one (a unit test pins it)


_NO_CLS: Final = (None,) * len(_Classification.__struct_fields__)
_GRADED_END: Final = _Graded.__struct_fields__.index("occurred_at") + 1


class _Decision(msgspec.Struct, tag_field="type", tag="DecisionMade", kw_only=True, gc=False):
    # decisions' columns, in order
    decision_id: str
    event_id: str
    conversation_id: str
    model: str | None
    reasoning_effort: str | None
    tier: str | None
    sticky: bool
    null_reason: str | None
    classifier_model: str
    classifier_cost_usd: float | None
    classification_fallback: bool
    table_version: str | None
    latency_ms: float
    decided_at: Timestamp = msgspec.field(name="occurred_at")
    # The billing fields came later, with defaults: events written before them lack them.
    user_id: str | None = None
    classifier_outcome: str = DecisionMade.model_fields["classifier_outcome"].default
    # then
    schema_version: Literal[1]


_DECISION_END: Final = _Decision.__struct_fields__.index("classifier_outcome") + 1


class _Summary(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    # model_summaries' columns after run_id up to source_run_id, in order
    model: str
    tier: str
    accuracy: float
    accuracy_lower_bound: float
    graded: int
    avg_cost_usd: float | None = None
    p95_latency_ms: float | None = None
    timeouts: int = 0
    carried: bool = False
    source_run_id: str | None = None
    # then
    harness: str | None = None


class _Summarized(msgspec.Struct, tag_field="type", tag="ModelSummarized", gc=False):
    run_id: str
    summary: _Summary
    occurred_at: Timestamp
    schema_version: Literal[1]


_astuple = msgspec.structs.astuple
_decode = msgspec.json.Decoder(_Graded | _Decision | _Summarized).decode
_FAILED = (msgspec.ValidationError, msgspec.DecodeError)


def fast_fold(raw: bytes) -> tuple[datetime, str, list[Row]] | None:
    """(occurred_at, type, rows) of a high-volume event; None if the validating path must
    decide (another type, another schema_version, a field missing or mistyped)."""
    try:
        e = _decode(raw)
    except _FAILED:
        return None
    if type(e) is _Graded:
        if e.occurred_at.tzinfo is not UTC:
            return None  # a non-UTC offset: the validating path refuses it
        t = _astuple(e)
        # Interned: a replay keeps every case result's key, and these repeat across events.
        key = (_intern(t[0]), _intern(t[1]), _intern(t[2]), t[3])
        c = e.classification
        rows: list[Row] = [
            (
                "case_results",
                key + t[4:_GRADED_END] + (_NO_CLS if c is None else _astuple(c)),
            )
        ]
        # A loop, not a comprehension: there is usually one entry, and a comprehension's
        # own frame costs more than its append (0.1 us per event).
        for k, v in e.diagnostics.items():
            rows.append(("case_result_diagnostics", (*key, k, v)))
        return e.occurred_at, "CaseGraded", rows
    if type(e) is _Decision:
        if e.decided_at.tzinfo is not UTC:
            return None
        return e.decided_at, "DecisionMade", [("decisions", _astuple(e)[:_DECISION_END])]
    if e.occurred_at.tzinfo is not UTC:
        return None
    s = _astuple(e.summary)
    return (
        e.occurred_at,
        "ModelSummarized",
        [("model_summaries", (e.run_id, *s[:-1], e.occurred_at, s[-1]))],
    )


FAST_STRUCTS: Final = {
    "CaseGraded": _Graded,
    "DecisionMade": _Decision,
    "ModelSummarized": _Summarized,
}
"""The structs `fast_fold` decodes, by event type."""
