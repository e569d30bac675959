"""The sandbox interface decider cases run in, as streams/ uses it.

Declared once in `contracts/sandbox.py` (the verifier in datasets/ needs it too, and
datasets sits below streams); `streams/docker_sandbox.py` is the real implementation.
"""

from __future__ import annotations

from contracts.sandbox import (
    REDACTED,
    RESET_WORKSPACE,
    ExecResult,
    ManagedSandbox,
    Sandbox,
    SandboxError,
    redact,
)

__all__ = [
    "REDACTED",
    "RESET_WORKSPACE",
    "ExecResult",
    "ManagedSandbox",
    "Sandbox",
    "SandboxError",
    "redact",
]
