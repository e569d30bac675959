"""How each agent harness expects a simulated model to work an agentic case (pure)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Final, Literal

AgentDialect = Literal["builtin", "kilo", "mini"]
"""How an agent harness expects a simulated model to work a case: `builtin` calls run_shell
and answers in text; `kilo` (the Kilo CLI: bash, write, edit, ...) calls bash and answers
in text; `mini` (mini-swe-agent: a single bash tool, every turn a tool call) submits with a
command whose first output line is SUBMIT_MARKER."""

SUBMIT_MARKER: Final = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"


def agent_dialect(tool_names: Sequence[str]) -> AgentDialect | None:
    """The dialect the request's tools reveal; None when no shell tool is offered."""
    names = set(tool_names)
    if "run_shell" in names:
        return "builtin"
    if "bash" in names:
        return "mini" if len(names) == 1 else "kilo"
    return None


def submit_command(answer: str) -> str:
    """mini-swe-agent's way to finish: the marker line, then the answer (its submission)."""
    return f"printf '%s\\n' {SUBMIT_MARKER} {shlex.quote(answer)}"
