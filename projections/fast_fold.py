"""The trusted fast path of replays: the two high-volume events folded straight from JSON.

CaseGraded and DecisionMade are folded from their decoded JSON object, skipping pydantic
validation (which costs ~15 us per CaseGraded: most of a replay's CPU). Only for payloads
at the current schema_version; anything missing or odd falls back to the validating
decoder. A unit test pins fast == typed for generated events.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from sys import intern as _intern
from typing import Any, Final

from contracts.classification import CLASSIFICATION_FIELDS
from contracts.events import CaseGraded, DecisionMade
from projections.fold import Row
from projections.tables import DECISION_BILLING, TABLE

_KEY = itemgetter("run_id", "model", "case_id", "rep")
_GRADED = itemgetter(
    "event_id", "kind", "tier", "score", "latency_ms", "cost_usd", "timed_out", "job_id"
)
_CLS = itemgetter(*CLASSIFICATION_FIELDS)
_NO_CLS = (None,) * 9
_DECISION = itemgetter(
    *(
        "occurred_at" if c == "decided_at" else c
        for c in TABLE["decisions"].columns
        if c not in DECISION_BILLING
    )
)
_OUTCOME_DEFAULT = DecisionMade.model_fields["classifier_outcome"].default
# itemgetter builds each row tuple in C: per event this is most of the folding cost.


def _fast_graded(d: dict[str, Any]) -> list[Row]:
    run_id, model, case_id, rep = _KEY(d)
    # Interned: a replay keeps every case result's key, and these repeat across events.
    key = (_intern(run_id), _intern(model), _intern(case_id), rep)
    c = d.get("classification")
    cls = _NO_CLS if c is None else (*_CLS(c), c.get("fallback", False), c.get("fallback_reason"))
    rows: list[Row] = [
        (
            "case_results",
            key + _GRADED(d) + (d.get("answer_excerpt"), d["occurred_at"]) + cls,
        )
    ]
    diagnostics = d.get("diagnostics")
    if diagnostics:
        rows += [("case_result_diagnostics", (*key, k, v)) for k, v in diagnostics.items()]
    return rows


def _fast_decision(d: dict[str, Any]) -> list[Row]:
    # The billing fields came later, with defaults: events written before them lack them.
    billing = (d.get("user_id"), d.get("classifier_outcome", _OUTCOME_DEFAULT))
    return [("decisions", _DECISION(d) + billing)]


FAST_FOLDERS: Final[dict[tuple[str, int], Callable[[dict[str, Any]], list[Row]]]] = {
    ("CaseGraded", CaseGraded.model_fields["schema_version"].default): _fast_graded,
    ("DecisionMade", DecisionMade.model_fields["schema_version"].default): _fast_decision,
}
"""Unvalidated folders by (type, current schema_version), for trusted replays."""
