"""Every decider reference solution re-derives its golden answer through DockerSandbox.

One container (one job), cases run serially, a fresh workspace before each case — the same
shape a benchmark job has. Shares `datasets.verify` (the pure judge) with the datasets CLI.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from contracts.decider_grading import run_check
from datasets.loader import load_decider_cases
from datasets.verify import verify_cases
from streams.docker_sandbox import DockerSandbox, ensure_image

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TEST_LABEL = "provenroute.test"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    c = docker.from_env()
    c.ping()
    ensure_image(c)
    yield c
    c.close()


async def test_reference_solutions_pass_through_the_sandbox(client: Any) -> None:
    cases = load_decider_cases()
    with_reference = [c for c in cases if c.reference]
    assert with_reference, "no decider case carries a reference solution"
    run_id = uuid.uuid4().hex[:12]
    t0 = time.monotonic()
    verdicts = await verify_cases(
        with_reference,
        lambda i: DockerSandbox(
            f"test-{run_id}:references:{i}:0", client=client, labels={TEST_LABEL: run_id}
        ),
        run_check,
        jobs=1,
    )
    elapsed = time.monotonic() - t0
    failed = [f"{v.case_id}: {v.detail}" for v in verdicts if not v.ok]
    assert not failed, "\n".join(failed)
    assert [v.status for v in verdicts] == ["passed"] * len(with_reference)
    assert client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={run_id}"}) == []
    print(f"{len(verdicts)} references verified in one container in {elapsed:.1f}s")
