"""Local classifiers: classifier candidates that run in-process, with no provider call.

A local classifier is benchmarked on the same cases, graded the same way and chosen by the
same winner rule as an LLM classifier; its cost is 0 and its latency is what it really
takes. Its name starts with :data:`LOCAL_PREFIX` so a config, an override or a winner can
name it like any model. Implement :class:`LocalClassifier` (pure: no IO, deterministic) and
register it (see `infra/local_classifiers.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from contracts.classification import Classification
from contracts.classifier_heuristic import heuristic_classification
from contracts.conversation import MessageLike

LOCAL_PREFIX: Final = "local/"
"""Model names starting with it are served in-process by a registered local classifier."""


class LocalClassifier(Protocol):
    """One small interface: a name and a pure function from a conversation to a label."""

    @property
    def name(self) -> str:
        """`local/<something>`: how configs, overrides and winners name it."""
        ...

    def classify(self, messages: Sequence[MessageLike]) -> Classification:
        """The classification of the conversation (`fallback` False: it is the answer)."""
        ...


def is_local(model: str) -> bool:
    return model.startswith(LOCAL_PREFIX)


class KeywordHeuristic:
    """The keyword heuristic that is also the LLM classifiers' fallback, as a candidate."""

    name: Final = "local/heuristic"

    def classify(self, messages: Sequence[MessageLike]) -> Classification:
        found = heuristic_classification(messages, reason="local classifier")
        return found.model_copy(update={"fallback": False, "fallback_reason": None})
