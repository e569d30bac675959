"""The /decide orchestration with fakes: stickiness, the trust rule, the cache, the budget,
classifier resolution and the live state's independent loads."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import pytest

from api.decide.classifier import render, resolve_classifier_model
from api.decide.live import LiveRouting
from api.decide.metrics import DecideMetrics
from api.decide.service import DecideConfig, DecideService
from api.decide.session_record import (
    SessionRecord,
    cached_classification,
    remember_classification,
    successor,
    write_needed,
)
from contracts.classification import Classification
from contracts.classifier_prompt import build_classifier_messages
from contracts.routing_table import ClassifierWinner, RoutingCandidate, RoutingTable
from infra.provider.errors import ProviderUnavailable

LOW = {
    "reasoningComplexity": "low",
    "contextComplexity": "low",
    "executionMode": "single_turn",
    "riskLevel": "low",
}
HIGH = {
    "reasoningComplexity": "high",
    "contextComplexity": "high",
    "executionMode": "autonomous",
    "riskLevel": "high",
}


def answer(levels: dict[str, str]) -> str:
    return json.dumps(
        {"taskType": "debugging", "subtaskType": "bug_fix", "requiresTools": False, **levels}
    )


@dataclass
class Result:
    text: str
    cost_usd: float | None = 0.001
    latency_ms: float = 1.0


class FakeProvider:
    """Answers by the last user message: a JSON classification, `hang`, `error` or garbage;
    a list scripts successive calls for the same message."""

    def __init__(self, script: dict[str, str | list[str]]) -> None:
        self.script = script
        self.calls: list[tuple[str, float | None]] = []

    async def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        timeout_s: float | None = None,
        **_: Any,
    ) -> Result:
        self.calls.append((model, timeout_s))
        last = messages[-1]["content"].rsplit("### user\n", 1)[-1].strip()
        scripted = self.script[last]
        what = scripted.pop(0) if isinstance(scripted, list) else scripted
        if what == "hang":
            await asyncio.sleep(3600)
        if what == "error":
            raise ProviderUnavailable("down", model=model)
        return Result(what)


class FakeSessions:
    """The `Sessions` hot-path contract over a dict; `ready=False` acts as degraded."""

    def __init__(self) -> None:
        self.records: dict[str, SessionRecord] = {}
        self.ready = True
        self.puts = 0
        self.degraded = 0

    def get(self, cid: str) -> SessionRecord | None:
        if not self.ready:
            self.degraded += 1
            return None
        return self.records.get(cid)

    def update(self, cid: str, base: SessionRecord | None, updated: SessionRecord) -> None:
        if not self.ready or not write_needed(base, updated, 0.0, 1e9):
            return
        self.records[cid] = successor(base, updated, self.records.get(cid), now=0.0, writer="t")
        self.puts += 1


class FakeEmitter:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def enqueue(self, kind: str, topic: str, key: bytes, value: Any) -> bool:
        self.sent.append((kind, value() if callable(value) else value))
        return True


class FakeReadModel:
    def __init__(self) -> None:
        self.table: RoutingTable | None = None
        self.winner: ClassifierWinner | None = None
        self.override: str | None = None
        self.fail: set[str] = set()

    async def latest_routing_table(self) -> RoutingTable | None:
        if "table" in self.fail:
            raise OSError("db down")
        return self.table

    async def latest_classifier_winner(self) -> ClassifierWinner | None:
        if "winner" in self.fail:
            raise OSError("db down")
        return self.winner

    async def classifier_override(self) -> str | None:
        if "override" in self.fail:
            raise OSError("db down")
        return self.override


def cand(model: str, cost: float, meets: bool = True) -> RoutingCandidate:
    return RoutingCandidate(
        model=model,
        reasoningEffort="medium",
        accuracy=0.9,
        accuracyLowerBound=0.8,
        avgCostUsd=cost,
        graded=10,
        meetsThreshold=meets,
    )


def table(
    version: str,
    low: list[RoutingCandidate],
    high: list[RoutingCandidate] | None = None,
    factor: float = 3.0,
) -> RoutingTable:
    high = high or low
    return RoutingTable(
        version=version,
        published_at="2026-01-01T00:00:00Z",
        minAccuracy=0.7,
        switchCostFactor=factor,
        tiers={"low": tuple(low), "medium": tuple(low), "high": tuple(high)},
    )


def make(
    script: dict[str, str | list[str]], budget_s: float = 2.0
) -> tuple[DecideService, FakeReadModel, FakeSessions, FakeProvider, FakeEmitter]:
    rm = FakeReadModel()
    live = LiveRouting(rm, listen_url="", schema="s")  # type: ignore[arg-type]
    sessions, provider, emitter = FakeSessions(), FakeProvider(script), FakeEmitter()
    service = DecideService(
        DecideConfig(
            budget_s=budget_s,
            margin_s=0.15,
            default_classifier_model="sim/default",
            decisions_topic="t.decisions",
        ),
        live=live,
        sessions=sessions,  # type: ignore[arg-type]
        provider=provider,
        emitter=emitter,  # type: ignore[arg-type]
        metrics=DecideMetrics(),
    )
    return service, rm, sessions, provider, emitter


def user(*texts: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in texts:
        if out:
            out.append({"role": "assistant", "content": "ok"})
        out.append({"role": "user", "content": t})
    return out


async def test_incumbent_kept_within_factor_and_switched_beyond_it() -> None:
    service, rm, _, _, _ = make({"a": answer(LOW), "b": answer(LOW), "c": answer(LOW)})
    rm.table = table("v1", [cand("m/mid", 0.03)])
    await service.live.reload()
    first = await service.decide("c1", user("a"))
    assert (first["model"], first["sticky"]) == ("m/mid", False)
    # A cheaper model appears, within the factor (0.03 <= 3 * 0.012): keep the incumbent.
    rm.table = table("v2", [cand("m/cheap", 0.012), cand("m/mid", 0.03)])
    await service.live.reload()
    kept = await service.decide("c1", user("a", "b"))
    assert (kept["model"], kept["sticky"], kept["tableVersion"]) == ("m/mid", True, "v2")
    # Cheaper by more than the factor (0.03 > 3 * 0.009): switch.
    rm.table = table("v3", [cand("m/cheaper", 0.009), cand("m/mid", 0.03)])
    await service.live.reload()
    switched = await service.decide("c1", user("a", "b", "c"))
    assert (switched["model"], switched["sticky"]) == ("m/cheaper", False)
    # The new incumbent is the fresh pick: nothing cheaper is passed over, so not sticky.
    again = await service.decide("c1", user("a", "b", "c", "a"))
    assert (again["model"], again["sticky"]) == ("m/cheaper", False)


async def test_fallback_classification_never_reanchors_the_session() -> None:
    service, rm, sessions, _, _ = make({"a": answer(LOW), "b": "not json at all"})
    rm.table = table("v1", [cand("m/low", 0.01)], high=[cand("m/high", 0.05)])
    await service.live.reload()
    await service.decide("c1", user("a"))
    assert sessions.records["c1"].incumbent.model == "m/low"  # type: ignore[union-attr]
    fb = await service.decide("c1", user("a", "b"))
    assert fb["classification"]["fallback"] is True and fb["model"] is not None
    assert sessions.records["c1"].incumbent.model == "m/low"  # type: ignore[union-attr]
    # ... and the fallback is not cached: the same request asks the classifier again.
    record = sessions.records["c1"]
    rendered = render(user("a", "b"))
    from api.decide.classifier import content_hash

    assert cached_classification(record, "sim/default", content_hash(rendered)) is None


async def test_cached_classification_skips_the_classifier_and_reports_no_cost() -> None:
    service, rm, _, provider, emitter = make({"a": answer(HIGH)})
    rm.table = table("v1", [cand("m/low", 0.01)], high=[cand("m/high", 0.05)])
    await service.live.reload()
    one = await service.decide("c1", user("a"))
    two = await service.decide("c1", user("a"))
    assert len(provider.calls) == 1
    assert one["tier"] == two["tier"] == "high" and one["model"] == "m/high"
    assert one["classifierCostUsd"] == 0.001 and two["classifierCostUsd"] is None
    assert two["classificationCached"] is True
    # Another conversation does not share the cache.
    await service.decide("c2", user("a"))
    assert len(provider.calls) == 2
    decisions = [json.loads(v) for k, v in emitter.sent if k == "decision"]
    assert [d["type"] for d in decisions] == ["DecisionMade"] * 3
    assert decisions[0]["classifier_cost_usd"] == 0.001


async def test_hanging_classifier_yields_a_null_decision_inside_the_budget() -> None:
    service, rm, sessions, _, _ = make({"a": "hang"}, budget_s=0.5)
    rm.table = table("v1", [cand("m/low", 0.01)])
    await service.live.reload()
    started = time.perf_counter()
    out = await service.decide("c1", user("a"))
    elapsed = time.perf_counter() - started
    assert out["model"] is None and out["nullReason"] == "classifier_timeout"
    assert elapsed < 0.5
    assert "c1" not in sessions.records


def _events(emitter: FakeEmitter) -> list[dict[str, Any]]:
    return [json.loads(v) for k, v in emitter.sent if k == "decision"]


async def test_an_empty_answer_is_asked_again_once_and_both_costs_are_billed() -> None:
    service, rm, _, provider, emitter = make({"a": ["", answer(HIGH)], "b": ["", " ", "x"]})
    rm.table = table("v1", [cand("m/low", 0.01)], high=[cand("m/high", 0.05)])
    await service.live.reload()
    out = await service.decide("c1", user("a"), {"user_id": "u-7"})
    assert len(provider.calls) == 2
    assert out["classification"]["fallback"] is False and out["model"] == "m/high"
    assert out["classifierCostUsd"] == pytest.approx(0.002)
    # Twice empty: no third call; the heuristic classifies (as in the benchmark).
    twice = await service.decide("c2", user("b"))
    assert len(provider.calls) == 4
    assert twice["classification"]["fallback"] is True
    [first, second] = _events(emitter)
    assert (first["user_id"], first["classifier_outcome"]) == ("u-7", "ok")
    assert first["classifier_cost_usd"] == pytest.approx(0.002)
    assert (second["user_id"], second["classifier_outcome"]) == (None, "fallback")


async def test_a_timed_out_classifier_call_is_recorded_as_attempted() -> None:
    service, rm, _, _, emitter = make({"a": "hang", "b": ["", "hang"]}, budget_s=0.5)
    rm.table = table("v1", [cand("m/low", 0.01)])
    await service.live.reload()
    nothing_known = await service.decide("c1", user("a"), {"user_id": "u-1"})
    half_known = await service.decide("c2", user("b"), {"user_id": "u-1"})
    assert nothing_known["nullReason"] == half_known["nullReason"] == "classifier_timeout"
    assert nothing_known["classifierCostUsd"] is None
    assert half_known["classifierCostUsd"] == 0.001  # the empty first answer was billed
    events = _events(emitter)
    assert [e["classifier_outcome"] for e in events] == ["timeout", "timeout"]
    assert [e["classifier_cost_usd"] for e in events] == [None, 0.001]
    assert {e["user_id"] for e in events} == {"u-1"}


async def test_classifier_error_and_no_table_are_null_decisions_unready_sessions_are_not() -> None:
    service, rm, sessions, provider, _ = make({"a": "error"})
    await service.live.reload()
    assert (await service.decide("c1", user("a")))["nullReason"] == "no_routing_table"
    assert provider.calls == []  # no table: no classifier spend
    rm.table = table("v1", [cand("m/low", 0.01)])
    await service.live.reload()
    assert (await service.decide("c1", user("a")))["nullReason"] == "classifier_error"
    # Sessions degraded: a fresh pick, never a null decision.
    provider.script["b"] = answer(LOW)
    sessions.ready = False
    fresh = await service.decide("c1", user("b"))
    assert (fresh["model"], fresh["sticky"], fresh["nullReason"]) == ("m/low", False, None)
    assert sessions.degraded == 1 and "c1" not in sessions.records


def test_resolution_chain() -> None:
    winner = ClassifierWinner(run_id="r", model="w/model", accuracy=0.9, reason="x")
    assert resolve_classifier_model("o/model", winner, "d/model").source == "override"
    assert resolve_classifier_model(None, winner, "d/model").model == "w/model"
    assert resolve_classifier_model(None, None, "d/model").source == "default"


async def test_a_failing_winner_read_keeps_the_healthy_override() -> None:
    service, rm, _, provider, _ = make({"a": answer(LOW)})
    rm.table = table("v1", [cand("m/low", 0.01)])
    rm.override = "o/pinned"
    rm.winner = ClassifierWinner(run_id="r", model="w/model", accuracy=0.9, reason="x")
    await service.live.reload()
    rm.fail = {"winner"}
    rm.winner = None
    await service.live.reload()
    assert service.live.errors["winner"] and service.live.override == "o/pinned"
    out = await service.decide("c1", user("a"))
    assert (out["classifierModel"], out["classifierSource"]) == ("o/pinned", "override")
    assert provider.calls[0][0] == "o/pinned"
    rm.fail = {"override"}  # an override read failing keeps the previous override too
    await service.live.reload()
    assert service.live.override == "o/pinned" and service.live.table is not None


def test_classifier_request_matches_the_production_prompt() -> None:
    messages = user("a", "b")
    assert build_classifier_messages(messages)[1]["content"] == render(messages)


def test_cache_keeps_the_newest_entries_and_refuses_fallbacks() -> None:
    c = Classification.model_validate(json.loads(answer(LOW)))
    record = None
    for i in range(6):
        record = remember_classification(record, "m", f"h{i}", c)
    assert record is not None
    assert [e.content_hash for e in record.classifications] == ["h5", "h4", "h3", "h2"]
    fb = c.model_copy(update={"fallback": True, "fallback_reason": "x"})
    assert remember_classification(record, "m", "h9", fb) == record
    assert cached_classification(record, "other", "h5") is None


@pytest.mark.parametrize("bad", [{"x": 1}, {"incumbent": {"model": "m"}}])
def test_session_records_are_strict(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SessionRecord.model_validate(bad)


# ---- the hot path's hand-rolled validation agrees with DecideRequest ------------------------

FAST_CASES: list[object] = [
    {"conversationId": "c", "messages": [{"role": "user", "content": "hi"}]},
    {"conversationId": "c", "messages": [{"role": "user", "content": None, "name": "n"}]},
    {
        "conversationId": "c",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "x", "n": None}, "y"]},
            {"role": "assistant", "tool_calls": [{"id": "1"}], "extra": {"k": None}, "z": None},
        ],
        "hints": {"user_id": "u", "requested_model": None, "other": [1, None]},
    },
    {"conversationId": "c", "messages": [{"role": "user"}], "hints": None},
    {"conversationId": "c", "messages": [{"role": "user"}], "hints": {}},
    {"conversation_id": "c", "messages": [{"role": "user"}]},  # alias: pydantic decides
    # invalid, each in its own way
    {"messages": [{"role": "user"}]},
    {"conversationId": "", "messages": [{"role": "user"}]},
    {"conversationId": "x" * 201, "messages": [{"role": "user"}]},
    {"conversationId": 7, "messages": [{"role": "user"}]},
    {"conversationId": "c", "messages": []},
    {"conversationId": "c", "messages": {}},
    {"conversationId": "c", "messages": [{"content": "no role"}]},
    {"conversationId": "c", "messages": [{"role": ""}]},
    {"conversationId": "c", "messages": [{"role": "r" * 65}]},
    {"conversationId": "c", "messages": [{"role": "user", "content": 5}]},
    {"conversationId": "c", "messages": [{"role": "user", "content": [5]}]},
    {"conversationId": "c", "messages": [{"role": "user", "name": "n" * 257}]},
    {"conversationId": "c", "messages": [{"role": "user", "tool_calls": ["x"]}]},
    {"conversationId": "c", "messages": ["user"]},
    {"conversationId": "c", "messages": [{"role": "user"}], "bogus": 1},
    {"conversationId": "c", "messages": [{"role": "user"}], "hints": {"user_id": 3}},
    {"conversationId": "c", "messages": [{"role": "user"}], "hints": {"user_id": "u" * 201}},
    {"conversationId": "c", "messages": [{"role": "user"}], "hints": []},
    [],
    "text",
]


@pytest.mark.parametrize("data", FAST_CASES)
def test_parse_fast_accepts_a_subset_of_decide_request_and_dumps_the_same(data: object) -> None:
    from pydantic import ValidationError

    from api.decide.models import DecideRequest, parse_fast

    fast = parse_fast(data)
    try:
        model = DecideRequest.model_validate(data)
    except ValidationError:
        assert fast is None  # never accepts what the model rejects
        return
    if fast is None:  # unusual but valid: the slow path serves it
        assert isinstance(data, dict) and "conversation_id" in data
        return
    cid, messages, hints = fast
    assert cid == model.conversationId
    dumped = [m.model_dump(exclude_none=True) for m in model.messages]
    assert messages == dumped
    assert [list(m) for m in messages] == [list(m) for m in dumped]  # key order too
    assert hints == (model.hints.model_dump(exclude_none=True) if model.hints else None)


def test_json_lines_handler_buffers_and_flushes() -> None:
    import io
    import logging

    from api.decide.service import JsonLinesHandler

    stream = io.BytesIO()
    handler = JsonLinesHandler(stream, max_bytes=20)  # type: ignore[arg-type]
    handler.write_line(b'{"a":1}')  # no running loop: written through
    assert stream.getvalue() == b'{"a":1}\n'
    handler.emit(logging.makeLogRecord({"msg": "plain"}))
    assert stream.getvalue().endswith(b"plain\n")


async def test_json_lines_handler_flushes_on_the_loop() -> None:
    import io

    from api.decide.service import JsonLinesHandler

    stream = io.BytesIO()
    handler = JsonLinesHandler(stream, interval_s=0.01)  # type: ignore[arg-type]
    handler.write_line(b"1")
    handler.write_line(b"2")
    assert stream.getvalue() == b""  # buffered
    await asyncio.sleep(0.05)
    assert stream.getvalue() == b"1\n2\n"
    handler.write_line(b"3")
    handler.close()
    assert stream.getvalue() == b"1\n2\n3\n"
