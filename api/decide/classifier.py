"""Classifier-model resolution and one classification within a deadline.

Resolution: admin override -> benchmark winner -> built-in default. The inputs are what the
live holder has in memory; a failed winner read leaves the override untouched (they are
loaded and kept separately), so a healthy override is never discarded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from contracts.classification import Classification
from contracts.classifier_prompt import (
    CLASSIFIER_SYSTEM_PROMPT,
    classify_output,
    render_conversation,
)
from contracts.conversation import MessageLike
from contracts.routing_table import ClassifierWinner
from infra.provider.protocol import ChatProvider

ClassifierSource = Literal["override", "winner", "default"]


@dataclass(frozen=True, slots=True)
class ResolvedClassifier:
    model: str
    source: ClassifierSource


def resolve_classifier_model(
    override: str | None, winner: ClassifierWinner | None, default: str
) -> ResolvedClassifier:
    """Admin override, else the benchmark winner, else the built-in default."""
    if override:
        return ResolvedClassifier(override, "override")
    if winner is not None:
        return ResolvedClassifier(winner.model, "winner")
    return ResolvedClassifier(default, "default")


def content_hash(rendered: str) -> str:
    """Hash of the classifier's user content (what the classifier actually sees)."""
    return hashlib.blake2b(rendered.encode("utf-8"), digest_size=16).hexdigest()


def render(messages: Sequence[MessageLike]) -> str:
    """The classifier's user content; raises ValueError for an empty conversation."""
    return render_conversation(messages)


@dataclass(frozen=True, slots=True)
class Classified:
    classification: Classification
    cost_usd: float | None
    latency_ms: float


async def classify(
    provider: ChatProvider,
    model: str,
    rendered: str,
    messages: Sequence[MessageLike],
    timeout_s: float,
) -> Classified:
    """Ask `model` to classify; unparseable output becomes the heuristic fallback.

    Provider errors (timeout, unavailable, auth...) propagate: the caller answers null.
    """
    result = await provider.chat(
        model=model,
        messages=[
            {"role": "system", "content": CLASSIFIER_SYSTEM_PROMPT},
            {"role": "user", "content": rendered},
        ],
        timeout_s=timeout_s,
    )
    text = getattr(result, "text", None) or ""
    cost = getattr(result, "cost_usd", None)
    latency = float(getattr(result, "latency_ms", 0.0))
    return Classified(classify_output(text, messages), cost, latency)
