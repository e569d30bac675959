"""Deterministic ids: a retry re-creates the same id, so duplicates dedupe themselves."""

from __future__ import annotations

import hashlib
import uuid
from typing import Final

PROVENROUTE_NAMESPACE: Final = uuid.UUID("6f1c2a4e-8d3b-5e7f-9a0c-1b2d3e4f5a6b")
"""Fixed uuid5 namespace of every derived id. Never change it: stored ids would stop matching."""

_NAMESPACE_BYTES: Final = PROVENROUTE_NAMESPACE.bytes
_SEPARATOR: Final = "\x1f"
# ASCII unit separator: cannot appear in model ids, case ids or run ids, so ("a:b", "c") and
# ("a", "b:c") never collide the way they would with a printable separator.


def derive_id(*parts: str) -> str:
    """uuid5 of `parts` under the fixed namespace: same parts, same id, on every machine."""
    if not parts:
        raise ValueError("derive_id needs at least one part")
    # Exactly uuid.uuid5 (a test pins the equality), minus the UUID object: every CaseGraded
    # re-derives its id on decode, and replay decodes tens of thousands of them per second.
    digest = bytearray(
        hashlib.sha1(
            _NAMESPACE_BYTES + _SEPARATOR.join(parts).encode("utf-8"), usedforsecurity=False
        ).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def case_result_id(run_id: str, model: str, case_id: str, rep: int) -> str:
    """The event id of a graded (run, model, case, repetition): one result per fact."""
    return derive_id("case-result", run_id, model, case_id, str(rep))


def case_job_id(run_id: str, model: str, chunk: int, rep: int) -> str:
    """The readable id of a case job, `run:model:chunk:rep` (chunk and rep count from 0).

    Not a valid Docker container name as is (model ids hold `/`): the sandbox sanitises it.
    """
    return f"{run_id}:{model}:{chunk}:{rep}"
