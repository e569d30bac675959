"""Wiring the real worker: datasets, provider clients, Docker sandboxes, the Faust app."""

from __future__ import annotations

from api.settings import Settings
from datasets.loader import load_classifier_cases, load_decider_cases
from streams.app import Worker
from streams.execution import CaseExecutor


def build_worker(settings: Settings, *, app_id: str | None = None) -> Worker:
    classifier = {c.id: c for c in load_classifier_cases()}
    decider = {c.id: c for c in load_decider_cases()}
    executor = CaseExecutor(settings, classifier_cases=classifier, decider_cases=decider)
    return Worker(
        settings,
        executor=executor,
        case_ids={"classifier": sorted(classifier), "decider": sorted(decider)},
        app_id=app_id,
    )
