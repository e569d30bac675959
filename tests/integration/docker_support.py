"""What the tests on the real Docker engine share: the engine, and finding a test's containers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker
import pytest

from streams.docker_sandbox import ensure_image

TEST_LABEL = "provenroute.test"
"""Every test container carries it (value: the test's run id), to be found and counted."""


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    """The engine, with the job image built when missing or stale. No daemon: a failure."""
    c = docker.from_env()
    c.ping()
    ensure_image(c)
    yield c
    c.close()


def ours(client: Any, run_id: str) -> list[Any]:
    """The containers of one test (running or not)."""
    while True:
        try:
            return client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={run_id}"})
        except docker.errors.NotFound:
            continue  # one went away between the listing and its inspection: list again
