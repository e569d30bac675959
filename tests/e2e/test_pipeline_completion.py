"""Run completion cannot be lost (real Kafka, real worker processes; SIMULATED provider).

The crash windows are injected deterministically with PROVENROUTE_FAULT (streams.faults):
the worker exits right after saving a run's last result, before RunCompleted is sent; or
the send of RunCompleted fails once. Either way the run completes exactly once."""

from __future__ import annotations

from contracts.events import CaseGraded, RunCompleted
from streams import faults
from tests.e2e.conftest import E2E_TIMEOUT_S, Pipeline
from tests.e2e.test_pipeline_decider import THREE_MODELS

CONFIG = THREE_MODELS.model_copy(update={"classifierModels": ("sim/flash-lite",)})


def test_worker_killed_after_the_last_result_is_saved_still_completes_the_run(
    idle_pipeline: Pipeline,
) -> None:
    p = idle_pipeline
    crashing = p.start_worker(**{faults.FAULT_ENV: faults.EXIT_AFTER_LAST_RESULT_SAVED})
    p.save_config(CONFIG)
    run_id = p.start_run("classifier")
    assert crashing.proc.wait(timeout=E2E_TIMEOUT_S) == faults.CRASH_EXIT_CODE, p.diagnostics()
    before = p.events()
    expected = next(e for e in before if type(e).__name__ == "CaseJobsFannedOut")
    keys = {(e.model, e.case_id, e.rep) for e in before if isinstance(e, CaseGraded)}
    assert len(keys) == expected.expected_results  # type: ignore[attr-defined]
    assert not any(isinstance(e, RunCompleted) for e in before), "crashed too late"

    p.start_worker()
    run = p.run(run_id)
    done = run.completed
    assert (done.graded, done.ungraded) == (expected.expected_results, 0)  # type: ignore[attr-defined]
    assert len({e.event_id for e in run.of(RunCompleted)}) == 1


def test_a_failed_send_of_run_completed_is_retried_by_the_sweep(pipeline: Pipeline) -> None:
    p = pipeline
    p.stop()
    worker = p.start_worker(**{faults.FAULT_ENV: faults.FAIL_RUN_COMPLETED_SEND_ONCE})
    p.save_config(CONFIG)
    run = p.run(p.start_run("classifier"))
    assert run.completed.graded == len({(e.model, e.case_id, e.rep) for e in run.graded})
    assert "injected fault at " + faults.FAIL_RUN_COMPLETED_SEND_ONCE in worker.tail(400)


def test_a_job_message_lost_after_its_release_is_sent_again(idle_pipeline: Pipeline) -> None:
    p = idle_pipeline
    worker = p.start_worker(
        **{faults.FAULT_ENV: faults.DROP_FIRST_JOB, "PROVENROUTE_RUN_STALL_RESEND_S": "5"}
    )
    p.save_config(CONFIG)
    run = p.run(p.start_run("classifier"))
    done = run.completed
    assert (done.graded, done.ungraded) == (done.expected, 0)
    assert done.expected == len({(e.model, e.case_id, e.rep) for e in run.graded})
    log = worker.tail(2000)
    assert "injected fault at " + faults.DROP_FIRST_JOB in log
    assert "no worker holds it: re-sending it" in log
