"""What a simulated model answers: pure, deterministic draws and answer construction.

Every draw is a uniform number in [0, 1) taken from sha256 of (model, case hash, rep,
purpose), so the same (model, case, rep) always answers the same way, on any machine.

Order of draws for one (model, case, rep):
1. the failure draw: one of timeout | empty | malformed_json | server_error | rate_limited
   or none, with the profile's declared rates;
2. correctness: a terminal failure (timeout, empty, malformed_json) is always wrong;
   otherwise the draw is right with probability `p / (1 - terminal_rate)`, so the
   end-to-end probability of a right draw is exactly the declared `p`.

Nothing here does IO, reads the clock or the environment: the server passes everything in.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Final, Literal

from contracts.cases import DeciderCase
from contracts.classification import CLASSIFICATION_FIELDS, Classification
from contracts.decider_grading import last_non_empty_line, run_check
from contracts.taxonomy import (
    EXECUTION_MODES,
    LEVELS,
    SUBTYPES_BY_TASK,
    TASK_TYPES,
    Tier,
)
from simulator.dialects import AgentDialect, agent_dialect, submit_command
from simulator.fleet import ModelProfile

FailureKind = Literal["timeout", "empty", "malformed_json", "server_error", "rate_limited"]
FAILURE_ORDER: Final[tuple[FailureKind, ...]] = (
    "timeout",
    "empty",
    "malformed_json",
    "server_error",
    "rate_limited",
)
TERMINAL_FAILURES: Final[frozenset[str]] = frozenset({"timeout", "empty", "malformed_json"})
TRANSIENT_FAILURES: Final[frozenset[str]] = frozenset({"server_error", "rate_limited"})

HARNESS_TOOLS: Final = ("read_file", "write_file", "list_dir", "run_shell")
"""The built-in harness's tools; the simulated agent only ever calls run_shell."""

_NORMAL: Final = NormalDist()


# -- draws -------------------------------------------------------------------------------


def unit(*parts: object) -> float:
    """A uniform number in [0, 1) determined by `parts` (sha256, 64 bits)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def failure_draw(profile: ModelProfile, case_hash: str, rep: int) -> FailureKind | None:
    """The failure mode of this (model, case, rep), or None."""
    u = unit(profile.id, case_hash, rep, "failure")
    edge = 0.0
    for kind in FAILURE_ORDER:
        edge += float(getattr(profile.failures, kind))
        if u < edge:
            return kind
    return None


def _conditional(p: float, terminal: float) -> float:
    """P(right | no terminal failure) that makes P(right) == p end to end."""
    return 1.0 if terminal >= 1.0 else min(1.0, p / (1.0 - terminal))


@dataclass(frozen=True)
class DeciderDraw:
    failure: FailureKind | None
    correct: bool
    """Whether this draw solves the case (a terminal failure never does)."""


def decider_draw(profile: ModelProfile, case_hash: str, tier: Tier, rep: int) -> DeciderDraw:
    failure = failure_draw(profile, case_hash, rep)
    if failure in TERMINAL_FAILURES:
        return DeciderDraw(failure, False)
    q = _conditional(profile.decider.of(tier), profile.failures.terminal)
    return DeciderDraw(failure, unit(profile.id, case_hash, rep, "decider") < q)


@dataclass(frozen=True)
class ClassifierDraw:
    failure: FailureKind | None
    correct: dict[str, bool] = field(default_factory=dict)
    """Per classification field: answered with the label's value."""


def classifier_draw(profile: ModelProfile, case_hash: str, rep: int) -> ClassifierDraw:
    failure = failure_draw(profile, case_hash, rep)
    if failure in TERMINAL_FAILURES:
        return ClassifierDraw(failure, dict.fromkeys(CLASSIFICATION_FIELDS, False))
    terminal = profile.failures.terminal
    correct: dict[str, bool] = {}
    for name in CLASSIFICATION_FIELDS:
        if name == "subtaskType":
            continue
        q = _conditional(profile.classifier.of(name), terminal)
        correct[name] = unit(profile.id, case_hash, rep, name) < q
    # A right subtype needs the right task type: draw it conditionally on that.
    p_task, p_sub = profile.classifier.taskType, profile.classifier.subtaskType
    q_sub = 0.0 if p_task <= 0 else min(1.0, p_sub / p_task)
    correct["subtaskType"] = correct["taskType"] and (
        unit(profile.id, case_hash, rep, "subtaskType") < q_sub
    )
    return ClassifierDraw(failure, {f: correct[f] for f in CLASSIFICATION_FIELDS})


def latency_ms(profile: ModelProfile, case_hash: str, rep: int, step: int, scale: float) -> float:
    """Lognormal latency around the model's median, times `scale` (0 in tests)."""
    if scale <= 0:
        return 0.0
    u = min(max(unit(profile.id, case_hash, rep, step, "latency"), 1e-9), 1 - 1e-9)
    return profile.latency.median_ms * math.exp(profile.latency.sigma * _NORMAL.inv_cdf(u)) * scale


def estimate_tokens(text: str) -> int:
    """~4 characters per token, at least 1."""
    return max(1, math.ceil(len(text) / 4))


# -- classifier answers ------------------------------------------------------------------


def _other(values: Sequence[Any], right: Any, u: float, *, adjacent: bool = False) -> Any:
    """A plausible wrong value: for ordered scales, a neighbour of the right one."""
    if adjacent and right in values:
        i = list(values).index(right)
        near = [values[j] for j in (i - 1, i + 1) if 0 <= j < len(values)]
        return near[int(u * len(near))]
    others = [v for v in values if v != right]
    return others[int(u * len(others))]


def classifier_fields(
    label: Classification, draw: ClassifierDraw, model_id: str, case_hash: str, rep: int
) -> dict[str, Any]:
    """The seven answered values: the label's where the draw is right, a valid other value
    where it is wrong (the subtype always belongs to the answered task type)."""

    def alt(name: str) -> float:
        return unit(model_id, case_hash, rep, name, "alt")

    ok = draw.correct
    task = label.taskType if ok["taskType"] else _other(TASK_TYPES, label.taskType, alt("taskType"))
    subtypes = SUBTYPES_BY_TASK[task]
    if ok["taskType"]:
        sub = (
            label.subtaskType
            if ok["subtaskType"]
            else _other(subtypes, label.subtaskType, alt("subtaskType"))
        )
    else:
        sub = subtypes[int(alt("subtaskType") * len(subtypes))]
    out: dict[str, Any] = {"taskType": task, "subtaskType": sub}
    for name, values in (
        ("reasoningComplexity", LEVELS),
        ("contextComplexity", LEVELS),
        ("executionMode", EXECUTION_MODES),
        ("riskLevel", LEVELS),
    ):
        right = getattr(label, name)
        out[name] = right if ok[name] else _other(values, right, alt(name), adjacent=True)
    out["requiresTools"] = label.requiresTools if ok["requiresTools"] else not label.requiresTools
    return {f: out[f] for f in CLASSIFICATION_FIELDS}


def render_classification(
    fields: Mapping[str, Any], model_id: str, case_hash: str, rep: int
) -> str:
    """The answer text: mostly a bare JSON object, sometimes fenced or with a line of prose
    around it, as real models do despite the prompt (the parser tolerates both)."""
    u = unit(model_id, case_hash, rep, "style")
    if u < 0.70:
        return json.dumps(dict(fields))
    if u < 0.85:
        return "```json\n" + json.dumps(dict(fields), indent=2) + "\n```"
    return "Here is the classification of the request:\n\n" + json.dumps(dict(fields))


def malformed_classification(fields: Mapping[str, Any]) -> str:
    """Truncated JSON: no complete object, so the parser falls back."""
    text = json.dumps(dict(fields))
    return text[: max(1, int(len(text) * 0.6))]


# -- decider answers ---------------------------------------------------------------------


def correct_answer(case: DeciderCase) -> str:
    """The golden answer as the final line after a short preamble, unless the preamble
    would make a correct answer fail its check (then the bare golden answer)."""
    framed = f"I worked through the task; the result is below.\n\n{case.golden_answer}"
    return framed if run_check(case.check, framed).passed else case.golden_answer


_NUMBER: Final = re.compile(r"-?\d+(?:\.\d+)?")


def _bump_last_number(text: str) -> str | None:
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    token = m.group(0)
    if "." in token:
        decimals = len(token.split(".")[1])
        bumped = f"{float(token) + 10**-decimals:.{decimals}f}"
    else:
        bumped = str(int(token) + 1)
    return text[: m.start()] + bumped + text[m.end() :]


def _json_variant(text: str) -> str | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and value:
        return json.dumps(value[:-1])
    if isinstance(value, dict) and value:
        return json.dumps(dict(list(value.items())[:-1]))
    if isinstance(value, bool):
        return json.dumps(not value)
    if isinstance(value, int | float):
        return json.dumps(value + 1)
    if isinstance(value, str):
        return json.dumps(value + "_old")
    return None


def _wrong_candidates(case: DeciderCase) -> list[str]:
    golden = case.golden_answer.strip()
    cands: list[str | None] = [_bump_last_number(golden), _json_variant(golden)]
    lines = [ln for ln in golden.splitlines() if ln.strip()]
    if len(lines) > 1:
        cands.append("\n".join(lines[:-1]))
    items = [i.strip() for i in golden.split(",")]
    if len(items) > 1:
        cands.append(", ".join(items[:-1]))
    if case.check.kind == "contains_all":
        expected = case.check.expected
        cands.append(re.sub(re.escape(expected[-1]), "", golden, flags=re.IGNORECASE))
    words = golden.split()
    if len(words) > 1:
        cands.append(" ".join(words[:-1]))
    cands += [golden + "_v2", golden[::-1], "I could not determine the answer.", "n/a", "0"]
    return [c for c in cands if c is not None and c.strip() and c.strip() != golden]


def wrong_answer(case: DeciderCase) -> str:
    """A plausible wrong final answer that fails the case's check (verified), falling back
    to a clearly wrong one."""
    for cand in _wrong_candidates(case):
        if not run_check(case.check, cand).passed:
            return cand
    return "I could not determine the answer."


def garbled_answer(case: DeciderCase) -> str:
    """The decider's `malformed_json` failure: a final answer cut off mid-JSON."""
    garbled = '{"final_answer": ' + json.dumps(wrong_answer(case))[:-1]
    return garbled if not run_check(case.check, garbled).passed else wrong_answer(case)


def is_agentic(case: DeciderCase) -> bool:
    """Agentic cases are solved with tools: they have workspace files and a reference."""
    return bool(case.reference and case.files)


_EXIT_LINE: Final = re.compile(
    r"^\[?\s*(exit(ed)?[ _-]?(code|status)?|return ?code|returncode|timed[ _]out)\b.*$",
    re.IGNORECASE,
)
_SECTION: Final = re.compile(r"^\s*(stdout|stderr)\s*:?\s*$", re.IGNORECASE)


def tool_output_answer(content: str) -> str:
    """The last non-empty line of a run_shell result's stdout.

    Understands a JSON result with a `stdout` field, a text result with `stdout:` /
    `stderr:` sections, or plain text; exit-status lines are not answers.
    """
    text = content
    try:
        obj = json.loads(content)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        for key in ("stdout", "output", "result"):
            if isinstance(obj.get(key), str):
                text = obj[key]
                break
    else:
        lines = text.splitlines()
        heads = [i for i, ln in enumerate(lines) if _SECTION.match(ln)]
        out_heads = [i for i in heads if lines[i].strip().lower().startswith("stdout")]
        if out_heads:
            start = out_heads[-1] + 1
            end = next((i for i in heads if i > out_heads[-1]), len(lines))
            text = "\n".join(lines[start:end])
    kept = [ln for ln in text.splitlines() if not _EXIT_LINE.match(ln.strip())]
    return last_non_empty_line("\n".join(kept)) or ""


@dataclass(frozen=True)
class ToolCallPlan:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """What the server answers to one request (before latency and transient failures)."""

    failure: FailureKind | None
    """The draw's failure; the server acts on timeout/server_error/rate_limited at step 0."""
    text: str | None
    tool_calls: tuple[ToolCallPlan, ...] = ()
    correct: bool | None = None
    """For dataset cases: whether the draw is a right one."""
    kind: Literal["classifier", "decider", "unknown"] = "unknown"


def _call(
    model_id: str,
    case_hash: str,
    rep: int,
    step: int,
    command: str,
    dialect: AgentDialect = "builtin",
) -> ToolCallPlan:
    call_id = (
        "call_" + hashlib.sha256(f"{model_id}|{case_hash}|{rep}|{step}".encode()).hexdigest()[:16]
    )
    if dialect == "builtin":
        return ToolCallPlan(call_id, "run_shell", {"command": command})
    if dialect == "kilo":
        args = {"command": command, "description": "Run a shell command in the workspace"}
        return ToolCallPlan(call_id, "bash", args)
    return ToolCallPlan(call_id, "bash", {"command": command})


def _first_command(profile: ModelProfile, case: DeciderCase, case_hash: str, rep: int) -> str:
    """Step 0: the reference solution when the draw is right, a look around when wrong."""
    if decider_draw(profile, case_hash, case.tier, rep).correct:
        return case.reference or "true"
    if unit(profile.id, case_hash, rep, "look") < 0.5 or not case.files:
        return "ls -la"
    return "cat " + shlex.quote(sorted(case.files)[0])


def plan_decider(
    profile: ModelProfile,
    case: DeciderCase,
    case_hash: str,
    rep: int,
    step: int,
    last_tool_output: str | None,
    tool_names: Sequence[str],
) -> Plan:
    """A decider answer. Agentic cases with a shell tool: step 0 runs a command (the
    reference solution when the draw is right, a harmless look around when wrong), later
    steps answer (the last line the reference printed, or a wrong answer) — as text, or for
    mini-swe-agent as a submit command."""
    draw = decider_draw(profile, case_hash, case.tier, rep)
    dialect = agent_dialect(tool_names) if is_agentic(case) else None
    if dialect and step == 0 and draw.failure not in ("empty", "malformed_json"):
        command = _first_command(profile, case, case_hash, rep)
        call = _call(profile.id, case_hash, rep, step, command, dialect)
        return Plan(draw.failure, None, (call,), draw.correct, "decider")
    if draw.failure == "empty":
        text = ""
    elif draw.failure == "malformed_json":
        text = garbled_answer(case)
    elif draw.correct:
        text = (
            tool_output_answer(last_tool_output or "") if dialect else correct_answer(case)
        ) or "(the command printed nothing)"
    else:
        text = wrong_answer(case)
    if dialect == "mini" and text:
        # Every mini-swe-agent turn must be a tool call: the answer goes out as a submission.
        call = _call(profile.id, case_hash, rep, step, submit_command(text), dialect)
        return Plan(draw.failure, None, (call,), draw.correct, "decider")
    return Plan(draw.failure, text, (), draw.correct, "decider")


def plan_classifier(profile: ModelProfile, label: Classification, case_hash: str, rep: int) -> Plan:
    draw = classifier_draw(profile, case_hash, rep)
    fields = classifier_fields(label, draw, profile.id, case_hash, rep)
    if draw.failure == "empty":
        text = ""
    elif draw.failure == "malformed_json":
        text = malformed_classification(fields)
    else:
        text = render_classification(fields, profile.id, case_hash, rep)
    return Plan(draw.failure, text, (), None, "classifier")


def plan_unknown(
    profile: ModelProfile,
    content_hash: str,
    rep: int,
    heuristic: Classification | None,
) -> Plan:
    """Traffic that is no dataset case: the heuristic classification for a classifier
    request, a generic (clearly simulated) answer otherwise."""
    failure = failure_draw(profile, content_hash, rep)
    if failure == "empty":
        return Plan(failure, "")
    if heuristic is not None:
        fields = {f: getattr(heuristic, f) for f in CLASSIFICATION_FIELDS}
        if failure == "malformed_json":
            return Plan(failure, malformed_classification(fields))
        return Plan(failure, json.dumps(fields))
    text = (
        f"This is a simulated answer from {profile.id}: the simulated provider only knows "
        "the benchmark datasets, so it cannot really help with this request.\n\nunknown"
    )
    return Plan(failure, text)
