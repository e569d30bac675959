"""The sandbox interface decider cases run in: a workspace plus a shell, behind `exec`.

Declared here, below every package that uses it: the agent harness (streams/), the
reference-solution verifier (datasets/) and the real implementation
(`streams/docker_sandbox.py`, one container per job). Tests use their own doubles. Pure:
the interface and its value types, no IO.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Final, Protocol, Self, runtime_checkable

RESET_WORKSPACE: Final = "find . -mindepth 1 -delete"
"""The shell form of emptying the workspace (dotfiles included), for sandboxes that are
only a shell; `Sandbox.reset` is the one call the harness makes."""


class SandboxError(RuntimeError):
    """The sandbox itself failed (container gone, runner crashed): not the command's fault."""


@dataclass(frozen=True, slots=True)
class ExecResult:
    """Outcome of one shell command run in the sandbox's workspace."""

    exit_code: int | None
    """The command's exit status (128+N when killed by signal N); None when it timed out."""
    stdout: str
    stderr: str
    timed_out: bool
    """True when the command hit its timeout and its whole process group was killed."""
    duration_ms: float
    """Wall-clock time of the command itself, measured next to it (excludes transport)."""
    truncated: bool
    """True when stdout or stderr exceeded the capture cap (head and tail are kept)."""

    def redacted(self, secrets: Iterable[str]) -> ExecResult:
        secrets = tuple(secrets)
        return replace(
            self, stdout=redact(self.stdout, secrets), stderr=redact(self.stderr, secrets)
        )


@runtime_checkable
class Sandbox(Protocol):
    """An isolated workspace with a shell. Use as `async with sandbox:` (start ... close)."""

    async def start(self) -> None:
        """Create the environment and absorb one-time start costs (warm-up)."""

    async def exec(
        self,
        cmd: str,
        timeout_s: float,
        *,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
    ) -> ExecResult:
        """Run `cmd` with bash in the workspace; kill its process group after `timeout_s`.

        `env` adds variables to the sandbox's fixed, minimal environment (never a
        credential: the sandbox must not see one); `stdin` is fed to the command (default:
        none, /dev/null)."""

    async def write_files(self, files: Mapping[str, str]) -> None:
        """Write text files at paths relative to the workspace (parents are created)."""

    async def read_file(self, path: str) -> str:
        """Read a text file (relative to the workspace, or absolute). FileNotFoundError if
        it does not exist."""

    async def reset(self, files: Mapping[str, str] | None = None) -> None:
        """Empty the workspace (dotfiles included) and write `files`, which become its
        pristine copy; without `files`, restore the last pristine copy (empty if none).
        Done inside the sandbox, in one call: a case's setup, or a retry's fresh start."""

    async def close(self) -> None:
        """Tear the environment down. Idempotent; safe after a failed or cancelled start."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ManagedSandbox(ABC):
    """For implementations: `async with sandbox:` is `start()` ... `close()`."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


REDACTED = "[REDACTED]"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret (longest first) by a marker.

    Secrets shorter than 4 characters are ignored: replacing them would shred ordinary text
    without protecting anything.
    """
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
