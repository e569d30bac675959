"""Gateway client of POST /decide: decide within the budget, else fall back.

`DecideClient.resolve` never raises and never takes longer than the budget (plus a few
milliseconds of scheduling): on a decision it returns the decided model and its pinned
reasoning effort; on a null decision, a timeout or any error it returns the configured
fallback model, and `path` says which of these happened.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

Path = Literal["decided", "null", "timeout", "error"]
REPLICA_HEADER = "x-provenroute-replica"


@dataclass(frozen=True)
class Resolution:
    model: str
    """The model to serve."""
    reasoning_effort: str | None
    """The decided model's pinned effort; None on a fallback."""
    path: Path
    """decided, or why the fallback was served: null (with `reason`), timeout, error."""
    reason: str | None
    """The null reason or the error; None when decided."""
    decision: dict[str, Any] | None
    """The full /decide answer when one arrived in time."""
    elapsed_ms: float
    served_by: str | None = None
    """The decide replica that answered (its `X-Provenroute-Replica` header), if any."""

    @property
    def fallback(self) -> bool:
        return self.path != "decided"


class DecideClient:
    def __init__(
        self,
        base_url: str,
        internal_secret: str,
        *,
        fallback_model: str,
        budget_s: float = 2.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.fallback_model = fallback_model
        self.budget_s = budget_s
        self._headers = {"Authorization": f"Bearer {internal_secret}"}
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
        )

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> DecideClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def resolve(
        self,
        conversation_id: str,
        messages: Sequence[Mapping[str, Any]],
        hints: Mapping[str, Any] | None = None,
    ) -> Resolution:
        started = time.perf_counter()
        body: dict[str, Any] = {"conversationId": conversation_id, "messages": list(messages)}
        if hints:
            body["hints"] = dict(hints)

        def fallback(
            path: Path,
            reason: str | None,
            decision: dict[str, Any] | None = None,
            served_by: str | None = None,
        ) -> Resolution:
            return Resolution(
                self.fallback_model,
                None,
                path,
                reason,
                decision,
                (time.perf_counter() - started) * 1000.0,
                served_by,
            )

        try:
            async with asyncio.timeout(self.budget_s):
                response = await self._http.post(
                    f"{self.base_url}/decide",
                    json=body,
                    headers=self._headers,
                    timeout=self.budget_s,
                )
        except (TimeoutError, httpx.TimeoutException):
            return fallback("timeout", f"no answer within {self.budget_s:.2f}s")
        except Exception as e:
            return fallback("error", f"{type(e).__name__}: {e}"[:300])
        served_by = response.headers.get(REPLICA_HEADER)
        if response.status_code != 200:
            return fallback("error", f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            decision = response.json()
        except ValueError:
            return fallback("error", "answer is not JSON")
        model = decision.get("model") if isinstance(decision, dict) else None
        if not isinstance(model, str) or not model:
            reason = decision.get("nullReason") if isinstance(decision, dict) else None
            return fallback(
                "null",
                reason if isinstance(reason, str) else "null decision",
                decision if isinstance(decision, dict) else None,
                served_by,
            )
        return Resolution(
            model,
            decision.get("reasoningEffort"),
            "decided",
            None,
            decision,
            (time.perf_counter() - started) * 1000.0,
            served_by,
        )


DEMO_CONVERSATIONS: tuple[tuple[str, list[dict[str, str]]], ...] = (
    ("demo-easy", [{"role": "user", "content": "Rename the variable tmp to total in utils.py"}]),
    ("demo-bug", [{"role": "user", "content": "Fix the off-by-one bug in the pagination helper"}]),
    (
        "demo-design",
        [
            {
                "role": "user",
                "content": (
                    "Design the architecture of a multi-region payment system with "
                    "exactly-once settlement, fraud checks and an audit trail; it runs in "
                    "production and handles real money, so think about data loss and security."
                ),
            }
        ],
    ),
)


async def demo_conversations(
    base_urls: str | Sequence[str], internal_secret: str, fallback_model: str
) -> list[Resolution]:
    """Send a few conversations (one of them twice: the second turn is sticky) and print
    each decision and the replica that gave it; with several replicas the turns go round
    robin over them, so a conversation anchored on one is served sticky by another."""
    urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
    clients = [DecideClient(u, internal_secret, fallback_model=fallback_model) for u in urls]
    try:
        # Fresh conversation ids each time: the first turns have no incumbent yet.
        run = uuid.uuid4().hex[:6]
        turns: list[tuple[str, list[dict[str, str]]]] = [
            (f"{cid}-{run}", msgs) for cid, msgs in DEMO_CONVERSATIONS
        ]
        cid, first = turns[1]
        # Right after its first turn, so with two replicas it lands on the other one.
        turns.insert(
            2,
            (
                cid,
                [
                    *first,
                    {"role": "assistant", "content": "Done: the loop bound was off by one."},
                    {"role": "user", "content": "Thanks. Also add a test for it."},
                ],
            ),
        )
        answers: list[Resolution] = []
        for i, (cid, messages) in enumerate(turns):
            if i:
                await asyncio.sleep(0.5)  # the model's answer between two turns
            r = await clients[i % len(clients)].resolve(cid, messages)
            answers.append(r)
            d = r.decision or {}
            print(
                f"{cid:19} turn {sum(m['role'] == 'user' for m in messages)} "
                f"via {r.served_by or '?'}: "
                f"{r.path:8} model={r.model} effort={r.reasoning_effort} tier={d.get('tier')} "
                f"sticky={d.get('sticky')} classifier={d.get('classifierModel')} "
                f"cost=${d.get('classifierCostUsd')} {r.reason or ''} ({r.elapsed_ms:.0f} ms)"
            )
        return answers
    finally:
        for c in clients:
            await c.aclose()
