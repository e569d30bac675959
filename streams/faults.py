"""Deterministic fault injection for tests of the worker's crash windows.

`PROVENROUTE_FAULT` names one or more points (comma-separated). Unset, every hook is a
no-op. Used by the end-to-end tests to crash a real worker process exactly where a
crash would hurt (e.g. after the last result is saved, before RunCompleted is sent).
"""

from __future__ import annotations

import logging
import os
import sys

FAULT_ENV = "PROVENROUTE_FAULT"
CRASH_EXIT_CODE = 137
"""What a SIGKILLed process reports, so the test sees the same thing as a kill -9."""

EXIT_AFTER_LAST_RESULT_SAVED = "exit-after-last-result-saved"
FAIL_RUN_COMPLETED_SEND_ONCE = "fail-run-completed-send-once"
DROP_FIRST_JOB = "drop-first-job"
"""The first case job this worker receives is acked and never run: a lost job message."""

log = logging.getLogger("provenroute.faults")
_fired: set[str] = set()


class InjectedFault(RuntimeError):
    """A failure a test asked for."""


def armed(point: str) -> bool:
    return point in os.environ.get(FAULT_ENV, "").split(",")


def crash_here(point: str) -> None:
    """Exit the process at once, without any clean-up, if `point` is armed."""
    if armed(point):
        log.critical("injected crash at %s", point)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)


def first_time(point: str) -> bool:
    """True the first time an armed `point` is reached in this process."""
    if armed(point) and point not in _fired:
        _fired.add(point)
        log.critical("injected fault at %s", point)
        return True
    return False


def fail_once(point: str) -> None:
    """Raise the first time an armed `point` is reached in this process."""
    if first_time(point):
        raise InjectedFault(point)
