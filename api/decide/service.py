"""One /decide answer: resolve the classifier, classify (cached), derive the tier, pick.

Nothing here awaits Postgres or Kafka: the routing state is in memory (`LiveRouting`),
sessions are read from this replica's copy of the sessions log (a sessions problem means a
fresh pick, never a null decision), and the decision event, session update and log line
leave through queues. The only await is the classifier call, bounded
so the answer comes inside the budget; every failure becomes a null decision with a reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson

from api.decide.classifier import (
    ResolvedClassifier,
    content_hash,
    render,
    resolve_classifier_model,
)
from api.decide.emitter import Emitter
from api.decide.ids import new_decision_id
from api.decide.live import LiveRouting
from api.decide.metrics import DecideMetrics
from api.decide.session_record import (
    cached_classification,
    remember_classification,
    with_incumbent,
)
from api.decide.sessions import Sessions
from contracts.classification import Classification
from contracts.codec import encode_event
from contracts.decision import decide_model, next_session_state
from contracts.events import DecisionMade
from contracts.tiers import derive_tier
from infra.classifier_call import call_classifier
from infra.clock import utc_now
from infra.provider.protocol import ChatProvider

log = logging.getLogger("provenroute.decide")
decision_log = logging.getLogger("provenroute.decide.decisions")
"""One JSON object per decision, at INFO. Give it a `JsonLinesHandler` (as `provenroute
serve` does) and the line skips the logging machinery: no LogRecord, no per-line flush."""


# Kept over a library on purpose (issue 12.8). Measured with `python -m bench.decide
# --rates 2000,3000 --seconds 5 --step 0` on the shared 2-core machine, three alternating
# runs each: python-json-logger 4.2 (OrjsonFormatter) behind a QueueHandler/QueueListener,
# records built with makeLogRecord (no caller lookup), cost 172-208 us of server CPU per
# request against 118-151 us with this handler (+45 % or more: the listener thread wakes
# for every record and contends for the GIL), and sustained 1,640-2,417 req/s at a 3,000
# target against 2,683-2,747 (-10 % to -40 %). In isolation the library path costs about
# 11.5 us of CPU per line against 1.3-2.9 us here.
class JsonLinesHandler(logging.Handler):
    """Writes each message as one line to a binary stream, buffered: a batch is flushed
    when it reaches `max_bytes` or `interval_s` after its first line (on the running event
    loop; at once when there is none), and on close.

    `DecideService` hands it ready-made JSON bytes through `write_line`, bypassing
    `Logger.info` (which costs a LogRecord, a caller lookup and a flush per line); records
    from elsewhere still arrive through `emit`.
    """

    def __init__(
        self, stream: IO[bytes], *, interval_s: float = 0.05, max_bytes: int = 64 * 1024
    ) -> None:
        super().__init__()
        self.stream = stream
        self.interval_s = interval_s
        self.max_bytes = max_bytes
        self._lines: list[bytes] = []
        self._size = 0

    def write_line(self, line: bytes) -> None:
        lines = self._lines
        if not lines:
            try:
                asyncio.get_running_loop().call_later(self.interval_s, self.flush)
            except RuntimeError:  # no loop: write through
                lines.append(line)
                self.flush()
                return
        lines.append(line)
        self._size += len(line) + 1
        if self._size >= self.max_bytes:
            self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record).encode())
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        if not self._lines:
            return
        data = b"\n".join(self._lines) + b"\n"
        self._lines = []
        self._size = 0
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError):  # closed or broken stream: drop, never raise
            pass

    def close(self) -> None:
        self.flush()
        super().close()


def _direct_handler(logger: logging.Logger) -> JsonLinesHandler | None:
    """The logger's `JsonLinesHandler`, when it is the only place a record would go."""
    handlers = logger.handlers
    if len(handlers) == 1 and not logger.propagate and not logger.filters:
        handler = handlers[0]
        if (
            type(handler) is JsonLinesHandler
            and handler.level <= logging.INFO
            and not handler.filters
        ):
            return handler
    return None


DUMPED_ENTRIES = 2_000
"""Cached classifications kept dumped for answers (the hottest conversations')."""


@dataclass(frozen=True, slots=True)
class DecideConfig:
    budget_s: float
    margin_s: float
    default_classifier_model: str
    decisions_topic: str


class DecideService:
    def __init__(
        self,
        config: DecideConfig,
        *,
        live: LiveRouting,
        sessions: Sessions | None,
        provider: ChatProvider,
        emitter: Emitter,
        metrics: DecideMetrics,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.config = config
        self.live = live
        self.sessions = sessions
        self.provider = provider
        self.emitter = emitter
        self.metrics = metrics
        self.clock = clock
        # Label children resolved once: `labels()` costs a lock and a dict build per call.
        self._cache_hit = metrics.classification_cache.labels("hit")
        self._cache_miss = metrics.classification_cache.labels("miss")
        self._latency = {
            True: metrics.decide_latency.labels("decision"),
            False: metrics.decide_latency.labels("null"),
        }
        self._decided: dict[tuple[str, str, bool], Any] = {}
        self._nulls: dict[str, Any] = {}
        self._dumped: dict[int, tuple[Classification, dict[str, Any]]] = {}

    def classifier(self) -> ResolvedClassifier:
        live = self.live
        return resolve_classifier_model(
            live.override, live.winner, self.config.default_classifier_model
        )

    async def decide(
        self,
        conversation_id: str,
        messages: Sequence[dict[str, Any]],
        hints: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The /decide answer (camelCase dict, see `models.DecideResponse`); never raises."""
        started = time.perf_counter()
        deadline = started + self.config.budget_s - self.config.margin_s
        answer: dict[str, Any] = {
            "decisionId": new_decision_id(),
            "conversationId": conversation_id,
            "model": None,
            "reasoningEffort": None,
            "tier": None,
            "sticky": False,
            "classification": None,
            "classifierModel": None,
            "classifierSource": None,
            "classifierCostUsd": None,
            "classifierOutcome": "not_called",
            "classifierLatencyMs": None,
            "classificationCached": False,
            "tableVersion": None,
            "nullReason": None,
            "latencyMs": 0.0,
        }
        fallback = False
        try:
            fallback = await self._decide(answer, conversation_id, messages, deadline)
        except Exception:  # never a 5xx: the gateway falls back to its default
            log.exception("decide failed for conversation %r", conversation_id)
            answer.update(
                model=None, reasoningEffort=None, sticky=False, nullReason="internal_error"
            )
        elapsed = time.perf_counter() - started
        answer["latencyMs"] = round(elapsed * 1000.0, 3)
        self._account(answer, elapsed, fallback, hints)
        return answer

    async def _decide(
        self,
        answer: dict[str, Any],
        conversation_id: str,
        messages: Sequence[dict[str, Any]],
        deadline: float,
    ) -> bool:
        """Fills `answer`; returns whether the classification was a heuristic fallback."""
        resolved = self.classifier()
        answer["classifierModel"] = resolved.model
        answer["classifierSource"] = resolved.source
        sessions = self.sessions
        table = self.live.table
        if table is None:
            # No table, no decision: do not spend a classifier call on it.
            answer["nullReason"] = "no_routing_table"
            return False
        rendered = render(messages)
        digest = content_hash(rendered)
        record = sessions.get(conversation_id) if sessions is not None else None
        classification = cached_classification(record, resolved.model, digest)
        if classification is not None:
            self._cache_hit.inc()
            answer["classificationCached"] = True
            answer["classifierOutcome"] = "cached"
        else:
            self._cache_miss.inc()
            classification = await self._classify(
                answer, resolved.model, rendered, messages, deadline
            )
            if classification is None:
                return False
        tier = derive_tier(classification)
        incumbent = record.incumbent if record is not None else None
        decision = decide_model(table, tier, classification, incumbent)
        answer.update(
            tier=tier,
            classification=self._as_json(classification, cached=answer["classificationCached"]),
            model=decision.model,
            reasoningEffort=decision.reasoning_effort,
            sticky=decision.sticky,
            tableVersion=decision.table_version,
            nullReason=decision.null_reason,
        )
        updated = with_incumbent(
            remember_classification(record, resolved.model, digest, classification),
            next_session_state(incumbent, decision, classification),
        )
        if sessions is not None:
            sessions.update(conversation_id, record, updated)
        return classification.fallback

    async def _classify(
        self,
        answer: dict[str, Any],
        model: str,
        rendered: str,
        messages: Sequence[dict[str, Any]],
        deadline: float,
    ) -> Classification | None:
        started = time.perf_counter()
        call = await call_classifier(
            self.provider, model, messages, timeout_s=deadline - started, rendered=rendered
        )
        # Billed whatever came of it: an attempt abandoned at the deadline still counts as
        # attempted, at the cost the provider reported for what did answer (or unknown).
        answer["classifierCostUsd"] = call.cost_usd
        answer["classifierLatencyMs"] = round(call.latency_ms, 3)
        if call.timed_out:
            self._observe_classifier("timeout", started)
            answer["classifierOutcome"] = "timeout"
            answer["nullReason"] = "classifier_timeout"
            return None
        if call.error is not None or call.classification is None:
            self._observe_classifier("error", started)
            log.warning("classifier %s failed: %s", model, call.error)
            answer["classifierOutcome"] = "error"
            answer["nullReason"] = "classifier_error"
            return None
        outcome = "fallback" if call.classification.fallback else "ok"
        self._observe_classifier(outcome, started)
        answer["classifierOutcome"] = outcome
        return call.classification

    def _as_json(self, classification: Classification, *, cached: bool) -> dict[str, Any]:
        """The answer's `classification`, dumped once per cached classification: a cache hit
        hands back the very object the sessions' parsed-record cache holds."""
        if not cached:
            return classification.model_dump(mode="json")
        key = id(classification)
        hit = self._dumped.get(key)
        if hit is not None and hit[0] is classification:
            return hit[1]
        dumped = classification.model_dump(mode="json")
        if len(self._dumped) >= DUMPED_ENTRIES:
            self._dumped.clear()
        # Holding the object keeps its id from being reused while the entry lives.
        self._dumped[key] = (classification, dumped)
        return dumped

    def _observe_classifier(self, outcome: str, started: float) -> None:
        self.metrics.classifier_latency.labels(outcome).observe(time.perf_counter() - started)

    # ---- accounting (metrics, the decision event, the log line) -------------------------

    def _account(
        self, answer: dict[str, Any], elapsed: float, fallback: bool, hints: dict[str, Any] | None
    ) -> None:
        reason = answer["nullReason"]
        if reason is None:
            key = (answer["tier"], answer["model"], answer["sticky"])
            counter = self._decided.get(key)
            if counter is None:
                counter = self._decided[key] = self.metrics.decisions.labels(
                    key[0], key[1], str(key[2]).lower()
                )
        else:
            counter = self._nulls.get(reason)
            if counter is None:
                counter = self._nulls[reason] = self.metrics.null_decisions.labels(reason)
        counter.inc()
        self._latency[reason is None].observe(elapsed)
        occurred_at = self.clock()
        conversation_id = answer["conversationId"]
        user = hints.get("user_id") if hints else None
        user_id = user if isinstance(user, str) and user else None
        self.emitter.enqueue(
            "decision",
            self.config.decisions_topic,
            conversation_id.encode(),
            lambda: _decision_event(answer, fallback, occurred_at, user_id),
        )
        if decision_log.isEnabledFor(logging.INFO):
            line = orjson.dumps(
                {
                    "event": "decision",
                    "at": occurred_at,
                    "decision_id": answer["decisionId"],
                    "conversation_id": conversation_id,
                    "model": answer["model"],
                    "reasoning_effort": answer["reasoningEffort"],
                    "tier": answer["tier"],
                    "sticky": answer["sticky"],
                    "null_reason": reason,
                    "classifier_model": answer["classifierModel"],
                    "classifier_source": answer["classifierSource"],
                    "classifier_cost_usd": answer["classifierCostUsd"],
                    "classifier_outcome": answer["classifierOutcome"],
                    "classification_cached": answer["classificationCached"],
                    "classification_fallback": fallback,
                    "table_version": answer["tableVersion"],
                    "latency_ms": answer["latencyMs"],
                    "hints": hints,
                }
            )
            direct = _direct_handler(decision_log)
            if direct is not None:
                direct.write_line(line)
            else:
                decision_log.info(line.decode())


def _decision_event(
    answer: dict[str, Any], fallback: bool, occurred_at: str, user_id: str | None
) -> bytes:
    event = DecisionMade(
        event_id=answer["decisionId"],
        occurred_at=occurred_at,
        decision_id=answer["decisionId"],
        user_id=user_id,
        conversation_id=answer["conversationId"],
        model=answer["model"],
        reasoning_effort=answer["reasoningEffort"],
        tier=answer["tier"],
        sticky=answer["sticky"],
        null_reason=answer["nullReason"],
        classifier_model=answer["classifierModel"] or "unresolved",
        classifier_cost_usd=answer["classifierCostUsd"],
        classifier_outcome=answer["classifierOutcome"],
        classification_fallback=fallback,
        table_version=answer["tableVersion"],
        latency_ms=answer["latencyMs"],
    )
    return encode_event(event)
