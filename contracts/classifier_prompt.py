"""The production classifier: prompt, conversation rendering, strict parser, fallback.

The benchmark replays exactly this code, so its answers are graded against what /decide
really does. The rendered user content is deterministic: the simulated provider recognises
dataset cases by `content_hash` of it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from contracts.classification import CLASSIFICATION_FIELDS, Classification
from contracts.classifier_heuristic import heuristic_classification
from contracts.conversation import MessageLike, Turn, turns_of
from contracts.taxonomy import (
    EXECUTION_MODES,
    LEVELS,
    SUBTASK_TYPES,
    SUBTYPES_BY_TASK,
    TASK_TYPES,
    TaskType,
    subtype_belongs,
)

__all__ = [
    "CLASSIFIER_SYSTEM_PROMPT",
    "MAX_CONVERSATION_CHARS",
    "MAX_MESSAGE_CHARS",
    "ParseFailure",
    "build_classifier_messages",
    "classify_output",
    "heuristic_classification",
    "parse_classification",
    "render_conversation",
]

_TASK_GUIDE: Final[dict[TaskType, str]] = {
    "code_generation": (
        "writing new code. new_feature: new functionality; boilerplate: scaffolding, "
        "configuration, repetitive code; tests: writing or extending tests"
    ),
    "debugging": (
        "making broken code work. bug_fix: fix a known defect; error_diagnosis: explain an "
        "error, exception or stack trace; performance: slowness, memory, latency"
    ),
    "refactoring": (
        "changing code without changing behaviour. restructure: split, extract, reorganise; "
        "migration: move to another framework, version or language; cleanup: naming, dead "
        "code, style"
    ),
    "investigation": (
        "answering questions. codebase_question: how given code works; external_research: "
        "libraries, documentation, comparisons outside the codebase; system_behavior: why a "
        "running system behaves as it does"
    ),
    "planning_design": (
        "deciding what to build. system_design: architecture; task_breakdown: splitting work "
        "into steps; api_design: interfaces, endpoints, schemas"
    ),
    "agentic_execution": (
        "doing the work in a workspace with tools. shell_automation: running commands and "
        "scripts; multi_file_edit: changing many files; data_processing: transforming or "
        "analysing data files"
    ),
}


def _quoted(values: Sequence[str]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def _system_prompt() -> str:
    tasks = "\n".join(
        f'  - "{task}" ({_TASK_GUIDE[task]}); subtypes: {_quoted(SUBTYPES_BY_TASK[task])}'
        for task in TASK_TYPES
    )
    levels = _quoted(LEVELS)
    example = json.dumps(
        {
            "taskType": "debugging",
            "subtaskType": "error_diagnosis",
            "reasoningComplexity": "medium",
            "contextComplexity": "low",
            "executionMode": "single_turn",
            "requiresTools": False,
            "riskLevel": "low",
        }
    )
    return f"""You classify requests sent to an AI coding assistant. Read the conversation \
and classify its latest user request (earlier messages are context).

Fields:
- "taskType": one of {_quoted(TASK_TYPES)}:
{tasks}
- "subtaskType": one of the three subtypes listed for the chosen taskType, never another \
task type's subtype.
- "reasoningComplexity": one of {levels}. How hard the problem is to think through \
(low: routine or mechanical; medium: needs some analysis; high: subtle, many interacting \
constraints, or novel design).
- "contextComplexity": one of {levels}. How much context must be held to answer \
(low: a snippet or one small file; medium: several files or a longer conversation; high: a \
large codebase or many interacting components).
- "executionMode": one of {_quoted(EXECUTION_MODES)}. single_turn: answerable in one \
reply; multi_step: several steps with checking in between; autonomous: an agent working on \
its own with tools until the task is done.
- "requiresTools": true or false (a JSON boolean, not a string). Whether answering needs \
tools such as reading files, running commands or searching.
- "riskLevel": one of {levels}. How costly a wrong answer would be (high: production \
systems, data loss, security, money, irreversible operations).

Answer with exactly one JSON object with exactly these seven keys and nothing else: no \
prose, no explanation, no code fences. Example of the format:
{example}"""


CLASSIFIER_SYSTEM_PROMPT: Final[str] = _system_prompt()
"""The classifier's system prompt, generated from the taxonomy so the two never drift."""

MAX_MESSAGE_CHARS: Final = 4000
"""Longest content kept per message; longer ones keep their head and tail."""
MAX_CONVERSATION_CHARS: Final = 12_000
"""Upper bound on the rendered user content."""
_HEAD_CHARS: Final = 2600
_TAIL_CHARS: Final = 1200
# Head is longer than tail: a request usually states the task first; the tail keeps the
# end of a pasted log or stack trace, where the actual error tends to be.
_PREAMBLE: Final = "Classify the latest user request of this conversation.\n\n"
_TRUNCATION_NOTE: Final = (
    "Note: this conversation was shortened to fit; omitted parts are marked with [...].\n\n"
)
_SEPARATOR: Final = "\n\n"


_MAX_LABEL_CHARS: Final = 64
_MAX_LISTED_TOOL_CALLS: Final = 10
# Roles, names and tool names come from the caller too: bounded so the total cap holds.


def _render_turn(turn: Turn) -> str:
    header = f"### {turn.role[:_MAX_LABEL_CHARS]}"
    if turn.name:
        header += f" ({turn.name[:_MAX_LABEL_CHARS]})"
    text = turn.text
    if len(text) > MAX_MESSAGE_CHARS:
        omitted = len(text) - _HEAD_CHARS - _TAIL_CHARS
        text = (
            f"{text[:_HEAD_CHARS]}\n[... {omitted} characters omitted ...]\n{text[-_TAIL_CHARS:]}"
        )
    if turn.tool_calls:
        listed = [n[:_MAX_LABEL_CHARS] for n in turn.tool_calls[:_MAX_LISTED_TOOL_CALLS]]
        more = len(turn.tool_calls) - len(listed)
        calls = f"[calls tools: {', '.join(listed)}" + (f" and {more} more]" if more else "]")
        text = f"{text}\n{calls}" if text else calls
    return f"{header}\n{text}"


def render_conversation(messages: Sequence[MessageLike]) -> str:
    """The classifier's user content: same messages, byte-identical text.

    Each message becomes a `### role` header plus its content. Content beyond
    MAX_MESSAGE_CHARS keeps its head and tail; if the whole still exceeds
    MAX_CONVERSATION_CHARS, the first user message (the task) and the newest messages that
    fit are kept and each omission is marked. The result never exceeds MAX_CONVERSATION_CHARS.
    """
    turns = turns_of(messages)
    if not turns:
        raise ValueError("cannot classify an empty conversation")
    blocks = [_render_turn(t) for t in turns]
    truncated = any(len(t.text) > MAX_MESSAGE_CHARS for t in turns)
    body = _SEPARATOR.join(blocks)
    fixed = len(_PREAMBLE) + len(_TRUNCATION_NOTE)
    if fixed + len(body) > MAX_CONVERSATION_CHARS:
        body = _drop_middle(blocks, [t.role for t in turns], MAX_CONVERSATION_CHARS - fixed)
        truncated = True
    return _PREAMBLE + (_TRUNCATION_NOTE if truncated else "") + body


def _drop_middle(blocks: list[str], roles: list[str], budget: int) -> str:
    """Keep the first user message (the task) and the newest blocks that fit in `budget`.

    Each run of dropped blocks becomes one `[... N messages omitted ...]` marker.
    """
    anchor = roles.index("user") if "user" in roles else 0
    # Room for at most two markers (before the anchor and between it and the kept tail).
    marker_room = 2 * (len(_SEPARATOR) + len(_omitted_marker(len(blocks))))
    room = budget - len(blocks[anchor]) - marker_room
    kept = {anchor}
    for i in range(len(blocks) - 1, anchor, -1):
        cost = len(blocks[i]) + len(_SEPARATOR)
        if cost > room:
            break  # newest first, contiguous: a gap in the recent turns would mislead
        kept.add(i)
        room -= cost
    parts: list[str] = []
    dropped = 0
    for i, block in enumerate(blocks):
        if i in kept:
            if dropped:
                parts.append(_omitted_marker(dropped))
                dropped = 0
            parts.append(block)
        else:
            dropped += 1
    if dropped:
        parts.append(_omitted_marker(dropped))
    return _SEPARATOR.join(parts)


def _omitted_marker(count: int) -> str:
    return f"[... {count} messages omitted ...]"


def build_classifier_messages(messages: Sequence[MessageLike]) -> list[dict[str, str]]:
    """The chat request sent to the classifier model: system prompt, then the conversation."""
    return [
        {"role": "system", "content": CLASSIFIER_SYSTEM_PROMPT},
        {"role": "user", "content": render_conversation(messages)},
    ]


class ParseFailure(BaseModel):
    """The classifier's answer could not be used; a distinct outcome, not a wrong answer."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    reason: str
    """What was wrong, e.g. "missing field riskLevel" or "no JSON object found"."""


_ALLOWED: Final[dict[str, tuple[str, ...]]] = {
    "taskType": TASK_TYPES,
    "subtaskType": SUBTASK_TYPES,
    "reasoningComplexity": LEVELS,
    "contextComplexity": LEVELS,
    "executionMode": EXECUTION_MODES,
    "riskLevel": LEVELS,
}
_MAX_OUTPUT_CHARS: Final = 32_000
_MAX_FAILED_STARTS: Final = 200
# Both bound the object search (each failed start costs O(position) for the error's line
# number): a classifier answer is a few hundred characters.
_DECODER: Final = json.JSONDecoder()


def parse_classification(text: str) -> Classification | ParseFailure:
    """Strictly parse the model's answer: exactly one JSON object with all seven fields.

    Tolerated: code fences and prose around the object, extra keys (ignored). Refused: no
    or several objects, a missing field, a value outside the taxonomy, a non-boolean
    `requiresTools`, a subtype of another task type.
    """
    if not text.strip():
        return ParseFailure(reason="empty output")
    if len(text) > _MAX_OUTPUT_CHARS:
        return ParseFailure(reason=f"output too long ({len(text)} characters)")
    found = _json_objects(text)
    if isinstance(found, ParseFailure):
        return found
    return _classification_of(found)


def _json_objects(text: str) -> dict[str, Any] | ParseFailure:
    objects: list[dict[str, Any]] = []
    first_error: str | None = None
    failed = 0
    start = text.find("{")
    if start == -1:
        return ParseFailure(reason="no JSON object found")
    while start != -1:
        try:
            value, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError) as e:
            first_error = first_error or str(e)
            failed += 1
            if failed >= _MAX_FAILED_STARTS:
                break
            start = text.find("{", start + 1)
            continue
        objects.append(value)  # raw_decode at "{" can only yield an object
        if len(objects) > 1:
            return ParseFailure(reason="more than one JSON object found")
        start = text.find("{", end)
    if not objects:
        return ParseFailure(reason=f"no valid JSON object found ({first_error})")
    return objects[0]


def _classification_of(obj: dict[str, Any]) -> Classification | ParseFailure:
    missing = [f for f in CLASSIFICATION_FIELDS if f not in obj]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        return ParseFailure(reason=f"missing field{plural} {', '.join(missing)}")
    for field in CLASSIFICATION_FIELDS:
        value = obj[field]
        if field == "requiresTools":
            # JSON true/false only: "true" or 1 would be a guess, and guesses are fallbacks.
            if not isinstance(value, bool):
                return ParseFailure(
                    reason=f"invalid value {_show(value)} for requiresTools "
                    "(expected a JSON boolean)"
                )
        elif not isinstance(value, str) or value not in _ALLOWED[field]:
            return ParseFailure(reason=f"invalid value {_show(value)} for {field}")
    task, subtask = obj["taskType"], obj["subtaskType"]
    if not subtype_belongs(task, subtask):
        return ParseFailure(reason=f"subtaskType {subtask!r} does not belong to taskType {task!r}")
    return Classification.model_validate({f: obj[f] for f in CLASSIFICATION_FIELDS})


def _show(value: Any) -> str:
    shown = repr(value) if isinstance(value, str) else json.dumps(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def classify_output(text: str, messages: Sequence[MessageLike]) -> Classification:
    """The model's classification, or the keyword fallback carrying the parse failure."""
    parsed = parse_classification(text)
    if isinstance(parsed, ParseFailure):
        return heuristic_classification(messages, reason=parsed.reason)
    return parsed
