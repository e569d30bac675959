"""Every decider reference solution re-derives its golden answer through DockerSandbox.

One container (one job), cases run serially, a fresh workspace before each case — the same
shape a benchmark job has. Shares `datasets.verify` (the pure judge) with the datasets CLI.

Tasks that change files are graded on the workspace: for every case with a hidden post-check,
the post-check fails on the untouched workspace and passes once the reference has done the
work; every reference without one leaves the workspace as it found it.
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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

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
    by_id = {c.id: c for c in with_reference}
    post_checked = [v for v in verdicts if by_id[v.case_id].post_check is not None]
    assert post_checked, "no decider case carries a post-check"
    untouched_passes = [v.case_id for v in post_checked if v.post_check_untouched is not False]
    assert untouched_passes == [], "post-checks that pass without the work"
    reference_fails = [v.case_id for v in post_checked if v.post_check_done is not True]
    assert reference_fails == [], "post-checks that fail on the reference's workspace"
    changed = [v.case_id for v in verdicts if v.workspace_changed is not False]
    assert sorted(changed) == sorted(v.case_id for v in post_checked)
    assert client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={run_id}"}) == []
    print(
        f"{len(verdicts)} references ({len(post_checked)} with post-checks) verified in one "
        f"container in {elapsed:.1f}s"
    )
