"""`provenroute datasets verify` against the real container image (Docker required).

In CI a missing Docker daemon or image is a failure, never a skip: build it with `make image`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli.datasets import app
from contracts.cases import FINAL_ANSWER_INSTRUCTION
from datasets.loader import load_decider_cases

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_every_reference_solution_passes_in_the_container() -> None:
    cases = load_decider_cases()
    result = CliRunner().invoke(app, ["verify", "--jobs", "4"])
    assert result.exit_code == 0, result.output
    assert f"All {len(cases)} cases verified." in result.output
    assert sum(1 for c in cases if c.reference) > 0


def _agentic(
    topic: str, reference: str, files: dict[str, str], post_check: str | None = None
) -> dict[str, object]:
    return {
        "id": f"agentic_execution-data_processing-{topic}",
        "taskType": "agentic_execution",
        "subtaskType": "data_processing",
        "tier": "low",
        "prompt": f"Sum the numbers in nums.txt. {FINAL_ANSWER_INSTRUCTION}",
        "check": {"kind": "exact", "expected": "6"},
        "golden_answer": "6",
        "files": files,
        "timeout_s": 10,
        "reference": reference,
        **({"post_check": {"script": post_check}} if post_check else {}),
    }


@pytest.mark.timeout(300)
def test_verify_fails_and_names_a_broken_reference(tmp_path: Path) -> None:
    nums = {"data/nums.txt": "1\n2\n3\n"}
    decider = [
        _agentic(
            "sum-ok",
            "awk '{s+=$1} END {print s}' data/nums.txt; touch leftover",
            nums,
            post_check="test -e leftover",
        ),
        # runs after sum-ok in the same container (one job): must not see its leftover
        _agentic("sum-fresh", "test ! -e leftover && awk '{s+=$1} END {print s}' data/*", nums),
        _agentic("sum-wrong", "wc -l < data/nums.txt", nums),
        # changes the workspace but nothing grades the change
        _agentic("sum-unchecked", "awk '{s+=$1} END {print s}' data/nums.txt | tee total", nums),
        _agentic(
            "no-network",
            "python3 -c 'import urllib.request as u; u.urlopen(\"http://1.1.1.1\", timeout=3)'"
            " && echo 6",
            nums,
        ),
    ]
    classifier = [
        {
            "id": "debugging-bug_fix-x",
            "messages": [{"role": "user", "content": "fix it"}],
            "label": {
                "taskType": "debugging",
                "subtaskType": "bug_fix",
                "reasoningComplexity": "low",
                "contextComplexity": "low",
                "executionMode": "single_turn",
                "requiresTools": False,
                "riskLevel": "low",
            },
        }
    ]
    for name, cases in (("decider", decider), ("classifier", classifier)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cases.json").write_text(json.dumps(cases))

    result = CliRunner().invoke(
        app, ["verify", "--root", str(tmp_path), "--jobs", "1", "--all"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1, result.output
    assert "3 of 5 cases failed verification." in result.output
    assert "reference answer '3' fails the check" in result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if "agentic_" in line}
    assert "passed" in lines["agentic_execution-data_processing-sum-ok"]
    assert "passed" in lines["agentic_execution-data_processing-sum-fresh"]
    assert "FAILED" in lines["agentic_execution-data_processing-sum-wrong"]
    assert "FAILED" in lines["agentic_execution-data_processing-no-network"]
    assert "FAILED" in lines["agentic_execution-data_processing-sum-unchecked"]
    assert "the reference changes the workspace, so the case needs a post_check" in " ".join(
        result.output.split()
    )


@pytest.mark.timeout(300)
def test_verify_selects_cases_by_id() -> None:
    cases = [c for c in load_decider_cases() if c.reference][:2]
    args = ["verify"]
    for c in cases:
        args += ["--case", c.id]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"All {len(cases)} cases verified." in result.output
    bad = CliRunner().invoke(app, ["verify", "--case", "nope-nope-nope"])
    assert bad.exit_code == 2 and "Unknown case id(s): nope-nope-nope" in bad.output
