"""One classification, made the same way by production /decide and the classifier benchmark.

The benchmark must measure what production does, so both call this one function: the
production prompt and parser, one retry of an empty answer (both costs count), and one
deadline for the whole call, retry included. Production passes the time left of its decide
budget; the benchmark passes the same budget minus margin, so a candidate's measured
timeouts are the ones /decide would have had.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from contracts.classification import Classification
from contracts.classifier_prompt import (
    CLASSIFIER_SYSTEM_PROMPT,
    classify_output,
    render_conversation,
)
from contracts.conversation import MessageLike
from contracts.local_classifier import is_local
from infra.local_classifiers import UnknownLocalClassifier, local_classifier
from infra.provider.errors import ProviderBadResponse, ProviderError, ProviderTimeout
from infra.provider.protocol import ChatProvider

EMPTY_ANSWER_RETRIES: Final = 1
"""An answer with no text is asked again this many times (a model's empty answer is often a
transient provider hiccup; a second try is cheap next to a null decision)."""


@dataclass(frozen=True, slots=True)
class ClassifierCall:
    """What one classification cost and gave."""

    classification: Classification | None
    """The parsed (or heuristic-fallback) classification; None when the deadline passed or
    the provider failed first."""
    text: str
    """The last answer's text ("" when none arrived)."""
    cost_usd: float | None
    """Sum of the costs reported by the attempts that answered; None when none reported one
    (an attempt abandoned at the deadline may still be billed, at a cost nobody told us)."""
    attempts: int
    """Requests sent: 1, or 2 when an empty answer was asked again."""
    latency_ms: float
    timed_out: bool
    error: ProviderError | None = None
    """The provider's error when it failed with something other than a timeout."""

    @property
    def attempted(self) -> bool:
        return self.attempts > 0


def _sum(costs: Sequence[float | None]) -> float | None:
    known = [c for c in costs if c is not None]
    return sum(known) if known else None


async def call_classifier(
    provider: ChatProvider,
    model: str,
    messages: Sequence[MessageLike],
    *,
    timeout_s: float,
    rendered: str | None = None,
    seed: int | None = None,
) -> ClassifierCall:
    """Classify `messages` with `model` within `timeout_s` (the whole call, retry included).

    `rendered` is `render_conversation(messages)` when the caller already has it. Never
    raises for the provider: timeouts and provider errors come back in the result.
    """
    if is_local(model):
        return _classify_locally(model, messages)
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout_s
    request = [
        {"role": "system", "content": CLASSIFIER_SYSTEM_PROMPT},
        {"role": "user", "content": rendered or render_conversation(messages)},
    ]
    costs: list[float | None] = []
    text = ""
    timed_out = False
    error: ProviderError | None = None
    attempts = 0
    try:
        # Both bounds: the client's own timeout, and a hard stop should anything in it (DNS,
        # a stuck connection pool) not honour it.
        async with asyncio.timeout_at(deadline):
            for _ in range(1 + EMPTY_ANSWER_RETRIES):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                attempts += 1
                reply = await provider.chat(
                    model=model, messages=request, timeout_s=remaining, seed=seed
                )
                costs.append(reply.cost_usd)
                text = reply.text or ""
                if text.strip():
                    break
    except (TimeoutError, ProviderTimeout):
        timed_out = True
    except ProviderError as e:
        error = e
    latency_ms = (loop.time() - started) * 1000.0
    classification = None if timed_out or error else classify_output(text, messages)
    return ClassifierCall(
        classification=classification,
        text=text,
        cost_usd=_sum(costs),
        attempts=attempts,
        latency_ms=latency_ms,
        timed_out=timed_out,
        error=error,
    )


def _classify_locally(model: str, messages: Sequence[MessageLike]) -> ClassifierCall:
    """A local classifier answers in-process: no provider, cost 0, its own latency.

    It runs on the event loop: a local classifier is a fast pure function (the keyword
    heuristic takes well under a millisecond), and a thread hop would cost more than it.
    """
    started = time.perf_counter()
    try:
        classification = local_classifier(model).classify(messages)
    except UnknownLocalClassifier as e:
        return ClassifierCall(None, "", None, 0, 0.0, False, ProviderBadResponse(str(e)))
    latency_ms = (time.perf_counter() - started) * 1000.0
    return ClassifierCall(
        classification=classification,
        text="",
        cost_usd=0.0,
        attempts=1,
        latency_ms=latency_ms,
        timed_out=False,
    )
