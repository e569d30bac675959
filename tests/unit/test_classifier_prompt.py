"""Classifier prompt, rendering, strict parser and keyword fallback."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.cases import ChatMessage, content_hash
from contracts.classification import CLASSIFICATION_FIELDS, Classification
from contracts.classifier_prompt import (
    CLASSIFIER_SYSTEM_PROMPT,
    MAX_CONVERSATION_CHARS,
    ParseFailure,
    build_classifier_messages,
    classify_output,
    heuristic_classification,
    parse_classification,
    render_conversation,
)
from contracts.taxonomy import EXECUTION_MODES, LEVELS, SUBTASK_TYPES, TASK_TYPES

GOOD: dict[str, Any] = {
    "taskType": "debugging",
    "subtaskType": "error_diagnosis",
    "reasoningComplexity": "medium",
    "contextComplexity": "low",
    "executionMode": "single_turn",
    "requiresTools": False,
    "riskLevel": "high",
}
GOOD_JSON = json.dumps(GOOD)


def _with(**changes: Any) -> str:
    return json.dumps({**GOOD, **changes})


def _without(field: str) -> str:
    return json.dumps({k: v for k, v in GOOD.items() if k != field})


# ---- prompt -----------------------------------------------------------------------------


def test_system_prompt_lists_every_field_and_value() -> None:
    for value in (*CLASSIFICATION_FIELDS, *TASK_TYPES, *SUBTASK_TYPES, *LEVELS, *EXECUTION_MODES):
        assert f'"{value}"' in CLASSIFIER_SYSTEM_PROMPT
    assert "exactly one JSON object" in CLASSIFIER_SYSTEM_PROMPT


def test_build_messages_shape() -> None:
    msgs = build_classifier_messages([ChatMessage(role="user", content="Fix my bug")])
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == CLASSIFIER_SYSTEM_PROMPT
    assert set(msgs[1]) == {"role", "content"}
    assert "### user\nFix my bug" in msgs[1]["content"]


def test_model_and_mapping_inputs_render_identically() -> None:
    as_models = [
        ChatMessage(role="system", content="You are a coding agent."),
        ChatMessage(role="user", content="Why does this crash?"),
        ChatMessage(role="tool", content="exit 1", name="bash"),
    ]
    as_dicts = [m.model_dump(exclude_none=True) for m in as_models]
    assert render_conversation(as_models) == render_conversation(as_dicts)
    assert "### tool (bash)\nexit 1" in render_conversation(as_models)


def test_openai_shapes_render() -> None:
    rendered = render_conversation(
        [
            {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "ls"}}]},
        ]
    )
    assert "look\n[image_url part]" in rendered
    assert "### assistant\n[calls tools: ls]" in rendered


def test_empty_conversation_is_refused() -> None:
    with pytest.raises(ValueError, match="empty conversation"):
        render_conversation([])


def test_long_message_keeps_head_and_tail_and_says_so() -> None:
    text = "HEAD" + "x" * 20_000 + "TAIL"
    rendered = render_conversation([{"role": "user", "content": text}])
    assert len(rendered) < MAX_CONVERSATION_CHARS
    assert "HEAD" in rendered and "TAIL" in rendered
    assert "characters omitted" in rendered
    assert "shortened to fit" in rendered


def test_short_conversation_has_no_truncation_note() -> None:
    rendered = render_conversation([{"role": "user", "content": "hi"}])
    assert "shortened" not in rendered and "omitted" not in rendered


def test_long_conversation_keeps_task_and_newest_turns() -> None:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "S" * 3000}]
    messages.append({"role": "user", "content": "THE TASK: migrate the build"})
    messages += [
        {"role": "assistant" if i % 2 else "tool", "content": f"turn {i} " + "y" * 1500}
        for i in range(40)
    ]
    rendered = render_conversation(messages)
    assert len(rendered) <= MAX_CONVERSATION_CHARS
    assert "THE TASK" in rendered
    assert "turn 39 " in rendered
    assert "turn 0 " not in rendered
    assert "messages omitted ...]" in rendered


messages_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "user", "assistant", "tool"]),
            "content": st.text(max_size=6000) | st.just("z" * 9000),
        },
        optional={"name": st.text(max_size=200)},
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(messages=messages_strategy)
def test_rendering_is_deterministic_and_capped(messages: list[dict[str, Any]]) -> None:
    first = build_classifier_messages(messages)
    again = build_classifier_messages([dict(m) for m in messages])
    assert first == again
    assert content_hash(first[1]["content"]) == content_hash(again[1]["content"])
    assert len(first[1]["content"]) <= MAX_CONVERSATION_CHARS


def test_rendering_is_pinned() -> None:
    # The simulated provider keys dataset cases by this hash: a change here is deliberate.
    content = build_classifier_messages([{"role": "user", "content": "Add a --verbose flag"}])
    assert content[1]["content"] == (
        "Classify the latest user request of this conversation.\n\n### user\nAdd a --verbose flag"
    )


# ---- parser -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        GOOD_JSON,
        f"```json\n{GOOD_JSON}\n```",
        f"```\n{GOOD_JSON}\n```",
        f"Sure! Here is the classification:\n{GOOD_JSON}\nHope that helps {{:}}",
        _with(confidence=0.9, notes={"nested": [1, 2]}),
        json.dumps(GOOD, indent=2),
    ],
    ids=["bare", "fenced-json", "fenced", "prose", "extra-keys", "pretty"],
)
def test_parses_valid_output(text: str) -> None:
    result = parse_classification(text)
    assert isinstance(result, Classification)
    assert result == Classification.model_validate(GOOD)
    assert result.fallback is False


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty output"),
        ("   \n", "empty output"),
        ("I cannot classify this.", "no JSON object found"),
        ("taskType: debugging", "no JSON object found"),
        ("{not json at all}", "no valid JSON object found"),
        ('{"taskType": "debugging"', "no valid JSON object found"),
        (f"{GOOD_JSON}\n{GOOD_JSON}", "more than one JSON object found"),
        (_without("riskLevel"), "missing field riskLevel"),
        ("{}", "missing fields taskType, subtaskType, reasoningComplexity"),
        (_with(riskLevel="extreme"), "invalid value 'extreme' for riskLevel"),
        (_with(taskType="Debugging"), "invalid value 'Debugging' for taskType"),
        (_with(executionMode=None), "invalid value null for executionMode"),
        (_with(reasoningComplexity=2), "invalid value 2 for reasoningComplexity"),
        (_with(subtaskType="nonsense"), "invalid value 'nonsense' for subtaskType"),
        (_with(requiresTools="true"), "invalid value 'true' for requiresTools"),
        (_with(requiresTools=1), "invalid value 1 for requiresTools"),
        (
            _with(subtaskType="migration"),
            "subtaskType 'migration' does not belong to taskType 'debugging'",
        ),
        ("[" + GOOD_JSON.replace("riskLevel", "risk") + "]", "missing field riskLevel"),
    ],
)
def test_parse_failures_name_the_problem(text: str, reason: str) -> None:
    result = parse_classification(text)
    assert isinstance(result, ParseFailure)
    assert result.reason.startswith(reason), result.reason


def test_non_bool_reason_says_what_was_expected() -> None:
    result = parse_classification(_with(requiresTools="yes"))
    assert isinstance(result, ParseFailure)
    assert result.reason == "invalid value 'yes' for requiresTools (expected a JSON boolean)"


def test_parse_failure_is_frozen() -> None:
    failure = ParseFailure(reason="x")
    with pytest.raises(ValueError):
        failure.reason = "y"  # type: ignore[misc]


def test_pathological_output_does_not_blow_up() -> None:
    assert isinstance(parse_classification("[" * 50_000 + "{" * 40_000), ParseFailure)
    assert isinstance(parse_classification("{" * 200_000), ParseFailure)


# ---- fallback ---------------------------------------------------------------------------


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_classify_output_uses_the_parse() -> None:
    assert classify_output(GOOD_JSON, _user("anything")) == Classification.model_validate(GOOD)


def test_classify_output_falls_back_with_the_parse_reason() -> None:
    c = classify_output(_without("riskLevel"), _user("Fix the bug in parser.py"))
    assert c.fallback is True
    assert c.fallback_reason == "missing field riskLevel"


def test_heuristic_marks_fallback_and_needs_reason() -> None:
    c = heuristic_classification(_user("hello"), reason="classifier timed out")
    assert (c.fallback, c.fallback_reason) == (True, "classifier timed out")
    with pytest.raises(ValueError, match="reason"):
        heuristic_classification(_user("hello"), reason="")


@pytest.mark.parametrize(
    ("text", "task", "subtask"),
    [
        (
            "I get this traceback: KeyError in handler, what is the exception about?",
            "debugging",
            "error_diagnosis",
        ),
        ("The endpoint is slow, optimize the query latency", "debugging", "performance"),
        (
            "Refactor this module: extract the parser and split the class",
            "refactoring",
            "restructure",
        ),
        (
            "Migrate our tests from unittest to the new framework and upgrade",
            "refactoring",
            "migration",
        ),
        ("Write unit tests for the tokenizer with pytest", "code_generation", "tests"),
        (
            "Design the architecture for a distributed job queue service",
            "planning_design",
            "system_design",
        ),
        (
            "Run a shell script to rotate the log directory every night",
            "agentic_execution",
            "shell_automation",
        ),
        (
            "Process the csv data in this workspace and aggregate the totals into a report",
            "agentic_execution",
            "data_processing",
        ),
        (
            "What is the difference between asyncio and trio? Compare the libraries",
            "investigation",
            "external_research",
        ),
        ("hello", "investigation", "codebase_question"),
    ],
)
def test_heuristic_task_and_subtype(text: str, task: str, subtask: str) -> None:
    c = heuristic_classification(_user(text), reason="r")
    assert (c.taskType, c.subtaskType) == (task, subtask)


def test_heuristic_tools_and_execution_from_tool_messages() -> None:
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": "Update the copyright header"},
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "edit"}}]},
        {"role": "tool", "name": "edit", "content": "ok"},
    ]
    c = heuristic_classification(msgs, reason="r")
    assert c.requiresTools is True
    assert c.executionMode == "autonomous"


def test_heuristic_tools_from_keywords_and_plain_question() -> None:
    ran = heuristic_classification(_user("Please execute the migration script"), reason="r")
    assert ran.requiresTools is True and ran.executionMode != "single_turn"
    plain = heuristic_classification(_user("Explain what a closure is"), reason="r")
    assert plain.requiresTools is False and plain.executionMode == "single_turn"


def test_heuristic_complexity_and_risk() -> None:
    small = heuristic_classification(_user("Fix the typo in the README title"), reason="r")
    assert small.reasoningComplexity == "low"
    assert small.contextComplexity == "low"
    hard = heuristic_classification(
        _user(
            "Find the race condition in the distributed lock; it deletes production data "
            "across the entire codebase\n" + "log line\n" * 1200
        ),
        reason="r",
    )
    assert hard.reasoningComplexity == "high"
    assert hard.contextComplexity == "high"
    assert hard.riskLevel == "high"


@settings(max_examples=60, deadline=None)
@given(messages=messages_strategy)
def test_heuristic_always_returns_a_valid_fallback(messages: list[dict[str, Any]]) -> None:
    c = heuristic_classification(messages, reason="garbage")
    assert c.fallback is True
    Classification.model_validate(c.model_dump())
