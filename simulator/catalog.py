"""The dataset cases the simulated provider recognises, indexed by content hash.

A request is a dataset case when `content_hash` of its FIRST user message's content is:
- a decider case's `prompt`, or
- a classifier case's rendered classifier content, `build_classifier_messages(case.messages)
  [1]["content"]` — exactly what the production classifier sends.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from contracts.cases import ClassifierCase, DeciderCase, content_hash
from contracts.classifier_prompt import build_classifier_messages

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseRef:
    kind: Literal["classifier", "decider"]
    case: ClassifierCase | DeciderCase


@dataclass(frozen=True)
class CaseIndex:
    by_hash: dict[str, CaseRef]

    def __len__(self) -> int:
        return len(self.by_hash)

    def lookup(self, first_user_content: str) -> tuple[str, CaseRef | None]:
        digest = content_hash(first_user_content)
        return digest, self.by_hash.get(digest)

    @classmethod
    def build(cls, classifier: list[ClassifierCase], decider: list[DeciderCase]) -> CaseIndex:
        by_hash: dict[str, CaseRef] = {}
        for d in decider:
            by_hash[content_hash(d.prompt)] = CaseRef("decider", d)
        for c in classifier:
            rendered = build_classifier_messages(list(c.messages))[1]["content"]
            by_hash[content_hash(rendered)] = CaseRef("classifier", c)
        return cls(by_hash)


def classifier_case_hash(case: ClassifierCase) -> str:
    """The hash a classifier request for `case` carries."""
    return content_hash(build_classifier_messages(list(case.messages))[1]["content"])


def decider_case_hash(case: DeciderCase) -> str:
    return content_hash(case.prompt)


def load_cases(root: Path | None = None) -> tuple[list[ClassifierCase], list[DeciderCase]]:
    """Both datasets, via the datasets loader; while a dataset is being edited and does not
    validate as a whole, the cases that do validate are still served."""
    from datasets.loader import DatasetError, load_classifier_cases, load_decider_cases

    out: list[list[ClassifierCase] | list[DeciderCase]] = []
    for name, strict, model in (
        ("classifier", load_classifier_cases, ClassifierCase),
        ("decider", load_decider_cases, DeciderCase),
    ):
        try:
            out.append(strict(root))  # type: ignore[operator]
        except DatasetError as e:
            log.warning("dataset %s has problems, serving its valid cases only: %s", name, e)
            out.append(_tolerant_load(root, name, model))  # type: ignore[arg-type]
    return out[0], out[1]  # type: ignore[return-value]


def _tolerant_load(
    root: Path | None, name: str, model: type[ClassifierCase] | type[DeciderCase]
) -> list[ClassifierCase] | list[DeciderCase]:
    from datasets.loader import PACKAGE_ROOT

    base = (root or PACKAGE_ROOT) / name
    cases = []
    for path in sorted(base.glob("*.json")):
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for item in items if isinstance(items, list) else []:
            try:
                cases.append(model.model_validate(item))
            except ValidationError:
                continue
    return cases  # type: ignore[return-value]
