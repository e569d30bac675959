"""The simulated provider's pure behaviour: determinism, served answers realise the draws,
wrong answers fail their checks, classifier answers parse (simulator/behaviour.py)."""

from __future__ import annotations

import itertools
import json
import shlex
from functools import cache

import pytest

from contracts.cases import (
    FINAL_ANSWER_INSTRUCTION,
    ChatMessage,
    ClassifierCase,
    ContainsAllCheck,
    DeciderCase,
    ExactCheck,
    JsonEqualCheck,
    RegexCheck,
)
from contracts.classification import CLASSIFICATION_FIELDS, Classification
from contracts.classifier_prompt import ParseFailure, parse_classification
from contracts.decider_grading import run_check
from contracts.taxonomy import EXECUTION_MODES, LEVELS, TAXONOMY_PAIRS, subtype_belongs
from simulator import behaviour, dialects
from simulator.behaviour import (
    classifier_draw,
    classifier_fields,
    decider_draw,
    failure_draw,
    plan_classifier,
    plan_decider,
    tool_output_answer,
    unit,
)
from simulator.catalog import classifier_case_hash, decider_case_hash, load_cases
from simulator.fleet import Fleet, ModelProfile, load_fleet

REPS = (0, 1, 2)


@cache
def fleet() -> Fleet:
    return load_fleet()


@cache
def datasets() -> tuple[list[ClassifierCase], list[DeciderCase]]:
    return load_cases()


def synthetic_classifier_cases() -> list[ClassifierCase]:
    """One case per (pair, level combination sample): covers every label shape."""
    cases = []
    combos = itertools.cycle(itertools.product(LEVELS, LEVELS, EXECUTION_MODES, LEVELS))
    for i, (task, sub) in enumerate(TAXONOMY_PAIRS * 3):
        r, c, e, k = next(combos)
        label = Classification(
            taskType=task,
            subtaskType=sub,
            reasoningComplexity=r,
            contextComplexity=c,
            executionMode=e,
            requiresTools=i % 2 == 0,
            riskLevel=k,
        )
        cases.append(
            ClassifierCase(
                id=f"{task}-{sub}-synthetic-{i}",
                messages=(ChatMessage(role="user", content=f"synthetic request {i} about {sub}"),),
                label=label,
            )
        )
    return cases


def synthetic_decider_cases() -> list[DeciderCase]:
    checks = [
        (ExactCheck(expected="42"), "42"),
        (ExactCheck(expected="HTTPError"), "HTTPError"),
        (ContainsAllCheck(expected=("alpha", "beta")), "alpha, beta"),
        (RegexCheck(expected=r"^\d{3}$"), "404"),
        (RegexCheck(expected=r"^v\d+\.\d+\.\d+$"), "v1.2.3"),
        (JsonEqualCheck(expected='{"a": 1, "b": [2, 3]}'), '{"a": 1, "b": [2, 3]}'),
        (JsonEqualCheck(expected="[1, 2, 3]"), "[1, 2, 3]"),
        (JsonEqualCheck(expected='"done"'), '"done"'),
        (ExactCheck(expected="src/app/main.py"), "src/app/main.py"),
        (ContainsAllCheck(expected=("cache",)), "cache"),
    ]
    out = []
    for i, (check, golden) in enumerate(checks):
        for tier, agentic in (("low", False), ("high", True)):
            out.append(
                DeciderCase(
                    id=f"agentic_execution-shell_automation-syn-{i}-{tier}"
                    if agentic
                    else f"investigation-codebase_question-syn-{i}-{tier}",
                    taskType="agentic_execution" if agentic else "investigation",
                    subtaskType="shell_automation" if agentic else "codebase_question",
                    tier=tier,
                    prompt=f"Synthetic task {i}.\n\n{FINAL_ANSWER_INSTRUCTION}",
                    check=check,
                    golden_answer=golden,
                    files={"data/input.txt": "x\n"} if agentic else {},
                    reference=f"printf '%s\\n' {json.dumps(golden)}" if agentic else None,
                )
            )
    return out


def all_classifier_cases() -> list[ClassifierCase]:
    return datasets()[0] + synthetic_classifier_cases()


def all_decider_cases() -> list[DeciderCase]:
    return datasets()[1] + synthetic_decider_cases()


# -- draws ---------------------------------------------------------------------------------


def test_unit_is_deterministic_uniform_and_separates_parts() -> None:
    assert unit("m", "h", 0, "f") == unit("m", "h", 0, "f")
    assert unit("m", "h", 0, "f") != unit("m", "h", 1, "f")
    assert unit("ab", "c") != unit("a", "bc")  # parts are delimited
    values = [unit("u", i) for i in range(4000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert abs(sum(values) / len(values) - 0.5) < 0.02


@pytest.mark.parametrize("model", [m.id for m in load_fleet().models])
def test_failure_rates_match_declared_on_synthetic_keys(model: str) -> None:
    profile = fleet().get(model)
    assert profile is not None
    n = 20_000
    counts: dict[str | None, int] = {}
    for i in range(n):
        kind = failure_draw(profile, f"synthetic-{i}", 0)
        counts[kind] = counts.get(kind, 0) + 1
    for kind in behaviour.FAILURE_ORDER:
        p = getattr(profile.failures, kind)
        se = (p * (1 - p) / n) ** 0.5
        assert abs(counts.get(kind, 0) / n - p) <= 4 * se + 1e-12, kind


def test_draws_are_deterministic_per_model_case_rep() -> None:
    profile = fleet().models[2]
    a = [classifier_draw(profile, f"h{i}", r) for i in range(50) for r in REPS]
    b = [classifier_draw(profile, f"h{i}", r) for i in range(50) for r in REPS]
    assert a == b
    assert len({str(d) for d in a}) > 10  # and they do vary across cases and reps
    assert [decider_draw(profile, f"h{i}", "low", 0) for i in range(50)] == [
        decider_draw(profile, f"h{i}", "low", 0) for i in range(50)
    ]


def test_terminal_failures_are_always_wrong() -> None:
    profile = fleet().get("sim/flaky")
    assert profile is not None
    for i in range(3000):
        d = decider_draw(profile, f"h{i}", "low", 0)
        c = classifier_draw(profile, f"h{i}", 0)
        if d.failure in behaviour.TERMINAL_FAILURES:
            assert not d.correct
            assert not any(c.correct.values())


# -- classifier answers --------------------------------------------------------------------


@pytest.mark.parametrize("model", [m.id for m in load_fleet().models])
def test_classifier_answers_parse_and_realise_the_draw(model: str) -> None:
    profile = fleet().get(model)
    assert profile is not None
    for case in all_classifier_cases():
        digest = classifier_case_hash(case)
        for rep in REPS:
            draw = classifier_draw(profile, digest, rep)
            plan = plan_classifier(profile, case.label, digest, rep)
            assert plan.text is not None
            parsed = parse_classification(plan.text)
            if draw.failure in ("empty", "malformed_json"):
                assert isinstance(parsed, ParseFailure), plan.text
                continue
            assert isinstance(parsed, Classification), (plan.text, parsed)
            assert subtype_belongs(parsed.taskType, parsed.subtaskType)
            for f in CLASSIFICATION_FIELDS:
                same = getattr(parsed, f) == getattr(case.label, f)
                assert same == draw.correct[f], (case.id, rep, f)


def test_wrong_classifier_levels_are_neighbours() -> None:
    profile = fleet().get("sim/tiny")
    assert profile is not None
    for case in synthetic_classifier_cases():
        digest = classifier_case_hash(case)
        draw = classifier_draw(profile, digest, 0)
        fields = classifier_fields(case.label, draw, profile.id, digest, 0)
        for f in ("reasoningComplexity", "contextComplexity", "riskLevel"):
            got, right = LEVELS.index(fields[f]), LEVELS.index(getattr(case.label, f))
            assert abs(got - right) == (0 if draw.correct[f] else 1)


def test_classifier_answers_use_several_styles() -> None:
    profile = fleet().get("sim/frontier")
    assert profile is not None
    texts = [
        plan_classifier(profile, c.label, classifier_case_hash(c), r).text or ""
        for c in synthetic_classifier_cases()
        for r in REPS
    ]
    assert any(t.startswith("{") for t in texts)
    assert any(t.startswith("```json") for t in texts)
    assert any(t.startswith("Here is") for t in texts)


# -- decider answers -----------------------------------------------------------------------


def test_wrong_answers_fail_and_correct_answers_pass_every_check() -> None:
    for case in all_decider_cases():
        assert run_check(case.check, behaviour.correct_answer(case)).passed, case.id
        wrong = behaviour.wrong_answer(case)
        assert wrong.strip()
        assert not run_check(case.check, wrong).passed, (case.id, wrong)
        assert not run_check(case.check, behaviour.garbled_answer(case)).passed, case.id


def test_wrong_answers_are_plausible_perturbations() -> None:
    case = next(c for c in synthetic_decider_cases() if c.golden_answer == "42")
    assert behaviour.wrong_answer(case) == "43"
    case = next(c for c in synthetic_decider_cases() if c.golden_answer == "[1, 2, 3]")
    assert json.loads(behaviour.wrong_answer(case)) in ([1, 2, 4], [1, 2])  # off by one


TOOL_OUTPUT_FORMATS = [
    "{golden}\n",
    "building...\n{golden}\n\n",
    json.dumps({"exit_code": 0, "stdout": "line\n{golden}\n", "stderr": "warn\n"}),
    "exit_code: 0\nstdout:\nline\n{golden}\nstderr:\nsome warning\n",
    "{golden}\n[exit code 0]\n",
]


@pytest.mark.parametrize("fmt", TOOL_OUTPUT_FORMATS)
def test_tool_output_answer_takes_the_last_stdout_line(fmt: str) -> None:
    assert tool_output_answer(fmt.replace("{golden}", "answer 7")) == "answer 7"


@pytest.mark.parametrize("model", [m.id for m in load_fleet().models])
def test_decider_answers_realise_the_draw(model: str) -> None:
    profile = fleet().get(model)
    assert profile is not None
    tools = behaviour.HARNESS_TOOLS
    for case in all_decider_cases():
        digest = decider_case_hash(case)
        for rep in REPS:
            draw = decider_draw(profile, digest, case.tier, rep)
            first = plan_decider(profile, case, digest, rep, 0, None, tools)
            if behaviour.is_agentic(case) and draw.failure not in ("empty", "malformed_json"):
                assert first.text is None and len(first.tool_calls) == 1
                call = first.tool_calls[0]
                assert call.name == "run_shell"
                if draw.correct:
                    assert call.arguments == {"command": case.reference}
                    # the container would print the reference's output; simulate that
                    output = f"exit_code: 0\nstdout:\n{case.golden_answer}\n"
                else:
                    assert call.arguments["command"] != case.reference
                    output = "total 0\n"
                final = plan_decider(profile, case, digest, rep, 1, output, tools)
            else:
                final = first
            assert not final.tool_calls
            passed = run_check(case.check, final.text or "").passed
            assert passed == draw.correct, (case.id, rep, final.text)


def test_decider_without_tools_answers_directly() -> None:
    profile = fleet().get("sim/frontier")
    assert profile is not None
    case = next(c for c in synthetic_decider_cases() if behaviour.is_agentic(c))
    plan = plan_decider(profile, case, decider_case_hash(case), 0, 0, None, [])
    assert not plan.tool_calls and plan.text


def test_latency_is_deterministic_lognormal_and_scaled() -> None:
    profile: ModelProfile = fleet().get("sim/balanced")  # type: ignore[assignment]
    assert behaviour.latency_ms(profile, "h", 0, 0, 0.0) == 0.0
    xs = sorted(behaviour.latency_ms(profile, f"h{i}", 0, 0, 1.0) for i in range(2001))
    assert xs == sorted(behaviour.latency_ms(profile, f"h{i}", 0, 0, 1.0) for i in range(2001))
    median = xs[len(xs) // 2]
    assert abs(median - profile.latency.median_ms) / profile.latency.median_ms < 0.08
    assert behaviour.latency_ms(profile, "h", 0, 0, 2.0) == pytest.approx(
        2 * behaviour.latency_ms(profile, "h", 0, 0, 1.0)
    )


KILO_TOOLS = ("bash", "edit", "glob", "grep", "read", "write")
MINI_TOOLS = ("bash",)


def test_the_request_tools_reveal_the_agent_dialect() -> None:
    assert dialects.agent_dialect(behaviour.HARNESS_TOOLS) == "builtin"
    assert dialects.agent_dialect(KILO_TOOLS) == "kilo"
    assert dialects.agent_dialect(MINI_TOOLS) == "mini"
    assert dialects.agent_dialect(["read"]) is None


def _mini_submission(command: str) -> str:
    """What mini-swe-agent takes as the submission of a finishing command (it runs it in
    bash; a printf of literal words is re-derived here by shell-splitting)."""
    words = shlex.split(command)
    assert words[:2] == ["printf", "%s\\n"], command
    lines = words[2:]
    assert lines[0] == dialects.SUBMIT_MARKER
    return "\n".join(lines[1:]) + "\n"


@pytest.mark.parametrize("model", ["sim/frontier", "sim/tiny", "sim/flaky"])
def test_cli_dialects_realise_the_draw_through_their_own_tools(model: str) -> None:
    profile = fleet().get(model)
    assert profile is not None
    for case in [c for c in all_decider_cases() if behaviour.is_agentic(c)]:
        digest = decider_case_hash(case)
        for rep in REPS:
            draw = decider_draw(profile, digest, case.tier, rep)
            if draw.failure in ("empty", "malformed_json"):
                continue
            for tools in (KILO_TOOLS, MINI_TOOLS):
                first = plan_decider(profile, case, digest, rep, 0, None, tools)
                (call,) = first.tool_calls
                assert call.name == "bash"
                assert (call.arguments["command"] == case.reference) == draw.correct
                output = case.golden_answer if draw.correct else "total 0\n"
                if tools == MINI_TOOLS:  # mini-swe-agent's observation is a JSON object
                    output = json.dumps({"returncode": 0, "output": output + "\n"})
                final = plan_decider(profile, case, digest, rep, 1, output, tools)
                if tools == KILO_TOOLS:
                    assert not final.tool_calls
                    answer = final.text or ""
                else:
                    (submit,) = final.tool_calls
                    assert final.text is None
                    answer = _mini_submission(submit.arguments["command"])
                assert run_check(case.check, answer).passed == draw.correct, (case.id, rep)
