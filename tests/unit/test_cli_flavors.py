"""How agent-CLI runs are configured and read back (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streams.cli_flavors import (
    KILO_OFFLINE_ENV,
    PLACEHOLDER_KEY,
    KiloFlavor,
    MiniSweAgentFlavor,
    parse_kilo_events,
    parse_mini_trajectory,
)


def _events(*events: dict[str, Any]) -> str:
    return "\n".join(json.dumps(e) for e in events) + "\nnot json\n"


def test_kilo_answer_is_the_text_of_the_step_that_ended_the_session() -> None:
    out = parse_kilo_events(
        _events(
            {"type": "step_start", "part": {}},
            {"type": "text", "part": {"text": "Let me count."}},
            {"type": "tool_use", "part": {"tool": "bash", "state": {"input": {}, "output": "6"}}},
            {"type": "step_finish", "part": {"reason": "tool-calls"}},
            {"type": "step_start", "part": {}},
            {"type": "text", "part": {"text": "The count is\n6"}},
            {"type": "step_finish", "part": {"reason": "stop"}},
        )
    )
    assert (out.answer, out.tool_calls, out.error) == ("The count is\n6", 1, None)
    assert any(line.startswith("tool bash") for line in out.transcript)


def test_kilo_earlier_chatter_is_no_answer_and_errors_are_reported() -> None:
    out = parse_kilo_events(
        _events(
            {"type": "step_start", "part": {}},
            {"type": "text", "part": {"text": "Let me look."}},
            {"type": "step_finish", "part": {"reason": "tool-calls"}},
            {"type": "error", "error": {"name": "APIError", "data": {"message": "budget"}}},
        )
    )
    assert out.answer == "" and out.error == "APIError: budget"


@pytest.mark.parametrize(
    ("status", "submission", "answer", "error", "limit"),
    [
        ("Submitted", "6\n", "6", None, False),
        ("LimitsExceeded", "", "", None, True),
        ("RepeatedFormatError", "", "", None, False),
        ("AuthenticationError", "", "", "AuthenticationError", False),
    ],
)
def test_mini_answer_is_the_submission_of_a_submitted_run(
    status: str, submission: str, answer: str, error: str | None, limit: bool
) -> None:
    traj = {
        "info": {"exit_status": status, "submission": submission},
        "messages": [
            {
                "role": "assistant",
                "content": "ok",
                "tool_calls": [{"function": {"name": "bash", "arguments": "{}"}}],
            },
            {"role": "tool", "content": '{"returncode": 0, "output": "6"}'},
        ],
    }
    out = parse_mini_trajectory(json.dumps(traj))
    assert (out.answer, out.error, out.hit_step_limit, out.tool_calls) == (answer, error, limit, 1)


def test_mini_without_a_trajectory_is_an_error() -> None:
    assert parse_mini_trajectory(None).error == "no trajectory written"


def test_kilo_runs_offline_with_its_own_state_and_no_key() -> None:
    spec = KiloFlavor().spec(prompt="P", run_dir="/tmp/r", port=4010, reasoning_effort="high")
    assert spec["argv"][-2:] == ["--variant", "high"] and "--auto" in spec["argv"]
    assert spec["stdin"].endswith("P")
    env = spec["env"]
    assert env.items() >= KILO_OFFLINE_ENV.items() and env["KILO_DB"] == ":memory:"
    assert all(v.startswith("/tmp/r") for k, v in env.items() if k.startswith("XDG_"))
    config = json.loads(spec["files"]["/tmp/r/kilo.json"])
    options = config["provider"]["proxy"]["options"]
    assert options == {"baseURL": "http://127.0.0.1:4010/v1", "apiKey": PLACEHOLDER_KEY}
    assert config["enabled_providers"] == ["proxy"]


def test_mini_runs_offline_with_a_yaml_config_and_reads_back_its_trajectory() -> None:
    spec = MiniSweAgentFlavor().spec(prompt="P", run_dir="/tmp/r", port=4010, reasoning_effort=None)
    assert "/tmp/r/mini.yaml" in spec["files"] and spec["read_back"] == ["/tmp/r/traj.json"]
    config = json.loads(spec["files"]["/tmp/r/mini.yaml"])
    assert config["model"]["model_kwargs"]["api_base"] == "http://127.0.0.1:4010/v1"
    assert "reasoning_effort" not in config["model"]["model_kwargs"]
    assert spec["argv"][spec["argv"].index("-t") + 1] == "P"
