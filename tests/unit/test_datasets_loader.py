"""The dataset loader: every problem kind is reported, naming the file, the case and the issue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contracts.cases import FINAL_ANSWER_INSTRUCTION, ClassifierCase, DeciderCase
from datasets.loader import (
    PACKAGE_ROOT,
    DatasetError,
    DatasetProblem,
    load_classifier_cases,
    load_datasets,
    load_decider_cases,
)


def decider(id_: str = "debugging-bug_fix-off-by-one", **over: Any) -> dict[str, Any]:
    task, sub = id_.split("-")[:2]
    case: dict[str, Any] = {
        "id": id_,
        "taskType": task,
        "subtaskType": sub,
        "tier": "low",
        "prompt": f"What is 6*7? {FINAL_ANSWER_INSTRUCTION}",
        "check": {"kind": "exact", "expected": "42"},
        "golden_answer": "42",
    }
    case.update(over)
    return case


def classifier(id_: str = "debugging-bug_fix-null-deref", **over: Any) -> dict[str, Any]:
    task, sub = id_.split("-")[:2]
    case: dict[str, Any] = {
        "id": id_,
        "messages": [{"role": "user", "content": "my app crashes on null, fix it"}],
        "label": {
            "taskType": task,
            "subtaskType": sub,
            "reasoningComplexity": "low",
            "contextComplexity": "low",
            "executionMode": "single_turn",
            "requiresTools": False,
            "riskLevel": "low",
        },
    }
    case.update(over)
    return case


def write(root: Path, rel: str, content: Any) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write(tmp_path, "classifier/a.json", [classifier()])
    write(tmp_path, "decider/a.json", [decider()])
    return tmp_path


def decider_problems(root: Path) -> list[DatasetProblem]:
    with pytest.raises(DatasetError) as err:
        load_decider_cases(root)
    return err.value.problems


def classifier_problems(root: Path) -> list[DatasetProblem]:
    with pytest.raises(DatasetError) as err:
        load_classifier_cases(root)
    return err.value.problems


def test_loads_valid_files_in_file_then_array_order(root: Path) -> None:
    write(root, "decider/b.json", [decider("refactoring-cleanup-dead-code", tier="high")])
    write(root, "decider/0.json", [decider("debugging-performance-n-plus-one")])
    cases = load_decider_cases(root)
    assert [c.id for c in cases] == [
        "debugging-performance-n-plus-one",
        "debugging-bug_fix-off-by-one",
        "refactoring-cleanup-dead-code",
    ]
    assert all(isinstance(c, DeciderCase) for c in cases)
    (c,) = load_classifier_cases(root)
    assert isinstance(c, ClassifierCase)
    both = load_datasets(root)
    assert len(both.classifier) == 1 and len(both.decider) == 3


def test_default_root_is_the_package_directory() -> None:
    assert Path(__file__).resolve().parents[2] / "datasets" == PACKAGE_ROOT
    assert (PACKAGE_ROOT / "classifier").is_dir() and (PACKAGE_ROOT / "decider").is_dir()


def test_unknown_field(root: Path) -> None:
    write(root, "decider/a.json", [decider(notes="x")])
    (p,) = decider_problems(root)
    assert p.file == "decider/a.json"
    assert p.case == "debugging-bug_fix-off-by-one"
    assert p.message == "unknown field 'notes'"


def test_unknown_nested_field_names_its_path(root: Path) -> None:
    case = classifier()
    case["label"]["urgency"] = "high"
    write(root, "classifier/a.json", [case])
    (p,) = classifier_problems(root)
    assert p.message == "unknown field 'label.urgency'"


def test_missing_field(root: Path) -> None:
    case = decider()
    del case["golden_answer"]
    write(root, "decider/a.json", [case])
    (p,) = decider_problems(root)
    assert p.message == "missing field 'golden_answer'"


def test_case_without_id_is_named_by_index(root: Path) -> None:
    case = decider()
    del case["id"]
    write(root, "decider/a.json", [decider(), case])
    (p,) = decider_problems(root)
    assert p.case == "#1" and p.index == 1
    assert p.message == "missing field 'id'"
    assert str(p) == "decider/a.json #1: missing field 'id'"


def test_invalid_value(root: Path) -> None:
    write(root, "decider/a.json", [decider(tier="extreme")])
    (p,) = decider_problems(root)
    assert p.message.startswith("invalid value for 'tier': 'extreme'")


def test_invalid_check_kind(root: Path) -> None:
    write(root, "decider/a.json", [decider(check={"kind": "fuzzy", "expected": "42"})])
    (p,) = decider_problems(root)
    assert "unknown check kind 'fuzzy'" in p.message


def test_duplicate_id_in_one_dataset(root: Path) -> None:
    write(root, "decider/b.json", [decider()])
    (p,) = decider_problems(root)
    assert p.file == "decider/b.json"
    assert p.message == "duplicate id (first used in decider/a.json #0)"


def test_id_used_in_both_datasets(root: Path) -> None:
    shared = "debugging-bug_fix-null-deref"
    write(root, "decider/a.json", [decider(shared)])
    (p,) = decider_problems(root)
    assert p.case == shared and "also used by the classifier dataset" in p.message
    (q,) = classifier_problems(root)
    assert q.case == shared and "also used by the decider dataset" in q.message
    with pytest.raises(DatasetError) as err:
        load_datasets(root)
    assert [x.case for x in err.value.problems] == [shared]


def test_subtype_not_of_its_task_type(root: Path) -> None:
    write(root, "decider/a.json", [decider(subtaskType="migration")])
    problems = [p.message for p in decider_problems(root)]
    assert "subtaskType 'migration' does not belong to taskType 'debugging'" in problems


def test_subtype_mismatch_reported_alongside_other_field_errors(root: Path) -> None:
    """Pydantic skips model validators when a field fails; the loader still reports both."""
    write(root, "decider/a.json", [decider(subtaskType="migration", tier="nope")])
    messages = [p.message for p in decider_problems(root)]
    assert "subtaskType 'migration' does not belong to taskType 'debugging'" in messages
    assert any(m.startswith("invalid value for 'tier'") for m in messages)


def test_classifier_label_subtype_mismatch(root: Path) -> None:
    case = classifier()
    case["label"]["subtaskType"] = "tests"
    write(root, "classifier/a.json", [case])
    messages = [p.message for p in classifier_problems(root)]
    assert "label: subtaskType 'tests' does not belong to taskType 'debugging'" in messages


def test_invalid_regex(root: Path) -> None:
    write(root, "decider/a.json", [decider(check={"kind": "regex", "expected": "(4[0-9]"})])
    (p,) = decider_problems(root)
    assert p.message.startswith("check.expected: invalid regex '(4[0-9]'")


def test_unparsable_json_equal_expectation(root: Path) -> None:
    write(root, "decider/a.json", [decider(check={"kind": "json_equal", "expected": "{a: 1}"})])
    (p,) = decider_problems(root)
    assert p.message.startswith("check.expected: unparsable json_equal expectation")


def test_file_that_is_not_json(root: Path) -> None:
    write(root, "decider/b.json", '[{"id": "x",]')
    (p,) = decider_problems(root)
    assert p.file == "decider/b.json" and p.case is None
    assert p.message.startswith("not valid JSON:") and "line 1" in p.message


def test_file_that_is_not_an_array(root: Path) -> None:
    write(root, "decider/b.json", decider("debugging-bug_fix-other"))
    (p,) = decider_problems(root)
    assert p.message == "must hold a JSON array of cases, got an object"


def test_array_item_that_is_not_an_object(root: Path) -> None:
    write(root, "decider/a.json", [decider(), "oops"])
    (p,) = decider_problems(root)
    assert p.case == "#1" and p.message == "expected a JSON object, got a string"


def test_stray_non_json_file(root: Path) -> None:
    write(root, "decider/notes.yaml", "a: 1")
    write(root, "decider/.gitkeep", "")
    (p,) = decider_problems(root)
    assert p.file == "decider/notes.yaml" and "not a .json file" in p.message


def test_missing_or_empty_dataset_directory(tmp_path: Path) -> None:
    assert "does not exist" in decider_problems(tmp_path)[0].message
    (tmp_path / "decider").mkdir()
    assert decider_problems(tmp_path)[0].message == "no *.json files found"


def test_all_problems_are_collected_not_just_the_first(root: Path) -> None:
    bad_regex = decider("debugging-performance-slow", check={"kind": "regex", "expected": "["})
    write(root, "decider/a.json", [decider(extra=1), bad_regex, decider()])
    write(root, "decider/b.json", "not json")
    problems = decider_problems(root)
    assert len(problems) == 4
    assert {p.file for p in problems} == {"decider/a.json", "decider/b.json"}
    text = str(DatasetError(problems))
    assert text.startswith("4 dataset problems:")
    assert "decider/a.json #1 debugging-performance-slow: check.expected: invalid regex" in text


def test_agentic_case_without_workspace_is_refused(root: Path) -> None:
    case = decider("agentic_execution-shell_automation-count-lines", reference="wc -l < a.txt")
    write(root, "decider/a.json", [case])
    (p,) = decider_problems(root)
    assert "agentic_execution cases need workspace files" in p.message
