"""Wiring the real worker: topics, datasets, provider clients, Docker sandboxes, Faust."""

from __future__ import annotations

import asyncio
import logging

from contracts.cases import dataset_hash
from datasets.loader import load_classifier_cases, load_decider_cases
from infra.provider.conditions import probe_conditions
from infra.settings import Settings
from streams.app import Worker
from streams.execution import CaseExecutor
from streams.heartbeats import read_live_set
from streams.kafka_admin import ensure_topics
from streams.topics import WORKER_HEARTBEATS

log = logging.getLogger("provenroute.worker")


def prepare_host(settings: Settings) -> None:
    """Before the worker starts: its topics exist with the right shapes (an auto-created
    topic would get one partition and finite retention), containers left by dead workers are
    removed, and a missing job image is said plainly instead of failing every decider job."""
    asyncio.run(ensure_topics(settings.kafka_bootstrap, settings.topic_prefix))
    try:
        import docker
        from docker.errors import DockerException, ImageNotFound

        from streams.janitor import remove_stale_containers

        board = asyncio.run(
            read_live_set(settings.kafka_bootstrap, settings.topic(WORKER_HEARTBEATS.name))
        )
        client = docker.from_env(timeout=10)
        try:
            removed = remove_stale_containers(client, board)
            if removed:
                log.warning("removed %d job containers of dead workers", len(removed))
            client.images.get(settings.docker_image)
        except ImageNotFound:
            log.error(
                "job image %s is missing: decider jobs will fail until `make image` builds it",
                settings.docker_image,
            )
        finally:
            client.close()
    except DockerException as e:
        log.error("docker engine not reachable (%s): decider jobs will fail", e)


def build_worker(settings: Settings, *, app_id: str | None = None) -> Worker:
    classifier = {c.id: c for c in load_classifier_cases()}
    decider = {c.id: c for c in load_decider_cases()}
    if settings.worker_decider_cases:
        wanted = {c.strip() for c in settings.worker_decider_cases.split(",") if c.strip()}
        unknown = wanted - decider.keys()
        if unknown:
            raise ValueError(f"worker_decider_cases names unknown cases: {sorted(unknown)}")
        decider = {k: v for k, v in decider.items() if k in wanted}
    executor = CaseExecutor(
        settings,
        classifier_cases=classifier,
        decider_cases=decider,
    )
    return Worker(
        settings,
        executor=executor,
        case_ids={"classifier": sorted(classifier), "decider": sorted(decider)},
        conditions=lambda: probe_conditions(settings),
        dataset_hashes={
            "classifier": dataset_hash(classifier.values()),
            "decider": dataset_hash(decider.values()),
        },
        app_id=app_id,
        prewarm=executor.prewarm,
    )
