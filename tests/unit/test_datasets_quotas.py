"""Quota rules of both datasets, on synthetic data and on the real data files.

Each rule is shown to fail when broken: a case removed, an id duplicated, a case moved to
another tier, a pair emptied. The synthetic datasets satisfy every quota by construction, so
these tests hold whatever state the real data is in; the `real_*` tests pin the real files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import cycle
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from api.cli.datasets import app
from contracts.cases import (
    FINAL_ANSWER_INSTRUCTION,
    ClassifierCase,
    DeciderCase,
    ExactCheck,
    JsonEqualCheck,
    RegexCheck,
    dataset_hash,
)
from contracts.classification import Classification
from contracts.decider_grading import run_check
from contracts.taxonomy import TAXONOMY_PAIRS, TIERS, Tier
from datasets.loader import load_datasets
from datasets.validate import (
    CLASSIFIER_TOTAL,
    DECIDER_PER_TIER,
    DECIDER_TOTAL,
    QuotaReport,
    answer_in_prompt,
    id_follows_scheme,
    quota_report,
)

# --- synthetic datasets that meet every quota ---------------------------------------------


def synthetic_classifier() -> list[ClassifierCase]:
    return [
        ClassifierCase(
            id=f"{task}-{sub}-topic-{n}",
            messages=({"role": "user", "content": f"{task} {sub} request {n}"},),  # type: ignore[arg-type]
            label=Classification(
                taskType=task,
                subtaskType=sub,
                reasoningComplexity="low",
                contextComplexity="low",
                executionMode="single_turn",
                requiresTools=False,
                riskLevel="low",
            ),
        )
        for task, sub in TAXONOMY_PAIRS
        for n in range(4)
    ]


def _tier_sequence() -> Iterator[Tier]:
    """Round-robin over the tiers, skipping those whose quota is used up."""
    left = dict(DECIDER_PER_TIER)
    for tier in cycle(TIERS):
        if not any(left.values()):
            return
        if left[tier]:
            left[tier] -= 1
            yield tier


def synthetic_decider() -> list[DeciderCase]:
    pairs = [p for p in TAXONOMY_PAIRS for _ in range(4)] + [TAXONOMY_PAIRS[0]] * 4
    cases = []
    for n, ((task, sub), tier) in enumerate(zip(pairs, _tier_sequence(), strict=True)):
        agentic = task == "agentic_execution"
        cases.append(
            DeciderCase(
                id=f"{task}-{sub}-task-{n}",
                taskType=task,
                subtaskType=sub,
                tier=tier,
                prompt=f"Compute it. {FINAL_ANSWER_INSTRUCTION}",
                check=ExactCheck(expected=str(n)),
                golden_answer=str(n),
                files={"input.txt": str(n)} if agentic else {},
                reference="cat input.txt" if agentic else None,
            )
        )
    return cases


def rules(report: QuotaReport) -> set[str]:
    return {f.rule for f in report.failures}


def messages(report: QuotaReport) -> str:
    return "\n".join(f.message for f in report.failures)


def test_synthetic_datasets_meet_every_quota() -> None:
    report = quota_report(synthetic_classifier(), synthetic_decider())
    assert report.failures == []
    assert report.ok
    assert report.classifier_total == CLASSIFIER_TOTAL and report.decider_total == DECIDER_TOTAL
    assert [t.cases for t in report.tiers] == [23, 31, 22]
    assert len(report.pairs) == 18


def test_removing_a_classifier_case_breaks_total_and_pair() -> None:
    cases = synthetic_classifier()
    removed = cases.pop(5)
    report = quota_report(cases, synthetic_decider())
    assert rules(report) == {"classifier.total", "classifier.per_pair"}
    pair = f"{removed.label.taskType}/{removed.label.subtaskType}"
    assert f"classifier pair {pair} has 3 cases, expected exactly 4" in messages(report)
    assert "classifier has 71 cases, expected exactly 72" in messages(report)


def test_classifier_pair_over_quota_fails_even_with_the_right_total() -> None:
    cases = synthetic_classifier()
    donor = cases[0]
    # replace a case of pair #2 by one more case of pair #1: total stays 72
    cases[-1] = donor.model_copy(update={"id": donor.id + "-extra"})
    report = quota_report(cases, synthetic_decider())
    assert rules(report) == {"classifier.per_pair"}
    assert "has 5 cases" in messages(report) and "has 3 cases" in messages(report)


def test_removing_a_decider_case_breaks_total_and_tier() -> None:
    cases = synthetic_decider()
    # remove one of the 4 extra cases of the first pair: pairs keep >= 4
    removed = cases.pop(73)
    report = quota_report(synthetic_classifier(), cases)
    assert rules(report) == {"decider.total", "decider.per_tier"}
    assert f"decider tier {removed.tier} has" in messages(report)


def test_decider_pair_below_four_fails() -> None:
    cases = synthetic_decider()
    victim = next(i for i, c in enumerate(cases) if c.subtaskType == "api_design")
    moved = cases[victim]
    cases[victim] = moved.model_copy(
        update={"taskType": "debugging", "subtaskType": "bug_fix", "id": "debugging-bug_fix-x"}
    )
    report = quota_report(synthetic_classifier(), cases)
    assert rules(report) == {"decider.per_pair"}
    assert "decider pair planning_design/api_design has 3 cases" in messages(report)


def test_moving_a_case_to_another_tier_breaks_the_tier_split() -> None:
    cases = synthetic_decider()
    i = next(i for i, c in enumerate(cases) if c.tier == "low")
    cases[i] = cases[i].model_copy(update={"tier": "high"})
    report = quota_report(synthetic_classifier(), cases)
    assert rules(report) == {"decider.per_tier"}
    assert "decider tier low has 22 cases, expected exactly 23" in messages(report)
    assert "decider tier high has 23 cases, expected exactly 22" in messages(report)


def test_a_tier_below_twenty_fails_the_minimum() -> None:
    cases = synthetic_decider()
    lows = [i for i, c in enumerate(cases) if c.tier == "low"][:4]
    for i in lows:
        cases[i] = cases[i].model_copy(update={"tier": "medium"})
    report = quota_report(synthetic_classifier(), cases)
    assert {"decider.per_tier", "decider.min_per_tier"} <= rules(report)
    assert "decider tier low has 19 cases, expected at least 20" in messages(report)


def test_a_tier_with_too_few_task_types_fails() -> None:
    cases = synthetic_decider()
    # keep the high tier on three task types only, by swapping tiers with medium cases
    keep = {"code_generation", "debugging", "refactoring"}
    highs = [i for i, c in enumerate(cases) if c.tier == "high" and c.taskType not in keep]
    mediums = [i for i, c in enumerate(cases) if c.tier == "medium" and c.taskType in keep]
    assert len(mediums) >= len(highs)
    for h, m in zip(highs, mediums, strict=False):
        cases[h] = cases[h].model_copy(update={"tier": "medium"})
        cases[m] = cases[m].model_copy(update={"tier": "high"})
    report = quota_report(synthetic_classifier(), cases)
    assert rules(report) == {"decider.task_types_per_tier"}
    assert "decider tier high covers 3 task types, expected at least 4" in messages(report)


def test_duplicate_id_in_memory_is_reported() -> None:
    cases = synthetic_decider()
    cases[1] = cases[1].model_copy(update={"id": cases[0].id})
    report = quota_report(synthetic_classifier(), cases)
    assert "ids.unique" in rules(report)
    assert f"decider id {cases[0].id!r} is used by 2 cases" in messages(report)


def test_id_shared_across_datasets_is_reported() -> None:
    classifier = synthetic_classifier()
    decider = synthetic_decider()
    decider[0] = decider[0].model_copy(update={"id": classifier[0].id})
    report = quota_report(classifier, decider)
    assert rules(report) == {"ids.cross_dataset"}


def test_agentic_case_without_files_or_reference_is_reported() -> None:
    cases = synthetic_decider()
    i = next(i for i, c in enumerate(cases) if c.taskType == "agentic_execution")
    # model_copy skips validation: the rule must hold for in-memory cases too
    cases[i] = cases[i].model_copy(update={"files": {}, "reference": None})
    report = quota_report(synthetic_classifier(), cases)
    assert rules(report) == {"decider.agentic_workspace"}
    assert (
        f"agentic_execution case {cases[i].id} has no workspace files and no reference solution"
        in messages(report)
    )


def test_id_scheme_violation_is_reported() -> None:
    cases = synthetic_decider()
    cases[0] = cases[0].model_copy(update={"id": "debugging-bug_fix-Upper_Case"})
    report = quota_report(synthetic_classifier(), cases)
    assert "ids.scheme" in rules(report)


@pytest.mark.parametrize(
    ("case_id", "ok"),
    [
        ("debugging-bug_fix-off-by-one", True),
        ("debugging-bug_fix-", False),
        ("debugging-bug_fix", False),
        ("debugging-performance-off-by-one", False),  # wrong subtype
        ("debugging-bug_fix-Off", False),
        ("debugging-bug_fix-snake_topic", False),
        ("debugging-bug_fix--leading-hyphen", False),
        ("code_generation-bug_fix-x", False),
    ],
)
def test_id_scheme(case_id: str, ok: bool) -> None:
    assert id_follows_scheme(case_id, "debugging", "bug_fix") is ok


def test_id_scheme_with_underscored_task_type() -> None:
    case_id = "agentic_execution-data_processing-csv-sum-2"
    assert id_follows_scheme(case_id, "agentic_execution", "data_processing")


# --- the CLI over a synthetic root --------------------------------------------------------


def _write_root(root: Path, classifier: list[ClassifierCase], decider: list[DeciderCase]) -> None:
    for name, cases in (("classifier", classifier), ("decider", decider)):
        (root / name).mkdir(parents=True)
        payload = [c.model_dump(mode="json") for c in cases]
        (root / name / "all.json").write_text(json.dumps(payload, indent=1))


def test_cli_check_passes_and_prints_counts(tmp_path: Path) -> None:
    _write_root(tmp_path, synthetic_classifier(), synthetic_decider())
    result = CliRunner().invoke(app, ["check", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "All dataset quotas hold." in result.output
    assert "planning_design" in result.output and "medium" in result.output


def test_cli_check_json_fails_naming_each_quota(tmp_path: Path) -> None:
    decider = synthetic_decider()
    decider.pop(73)
    _write_root(tmp_path, synthetic_classifier()[1:], decider)
    result = CliRunner().invoke(app, ["check", "--json", "--root", str(tmp_path)])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    failed = {f["rule"] for f in report["failures"]}
    assert failed == {
        "classifier.total",
        "classifier.per_pair",
        "decider.total",
        "decider.per_tier",
    }
    assert report["decider_total"] == 75
    assert {t["tier"]: t["cases"] for t in report["tiers"]}.keys() == {"low", "medium", "high"}


def test_cli_check_json_prints_each_datasets_content_hash(tmp_path: Path) -> None:
    classifier, decider = synthetic_classifier(), synthetic_decider()

    def hashes(root: Path) -> dict[str, str]:
        result = CliRunner().invoke(app, ["check", "--json", "--root", str(root)])
        assert result.exit_code == 0, result.output
        out: dict[str, str] = json.loads(result.output)["dataset_hashes"]
        return out

    _write_root(tmp_path / "a", classifier, decider)
    before = hashes(tmp_path / "a")
    assert before == {"classifier": dataset_hash(classifier), "decider": dataset_hash(decider)}
    # One decider case edited: only the decider hash moves (so only decider runs re-measure).
    edited = [decider[0].model_copy(update={"golden_answer": "edited"}), *decider[1:]]
    _write_root(tmp_path / "b", classifier, edited)
    after = hashes(tmp_path / "b")
    assert after["classifier"] == before["classifier"]
    assert after["decider"] != before["decider"]
    # Order and file layout are not content.
    assert dataset_hash(list(reversed(decider))) == before["decider"]


def test_cli_check_text_names_failed_quotas(tmp_path: Path) -> None:
    _write_root(tmp_path, synthetic_classifier()[1:], synthetic_decider())
    result = CliRunner().invoke(app, ["check", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert "classifier has 71 cases, expected exactly 72" in result.output


def test_cli_check_reports_load_problems(tmp_path: Path) -> None:
    _write_root(tmp_path, synthetic_classifier(), synthetic_decider())
    (tmp_path / "decider" / "broken.json").write_text("{")
    result = CliRunner().invoke(app, ["check", "--json", "--root", str(tmp_path)])
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["ok"] is False and out["problems"][0]["file"] == "decider/broken.json"


# --- the real data files ------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> tuple[list[ClassifierCase], list[DeciderCase]]:
    data = load_datasets()  # raises DatasetError naming every problem
    return data.classifier, data.decider


def test_real_datasets_meet_every_quota(
    real: tuple[list[ClassifierCase], list[DeciderCase]],
) -> None:
    report = quota_report(*real)
    assert report.failures == [], messages(report)


def test_real_quota_tests_catch_a_removed_case(
    real: tuple[list[ClassifierCase], list[DeciderCase]],
) -> None:
    classifier, decider = real
    assert "classifier.total" in rules(quota_report(classifier[1:], decider))
    assert "classifier.per_pair" in rules(quota_report(classifier[1:], decider))
    assert "decider.total" in rules(quota_report(classifier, decider[1:]))
    assert "decider.per_tier" in rules(quota_report(classifier, decider[1:]))


def test_real_quota_tests_catch_a_duplicated_id_and_a_moved_tier(
    real: tuple[list[ClassifierCase], list[DeciderCase]],
) -> None:
    classifier, decider = real
    dup = [*decider[:-1], decider[-1].model_copy(update={"id": decider[0].id})]
    assert "ids.unique" in rules(quota_report(classifier, dup))
    first = decider[0]
    other: Tier = "high" if first.tier != "high" else "low"
    moved = [first.model_copy(update={"tier": other}), *decider[1:]]
    assert "decider.per_tier" in rules(quota_report(classifier, moved))


def test_real_ids_follow_the_scheme(real: tuple[list[ClassifierCase], list[DeciderCase]]) -> None:
    classifier, decider = real
    bad = [c.id for c in classifier if not id_follows_scheme(c.id, *_pair(c))]
    bad += [d.id for d in decider if not id_follows_scheme(d.id, d.taskType, d.subtaskType)]
    assert bad == []


def _pair(c: ClassifierCase) -> tuple[str, str]:
    return c.label.taskType, c.label.subtaskType


def test_regex_and_json_expectations_are_validated_on_load() -> None:
    with pytest.raises(ValidationError, match="invalid regex"):
        RegexCheck(expected="(unclosed")
    with pytest.raises(ValidationError, match="unparsable json_equal"):
        JsonEqualCheck(expected="{'not': json}")


def test_real_regexes_refuse_the_golden_answer_with_anything_around_it(
    real: tuple[list[ClassifierCase], list[DeciderCase]],
) -> None:
    # An unanchored pattern would also pass an answer that lists extra items or buries the
    # right one in a guess; every real regex must pin the whole answer line.
    loose = {}
    for d in real[1]:
        if isinstance(d.check, RegexCheck):
            for padded in (f"{d.golden_answer}, and more", f"maybe {d.golden_answer}"):
                if run_check(d.check, padded).passed:
                    loose[d.id] = padded
    assert loose == {}


def _perturbed(value: object) -> object:
    """A JSON value that differs from `value` in one place."""
    if isinstance(value, list) and value:
        return value[:-1]
    if isinstance(value, dict) and value:
        first = next(iter(value))
        return {**value, first: _perturbed(value[first])}
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    return [value]


def test_real_json_equal_checks_refuse_a_value_off_by_one_part(
    real: tuple[list[ClassifierCase], list[DeciderCase]],
) -> None:
    lenient = []
    for d in real[1]:
        if isinstance(d.check, JsonEqualCheck):
            value = d.check.expected_value()
            assert run_check(d.check, json.dumps(value, indent=2)).passed, d.id
            if run_check(d.check, json.dumps(_perturbed(value))).passed:
                lenient.append(d.id)
    assert lenient == []


def test_real_cases_round_trip_through_json(
    real: tuple[list[ClassifierCase], list[DeciderCase]],
) -> None:
    classifier, decider = real
    for c in classifier:
        assert ClassifierCase.model_validate_json(c.model_dump_json()) == c
    for d in decider:
        assert DeciderCase.model_validate_json(d.model_dump_json()) == d


def test_real_golden_answers_pass_their_own_checks(
    real: tuple[list[ClassifierCase], list[DeciderCase]],
) -> None:
    failing = {}
    for d in real[1]:
        result = run_check(d.check, d.golden_answer)
        if not result.passed:
            failing[d.id] = result.detail
    assert failing == {}


def test_real_prompts_end_with_the_final_answer_instruction(
    real: tuple[list[ClassifierCase], list[DeciderCase]],
) -> None:
    assert all(d.prompt.rstrip().endswith(FINAL_ANSWER_INSTRUCTION) for d in real[1])


# --- no expected answer can be read off the prompt ----------------------------------------


def _asking(prompt: str, check: dict[str, object], golden: str) -> DeciderCase:
    return DeciderCase.model_validate(
        {
            "id": "debugging-bug_fix-leak",
            "taskType": "debugging",
            "subtaskType": "bug_fix",
            "tier": "low",
            "prompt": f"{prompt}\n\n{FINAL_ANSWER_INSTRUCTION}",
            "check": check,
            "golden_answer": golden,
        }
    )


LEAKING = [
    (
        "exact, stated",
        "Print the sum (it is 1337) and report it.",
        {"kind": "exact", "expected": "1337"},
        "1337",
    ),
    (
        "exact, a line of the prompt",
        "Report the line it prints:\n`PASS abc123`",
        {"kind": "exact", "expected": "PASS abc123"},
        "PASS abc123",
    ),
    (
        # the old kill-slugify-mutants: the goal says K = N, and N is the mutant count
        "exact, a form filled with the obvious numbers",
        "Keep improving the tests until every mutant is killed. Report the summary line "
        "(it has the form `killed K/N`).",
        {"kind": "exact", "expected": "killed 6/6"},
        "killed 6/6",
    ),
    (
        "regex",
        "Which statuses? They are 429, 412 and 413, in that order.",
        {"kind": "regex", "expected": r"429,\s*412"},
        "429, 412, 413",
    ),
    (
        "contains_all",
        "Name the culprit: the parser, in module io.",
        {"kind": "contains_all", "expected": ["parser", "IO"]},
        "parser in io",
    ),
    (
        "json_equal",
        'Given {"b": 2, "a": 1}, answer with that object.',
        {"kind": "json_equal", "expected": '{"a": 1, "b": 2}'},
        '{"a": 1, "b": 2}',
    ),
    ("json_equal scalar", "It returns 17.", {"kind": "json_equal", "expected": "17"}, "17"),
]


@pytest.mark.parametrize(
    ("name", "prompt", "check", "golden"), LEAKING, ids=[x[0] for x in LEAKING]
)
def test_answers_readable_off_the_prompt_are_found(
    name: str, prompt: str, check: dict[str, object], golden: str
) -> None:
    assert answer_in_prompt(_asking(prompt, check, golden)) is not None, name


NOT_LEAKING = [
    # a number inside a larger one, or part of a word, is not the answer
    ("Lines are 1024 bytes; report the count.", {"kind": "exact", "expected": "102"}, "102"),
    ("Use a 8-digit id; report v8.", {"kind": "exact", "expected": "8"}, "8"),
    # the form is given, but the digest only the work can produce
    (
        "Report the summary line (it has the form `killed K/N <digest>`).",
        {"kind": "exact", "expected": "killed 6/6 892dd19d6f64"},
        "killed 6/6 892dd19d6f64",
    ),
    (
        "Answer as `<region> <total>`.",
        {"kind": "exact", "expected": "South 332.94"},
        "South 332.94",
    ),
    ("Which list? e.g. [1, 2].", {"kind": "json_equal", "expected": "[2, 1]"}, "[2, 1]"),
]


@pytest.mark.parametrize(("prompt", "check", "golden"), NOT_LEAKING)
def test_answers_that_need_the_work_are_not_flagged(
    prompt: str, check: dict[str, object], golden: str
) -> None:
    assert answer_in_prompt(_asking(prompt, check, golden)) is None


def test_a_leaking_answer_breaks_the_quota_report() -> None:
    classifier, decider = synthetic_classifier(), synthetic_decider()
    first = decider[0]
    leaky = first.model_copy(update={"prompt": f"It is {first.golden_answer}. {first.prompt}"})
    report = quota_report(classifier, [leaky, *decider[1:]])
    assert rules(report) == {"decider.answer_in_prompt"}
    assert f"the expected answer of {first.id} can be read off its prompt" in messages(report)


def test_no_real_prompt_contains_its_expected_answer(
    real: tuple[list[ClassifierCase], list[DeciderCase]],
) -> None:
    """The plain grep: no prompt holds its expected string (nor a regex match of it)."""
    found = []
    for d in real[1]:
        prompt = d.prompt
        if isinstance(d.check, RegexCheck):
            hit = any(re.search(d.check.expected, ln.strip()) for ln in prompt.splitlines())
        elif isinstance(d.check, ExactCheck | JsonEqualCheck):
            hit = d.check.expected in prompt or d.golden_answer in prompt
        else:
            hit = all(e.lower() in prompt.lower() for e in d.check.expected)
        if hit:
            found.append(d.id)
    assert found == []
    assert [d.id for d in real[1] if answer_in_prompt(d) is not None] == []


def test_cli_check_refuses_an_answer_in_its_prompt(tmp_path: Path) -> None:
    decider = synthetic_decider()
    decider[5] = decider[5].model_copy(
        update={"prompt": f"Report {decider[5].golden_answer}. {FINAL_ANSWER_INSTRUCTION}"}
    )
    _write_root(tmp_path, synthetic_classifier(), decider)
    result = CliRunner().invoke(app, ["check", "--json", "--root", str(tmp_path)])
    assert result.exit_code == 1
    failures = json.loads(result.stdout)["failures"]
    assert [f["rule"] for f in failures] == ["decider.answer_in_prompt"]
    assert decider[5].id in failures[0]["message"]
