"""What differs between agent CLIs: how each is configured and started offline, and how its
output becomes (answer, tool calls, transcript). Pure: no IO.

Paths are those of the job image (`container/Dockerfile`): the Kilo CLI's platform binary
is called directly (no node at run time), mini-swe-agent runs from its own venv. Every run
gets its own state directory under /tmp (the workspace belongs to the task), so runs never
share a CLI's sqlite state or migrations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

KILO_BIN: Final = "/opt/agents/kilo/node_modules/@kilocode/cli-linux-x64/bin/kilo"
MINI_BIN: Final = "/opt/agents/mini/bin/mini"
BASE_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PLACEHOLDER_KEY: Final = "provenroute-proxy-holds-the-key"
"""What the CLIs send as their key: the model proxy drops it and attaches the real one."""

BENCHMARK_INSTRUCTIONS: Final = (
    "You are working on a task inside a sandboxed Linux workspace (the current directory, "
    "/workspace) with bash, coreutils, grep, sed, awk, jq and python3, and no network "
    "access. Use the tools to inspect files and run commands rather than guessing, and "
    "verify your result."
)


@dataclass(frozen=True, slots=True)
class CliOutcome:
    """What one CLI run produced, from its own output."""

    answer: str
    """The final answer ("" when the session ended without one)."""
    tool_calls: int
    transcript: list[str] = field(default_factory=list)
    """Short lines (assistant text, tool calls and their output, errors), oldest first."""
    error: str | None = None
    """The CLI's own error report, if it ended with one."""
    hit_step_limit: bool = False


class CliFlavor(Protocol):
    @property
    def name(self) -> Literal["kilo", "mini-swe-agent"]: ...

    @property
    def startup_allowance_s(self) -> float:
        """Added to the case's timeout: the CLI's own start-up is the harness's cost, not
        the model's (measured on a loaded 2-core machine: see bench/pipeline.py)."""
        ...

    def spec(
        self, *, prompt: str, run_dir: str, port: int, reasoning_effort: str | None
    ) -> dict[str, Any]:
        """`argv`, `env`, `files`, `stdin` and `read_back` of one run (for agent_run.py)."""
        ...

    def parse(self, stdout: str, read_back: dict[str, str | None]) -> CliOutcome: ...


def _abbrev(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


# ------------------------------------------------------------------ Kilo CLI

KILO_OFFLINE_ENV: Final = {
    "KILO_DISABLE_MODELS_FETCH": "1",
    "KILO_DISABLE_AUTOUPDATE": "1",
    "KILO_TELEMETRY_LEVEL": "off",
    "KILO_DISABLE_SHARE": "1",
    "KILO_DISABLE_SESSION_INGEST": "1",
    "KILO_NO_DAEMON": "1",
    "KILO_DISABLE_LSP_DOWNLOAD": "1",
    "KILO_DISABLE_CLAUDE_CODE": "1",
    "KILO_SESSION_RETRY_LIMIT": "2",
    "KILO_DB": ":memory:",
    "KILO_DISABLE_PROJECT_CONFIG": "1",
    "KILO_DISABLE_CODEBASE_INDEXING": "1",
    "KILO_EXPERIMENTAL_DISABLE_FILEWATCHER": "1",
    "KILO_DISABLE_EXTERNAL_SKILLS": "1",
    "KILO_DISABLE_CLAUDE_CODE_SKILLS": "1",
    "KILO_DISABLE_CLAUDE_CODE_PROMPT": "1",
}
"""No catalogue fetch, telemetry, update or share attempts; a dead endpoint ends the
session with an error instead of retrying forever; an in-memory database per run; no
project-level config (a kilo.json planted in the workspace cannot redirect the model), no
codebase indexing or file watching."""


def kilo_config(port: int) -> dict[str, Any]:
    # `@openrouter/ai-sdk-provider` is bundled in the binary (nothing fetched) and speaks
    # OpenRouter's dialect: `reasoning: {effort}` and `usage: {include: true}`.
    return {
        "$schema": "https://app.kilo.ai/config.json",
        "provider": {
            "proxy": {
                "npm": "@openrouter/ai-sdk-provider",
                "name": "provenroute model proxy",
                "options": {"baseURL": f"http://127.0.0.1:{port}/v1", "apiKey": PLACEHOLDER_KEY},
                "models": {
                    "m": {
                        "name": "benchmarked model",
                        "tool_call": True,
                        "reasoning": True,
                        # The CLI's own cost figure is never used: the proxy meters.
                        "cost": {"input": 0, "output": 0},
                        "limit": {"context": 200000, "output": 8192},
                    }
                },
            }
        },
        "enabled_providers": ["proxy"],
        "model": "proxy/m",
        "small_model": "proxy/m",
        "autoupdate": False,
        "share": "disabled",
        "tools": {
            "todowrite": False,
            "board_post": False,
            "board_read": False,
            "kilo_local_recall": False,
            "background_process": False,
            "cancel_wakeup": False,
            "skill": False,
        },
        "permission": {"webfetch": "deny", "task": "deny", "schedule_wakeup": "deny"},
    }


@dataclass(frozen=True)
class KiloFlavor:
    name: Literal["kilo"] = "kilo"
    startup_allowance_s: float = 180.0
    binary: str = KILO_BIN

    def spec(
        self, *, prompt: str, run_dir: str, port: int, reasoning_effort: str | None
    ) -> dict[str, Any]:
        argv = [self.binary, "run", "--format", "json", "--auto", "-m", "proxy/m"]
        if reasoning_effort:
            argv += ["--variant", reasoning_effort]
        config_path = f"{run_dir}/kilo.json"
        env = {
            "PATH": BASE_PATH,
            "HOME": f"{run_dir}/home",
            "XDG_CONFIG_HOME": f"{run_dir}/config",
            "XDG_DATA_HOME": f"{run_dir}/data",
            "XDG_STATE_HOME": f"{run_dir}/state",
            "XDG_CACHE_HOME": f"{run_dir}/cache",
            "KILO_CONFIG": config_path,
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            **KILO_OFFLINE_ENV,
        }
        files = {
            config_path: json.dumps(kilo_config(port), indent=1),
            f"{run_dir}/home/.keep": "",
        }
        # The prompt goes on stdin: as arguments it arrives wrapped in quotes.
        prompt_text = f"{BENCHMARK_INSTRUCTIONS}\n\n{prompt}"
        return {"argv": argv, "env": env, "files": files, "stdin": prompt_text, "read_back": []}

    def parse(self, stdout: str, read_back: dict[str, str | None]) -> CliOutcome:
        return parse_kilo_events(stdout)


def parse_kilo_events(stdout: str) -> CliOutcome:
    """The final answer is the text of the last step, when that step ended the session
    (`step_finish` with a reason other than tool-calls); earlier chatter does not count."""
    transcript: list[str] = []
    step_text: list[str] = []
    final_text = ""
    tool_calls = 0
    error: str | None = None
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        kind, part = event.get("type"), event.get("part") or {}
        if kind == "step_start":
            step_text = []
        elif kind == "text" and isinstance(part.get("text"), str):
            step_text.append(part["text"])
            transcript.append(f"assistant: {_abbrev(part['text'], 400)}")
        elif kind == "tool_use":
            tool_calls += 1
            state = part.get("state") or {}
            transcript.append(
                f"tool {part.get('tool')}({_abbrev(json.dumps(state.get('input')), 200)})"
                f" -> {_abbrev(state.get('output') or state.get('error') or '', 300)}"
            )
        elif kind == "step_finish":
            final_text = "".join(step_text) if part.get("reason") != "tool-calls" else ""
        elif kind == "error":
            err = event.get("error") or {}
            data = err.get("data") or {}
            error = _abbrev(f"{err.get('name')}: {data.get('message')}", 300)
            transcript.append(f"error: {error}")
    return CliOutcome(final_text.strip(), tool_calls, transcript, error)


# ------------------------------------------------------------------ mini-swe-agent

MINI_SUBMIT: Final = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"

MINI_INSTANCE_TEMPLATE: Final = (
    BENCHMARK_INSTRUCTIONS
    + "\n\n{{task}}\n\nEvery response must call the bash tool. Each command runs in a new "
    "subshell in /workspace. When you are done, submit your final answer with exactly "
    f"this command: `printf '%s\\n' {MINI_SUBMIT} 'YOUR FINAL ANSWER'` (the answer on the "
    "line after the marker); you cannot continue after it."
)

MINI_OBSERVATION_TEMPLATE: Final = (
    '{"returncode": {{ output.returncode }}, "output": {{ output.output[-10000:] | tojson }}'
    '{% if output.exception_info %}, "exception_info": {{ output.exception_info | tojson }}'
    "{% endif %}}"
)


def mini_config(port: int, step_limit: int) -> dict[str, Any]:
    return {
        "agent": {
            "system_template": "You are a careful software engineer operating a Linux shell.",
            "instance_template": MINI_INSTANCE_TEMPLATE,
            "step_limit": step_limit,
            "cost_limit": 0,
            "mode": "yolo",
            "confirm_exit": False,
        },
        "environment": {"environment_class": "local", "cwd": "/workspace", "timeout": 60},
        "model": {
            "model_name": "openai/m",
            "cost_tracking": "ignore_errors",
            "observation_template": MINI_OBSERVATION_TEMPLATE,
            "model_kwargs": {
                "api_base": f"http://127.0.0.1:{port}/v1",
                "api_key": PLACEHOLDER_KEY,
                "drop_params": True,
            },
        },
    }


@dataclass(frozen=True)
class MiniSweAgentFlavor:
    name: Literal["mini-swe-agent"] = "mini-swe-agent"
    startup_allowance_s: float = 180.0
    binary: str = MINI_BIN
    step_limit: int = 12

    def spec(
        self, *, prompt: str, run_dir: str, port: int, reasoning_effort: str | None
    ) -> dict[str, Any]:
        config_path = f"{run_dir}/mini.yaml"  # JSON is YAML; mini wants the suffix
        traj = f"{run_dir}/traj.json"
        config = mini_config(port, self.step_limit)
        if reasoning_effort:
            config["model"]["model_kwargs"]["reasoning_effort"] = reasoning_effort
        argv = [self.binary, "-c", config_path, "-t", prompt, "-y", "--exit-immediately"]
        argv += ["-o", traj]
        env = {
            "PATH": BASE_PATH,
            "HOME": f"{run_dir}/home",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "MSWEA_CONFIGURED": "true",
            "MSWEA_GLOBAL_CONFIG_DIR": f"{run_dir}/mswea",
            "MSWEA_SILENT_STARTUP": "1",
            "MSWEA_COST_TRACKING": "ignore_errors",
            "MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT": "2",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "NO_COLOR": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        files = {config_path: json.dumps(config, indent=1), f"{run_dir}/home/.keep": ""}
        return {"argv": argv, "env": env, "files": files, "stdin": "", "read_back": [traj]}

    def parse(self, stdout: str, read_back: dict[str, str | None]) -> CliOutcome:
        raw = next(iter(read_back.values()), None)
        return parse_mini_trajectory(raw)


def parse_mini_trajectory(raw: str | None) -> CliOutcome:
    """The answer is the submission (what followed the marker line) of a `Submitted` run."""
    if not raw:
        return CliOutcome("", 0, ["no trajectory written"], "no trajectory written")
    try:
        traj = json.loads(raw)
    except ValueError:
        return CliOutcome("", 0, ["unreadable trajectory"], "unreadable trajectory")
    info = traj.get("info") or {}
    status = str(info.get("exit_status") or "")
    transcript: list[str] = []
    tool_calls = 0
    for m in traj.get("messages") or []:
        if not isinstance(m, dict):
            continue
        role, content = m.get("role"), m.get("content")
        if role == "assistant":
            if content:
                transcript.append(f"assistant: {_abbrev(content, 400)}")
            for call in m.get("tool_calls") or []:
                tool_calls += 1
                fn = (call or {}).get("function") or {}
                transcript.append(
                    f"tool {fn.get('name')}({_abbrev(str(fn.get('arguments')), 200)})"
                )
        elif role == "tool":
            transcript.append(f"  -> {_abbrev(content or '', 300)}")
    transcript.append(f"exit: {status}")
    submission = str(info.get("submission") or "") if status == "Submitted" else ""
    # A model that keeps answering without a tool call ends in RepeatedFormatError: that is
    # mini-swe-agent's empty answer (retried once), not a CLI failure.
    quiet = ("Submitted", "LimitsExceeded", "RepeatedFormatError")
    error = None if status in quiet else status or "no exit status"
    return CliOutcome(submission.strip(), tool_calls, transcript, error, status == "LimitsExceeded")
