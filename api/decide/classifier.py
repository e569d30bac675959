"""Classifier-model resolution and the classifier's cache key (the call itself is
`infra.classifier_call`, shared with the classifier benchmark).

Resolution: admin override -> benchmark winner -> built-in default. The inputs are what the
live holder has in memory; a failed winner read leaves the override untouched (they are
loaded and kept separately), so a healthy override is never discarded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from contracts.classifier_prompt import render_conversation
from contracts.conversation import MessageLike
from contracts.routing_table import ClassifierWinner

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
