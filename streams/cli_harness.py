"""Agent-CLI harness: a real agent CLI (Kilo, mini-swe-agent) works a decider case inside the
job's container, reaching the model only through the job's `ModelProxy`.

Per case: a fresh workspace, one CLI run at a time (`container/agent_run.py` starts the
in-container forwarder, runs the CLI in its own process group with its own state
directory, kills the group on timeout and redacts stderr), then the CLI's own output is
parsed (`streams.cli_flavors`). A session that ends without an answer (and without an
error or a timeout) is retried once from a fresh workspace; both attempts' costs count.
Cost, tokens and model calls come from the proxy's meter, never from the CLI.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any, Final

from contracts.cases import DeciderCase, content_hash
from streams.cli_flavors import CliFlavor, CliOutcome
from streams.harness import HarnessError, HarnessResult, StopReason, fresh_workspace
from streams.model_proxy import CaseBudget, ModelProxy
from streams.sandbox import Sandbox, SandboxError, redact

log = logging.getLogger(__name__)

AGENT_RUN: Final = "/opt/provenroute/agent_run.py"
CONTAINER_SOCKET: Final = "/run/provenroute/model.sock"
"""Where the job's proxy socket appears inside the container (`DockerSandbox` binds it)."""
FORWARD_PORT: Final = 4010
EXEC_SLACK_S: Final = 20.0
"""On top of the CLI's own timeout (agent_run kills the CLI first and still reports)."""
MAX_STDOUT: Final = 512 * 1024
"""The result file must stay under what `Sandbox.read_file` returns (1 MiB)."""


class CliHarness:
    """One job's harness: `flavor` is the CLI, `proxy` the job's model proxy (started)."""

    def __init__(
        self,
        flavor: CliFlavor,
        proxy: ModelProxy,
        *,
        max_calls: int = 40,
        max_tokens: int = 2_000_000,
        redact: Iterable[str] = (),
        transcript_chars: int = 2000,
        keep_state: bool = False,
    ) -> None:
        self.flavor = flavor
        self.proxy = proxy
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.secrets = tuple(s for s in redact if s)
        self.transcript_chars = transcript_chars
        self.keep_state = keep_state
        """Leave each run's CLI state in the container (diagnostics and the key-leak test)."""

    async def run_case(
        self,
        case: DeciderCase,
        sandbox: Sandbox,
        *,
        model: str,
        reasoning_effort: str | None,
        rep: int,
    ) -> HarnessResult:
        t0 = time.perf_counter()
        limit_s = case.timeout_s + self.flavor.startup_allowance_s
        deadline = time.monotonic() + limit_s
        budget = CaseBudget(deadline, max_calls=self.max_calls, max_tokens=self.max_tokens)
        meter = self.proxy.begin_case(content_hash(case.prompt), rep, budget)
        tail: deque[str] = deque(maxlen=40)
        runs: list[dict[str, Any]] = []
        outcome: CliOutcome | None = None
        timed_out = False
        reset_ms = cli_ms = 0.0
        tool_calls = attempts = 0
        try:
            for attempts in (1, 2):
                remaining = deadline - time.monotonic()
                if remaining < 1.0:
                    timed_out = True
                    break
                if attempts > 1:
                    tail.append("-- session ended without an answer: retrying once --")
                t_reset = time.perf_counter()
                await fresh_workspace(sandbox, case.files)
                reset_ms += (time.perf_counter() - t_reset) * 1000.0
                raw = await self._run_cli(sandbox, case.prompt, reasoning_effort, remaining)
                runs.append(raw)
                outcome = self.flavor.parse(raw.get("stdout", ""), raw.get("read_back") or {})
                cli_ms += float(raw.get("duration_ms") or 0.0)
                tool_calls += outcome.tool_calls
                tail.extend(outcome.transcript[-20:])
                if raw.get("stderr") and (outcome.error or not outcome.answer):
                    tail.append(f"stderr: {_abbrev(raw['stderr'][-600:], 600)}")
                if raw.get("timed_out") or meter.provider_dead:
                    timed_out = True
                    why = "the provider failed" if meter.provider_dead else "the case timed out"
                    tail.append(f"-- {why} after {limit_s:.0f}s budget (process group killed) --")
                    break
                if outcome.answer or outcome.error or outcome.hit_step_limit:
                    break
        finally:
            self.proxy.end_case()
        if any(c.status == 401 for c in meter.calls):
            msg = "the provider rejected the benchmark credential"
            raise HarnessError(msg, self._tail(tail))
        answer = "" if timed_out or outcome is None else self._clean(outcome.answer)
        stop: StopReason
        if timed_out:
            stop = "timeout"
        elif answer:
            stop = "final"
        elif outcome is not None and outcome.hit_step_limit:
            stop = "max_steps"
        elif outcome is not None and outcome.error:
            stop = "error"
        else:
            stop = "empty"
        ok_calls = [c for c in meter.calls if c.status == 200]
        result = HarnessResult(
            answer=answer,
            cost_usd=meter.cost_usd,
            latency_ms=(time.perf_counter() - t0) * 1000.0,
            timed_out=timed_out,
            steps=meter.model_calls,
            stop_reason=stop,
            transcript_tail=self._tail(tail),
            attempts=max(attempts, 1),
            model_latency_ms=sum(c.duration_ms for c in ok_calls),
            tool_calls=tool_calls,
            reset_ms=reset_ms,
            harness=self.flavor.name,
            cli_ms=cli_ms,
            first_call_ms=max(meter.calls[0].at_ms - reset_ms, 0.0) if meter.calls else 0.0,
            proxy_calls=tuple(c.to_dict() for c in meter.calls),
            cli_runs=tuple(self._redacted_run(r) for r in runs),
        )
        log.info(
            "case %s model %s rep %d via %s: %s, %d calls, %d attempt(s), %.0f ms",
            case.id,
            model,
            rep,
            self.flavor.name,
            stop,
            result.steps,
            result.attempts,
            result.latency_ms,
        )
        return result

    async def _run_cli(
        self, sandbox: Sandbox, prompt: str, reasoning_effort: str | None, timeout_s: float
    ) -> dict[str, Any]:
        run_id = uuid.uuid4().hex[:12]
        run_dir = f"/tmp/agent-runs/{run_id}"
        spec = self.flavor.spec(
            prompt=prompt, run_dir=run_dir, port=FORWARD_PORT, reasoning_effort=reasoning_effort
        )
        spec |= {
            "timeout_s": timeout_s,
            "port": FORWARD_PORT,
            "socket": CONTAINER_SOCKET,
            "result": f"/tmp/agent-runs/{run_id}.result.json",
            "cleanup": [] if self.keep_state else [run_dir],
            "max_stdout": MAX_STDOUT,
        }
        encoded = base64.b64encode(json.dumps(spec).encode("utf-8")).decode("ascii")
        res = await sandbox.exec(
            f"python3 {AGENT_RUN} --b64 {encoded}", timeout_s=timeout_s + EXEC_SLACK_S
        )
        if res.timed_out:
            return {"timed_out": True, "stdout": "", "stderr": "agent_run did not finish"}
        try:
            raw = json.loads(await sandbox.read_file(spec["result"]))
        except (FileNotFoundError, ValueError) as e:
            detail = self._clean(f"{res.stderr[-300:]} {res.stdout[-300:]}")
            raise SandboxError(f"agent_run left no result ({type(e).__name__}): {detail}") from None
        if not isinstance(raw, dict) or raw.get("error"):
            err = raw.get("error") if isinstance(raw, dict) else raw
            raise SandboxError(f"agent_run failed: {self._clean(str(err))[:300]}")
        return raw

    # ------------------------------------------------------------------ hygiene

    def _clean(self, text: str) -> str:
        return redact(text, self.secrets)

    def _redacted_run(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {
            "exit_code": raw.get("exit_code"),
            "timed_out": bool(raw.get("timed_out")),
            "duration_ms": raw.get("duration_ms"),
            "stdout": self._clean(str(raw.get("stdout", ""))),
            "stderr": self._clean(str(raw.get("stderr", ""))),
            "read_back": {
                k: self._clean(v) if isinstance(v, str) else v
                for k, v in (raw.get("read_back") or {}).items()
            },
        }

    def _tail(self, tail: Iterable[str]) -> str:
        return self._clean("\n".join(tail))[-self.transcript_chars :]


def _abbrev(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."
