"""`provenroute run start --kind decider --force --wait` returns when the run ends, whatever
the workers went through: here the only worker is SIGKILLed mid-run and restarted (real
Kafka, Docker and processes; SIMULATED provider)."""

from __future__ import annotations

import subprocess
import sys
import time

from contracts.events import CaseGraded, RunCompleted
from tests.e2e.conftest import E2E_TIMEOUT_S, Pipeline
from tests.e2e.test_pipeline_decider import THREE_MODELS


def test_waiting_cli_returns_after_a_sigkilled_worker_is_restarted(
    slow_pipeline: Pipeline,
) -> None:
    p = slow_pipeline
    p.start_worker()
    p.save_config(THREE_MODELS)
    log = open(p.workdir / "cli-wait.log", "wb")  # noqa: SIM115 - closed below
    cli = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "run", "start", "--kind", "decider", "--force", "--wait"],
        env=p.worker_env(),
        cwd=p.workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        p.wait(lambda evs: sum(isinstance(e, CaseGraded) for e in evs) >= 20)
        p.worker.kill9()
        assert cli.poll() is None, "the run ended before the kill: nothing was tested"
        p.start_worker()
        evs = p.wait(lambda evs: any(isinstance(e, RunCompleted) for e in evs))
        done = next(e for e in evs if isinstance(e, RunCompleted))
        deadline = time.monotonic() + E2E_TIMEOUT_S
        while cli.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        out = (p.workdir / "cli-wait.log").read_text(errors="replace")
        assert cli.poll() == 0, f"the waiting CLI did not return after the run ended:\n{out}"
        assert f"run {done.run_id}: decider, completed" in out
        assert "routing table" in out
    finally:
        if cli.poll() is None:
            cli.kill()
        cli.wait()
        log.close()
