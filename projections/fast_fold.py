"""The trusted fast path of replays: the two high-volume events folded straight from JSON.

CaseGraded and DecisionMade are folded from their decoded JSON object, skipping pydantic
validation (which costs ~15 us per CaseGraded: most of a replay's CPU). Only for payloads
at the current schema_version; anything missing or odd falls back to the validating
decoder. A unit test pins fast == typed for generated events.
"""

from __future__ import annotations

from collections.abc import Callable
from sys import intern as _intern
from typing import Any, Final

from contracts.events import CaseGraded, DecisionMade
from projections.fold import Row


def _fast_graded(d: dict[str, Any]) -> list[Row]:
    c = d.get("classification")
    cls: tuple[Any, ...] = (
        (
            c["taskType"],
            c["subtaskType"],
            c["reasoningComplexity"],
            c["contextComplexity"],
            c["executionMode"],
            c["requiresTools"],
            c["riskLevel"],
            c.get("fallback", False),
            c.get("fallback_reason"),
        )
        if c is not None
        else (None,) * 9
    )
    # Interned: a replay keeps every case result's key, and these repeat across events.
    run_id, model, case_id = _intern(d["run_id"]), _intern(d["model"]), _intern(d["case_id"])
    rep = d["rep"]
    rows: list[Row] = [
        (
            "case_results",
            (
                run_id,
                model,
                case_id,
                rep,
                d["event_id"],
                d["kind"],
                d["tier"],
                d["score"],
                d["latency_ms"],
                d["cost_usd"],
                d["timed_out"],
                d["job_id"],
                d.get("answer_excerpt"),
                d["occurred_at"],
                *cls,
            ),
        )
    ]
    diagnostics = d.get("diagnostics")
    if diagnostics:
        rows += [
            ("case_result_diagnostics", (run_id, model, case_id, rep, k, v))
            for k, v in diagnostics.items()
        ]
    return rows


def _fast_decision(d: dict[str, Any]) -> list[Row]:
    return [
        (
            "decisions",
            (
                d["decision_id"],
                d["event_id"],
                d["conversation_id"],
                d["model"],
                d["reasoning_effort"],
                d["tier"],
                d["sticky"],
                d["null_reason"],
                d["classifier_model"],
                d["classifier_cost_usd"],
                d["classification_fallback"],
                d["table_version"],
                d["latency_ms"],
                d["occurred_at"],
            ),
        )
    ]


FAST_FOLDERS: Final[dict[tuple[str, int], Callable[[dict[str, Any]], list[Row]]]] = {
    ("CaseGraded", CaseGraded.model_fields["schema_version"].default): _fast_graded,
    ("DecisionMade", DecisionMade.model_fields["schema_version"].default): _fast_decision,
}
"""Unvalidated folders by (type, current schema_version), for trusted replays."""
