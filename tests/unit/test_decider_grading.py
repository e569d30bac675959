"""Mechanical decider checks (contracts/decider_grading.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.cases import (
    ContainsAllCheck,
    DeciderCase,
    ExactCheck,
    JsonEqualCheck,
    PostCheck,
    RegexCheck,
)
from contracts.decider_grading import (
    PostCheckRun,
    extract_json,
    grade_decider_case,
    grade_post_check,
    json_structurally_equal,
    last_non_empty_line,
    needs_post_check,
    normalize_exact,
    post_check_command,
    run_check,
)
from tests.doubles import sum_numbers_case

# --- exact -------------------------------------------------------------------------------

EXACT_CASES = [
    # (name, expected, answer, passed)
    ("identical", "42", "42", True),
    ("surrounding whitespace", "42", "  42 \n", True),
    (
        "last non-empty line after preamble",
        "42",
        "Let me compute.\nThe result follows:\n42\n\n",
        True,
    ),
    ("preamble on the same line fails", "42", "The answer is 42", False),
    ("wrong answer", "42", "43", False),
    ("wrong last line fails even if an earlier line is right", "42", "42\nactually 43", False),
    ("case-sensitive", "HTTPError", "httperror", False),
    ("case kept", "HTTPError", "HTTPError", True),
    ("backticks stripped", "foo_bar", "`foo_bar`", True),
    ("double quotes stripped", "foo", '"foo"', True),
    ("single quotes stripped", "foo", "'foo'", True),
    ("one trailing period stripped", "42", "42.", True),
    ("trailing period outside backticks", "x", "`x`.", True),
    ("trailing period inside backticks", "x", "`x.`", True),
    ("only one trailing period", "42", "42..", False),
    ("expected with trailing period", "Paris.", "Paris", True),
    ("internal whitespace collapsed", "a b c", "a   b\tc", True),
    ("multi-line whole answer collapsed", "a b", "a\nb", True),
    ("code fence around answer", "42", "```\n42\n```", True),
    ("code fence with language", "ls -la", "```bash\nls -la\n```", True),
    ("fence closer is not the last line", "42", "Here:\n```\n42\n```\n", True),
    ("mismatched quotes not stripped", "foo", "\"foo'", False),
    ("empty answer", "42", "", False),
    ("whitespace answer", "42", " \n\t ", False),
    ("answer of only quotes", "x", '""', False),
    ("windows newlines", "42", "thinking\r\n42\r\n", True),
]


@pytest.mark.parametrize(
    ("name", "expected", "answer", "passed"), EXACT_CASES, ids=[c[0] for c in EXACT_CASES]
)
def test_exact(name: str, expected: str, answer: str, passed: bool) -> None:
    result = run_check(ExactCheck(expected=expected), answer)
    assert result.passed is passed, result.detail
    assert result.detail


def test_exact_detail_says_which_candidate() -> None:
    assert "last" in run_check(ExactCheck(expected="7"), "so:\n7").detail
    assert "whole" in run_check(ExactCheck(expected="7"), "7").detail


NORMALIZE_CASES = [
    ("  a  ", "a"),
    ("`a`", "a"),
    ("```a```", "a"),
    ('"a b"', "a b"),
    ("a.", "a"),
    ("a..", "a."),
    ("```py\nx = 1\n```", "x = 1"),
    ("A", "A"),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "normalized"), NORMALIZE_CASES)
def test_normalize_exact(raw: str, normalized: str) -> None:
    assert normalize_exact(raw) == normalized


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a\nb\n", "b"),
        ("a\n\n  \n", "a"),
        ("a\n```\n", "a"),
        ("x\n```json\n", "x"),
        ("", None),
        ("  \n ", None),
        ("  spaced  ", "spaced"),
    ],
)
def test_last_non_empty_line(text: str, line: str | None) -> None:
    assert last_non_empty_line(text) == line


@given(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1).filter(
        lambda s: normalize_exact(s) != ""
    )
)
def test_exact_accepts_its_expectation_after_preamble(expected: str) -> None:
    check = ExactCheck(expected=expected)
    assert run_check(check, expected).passed
    if (
        "\n" not in expected
        and "\r" not in expected
        and not any(c in expected for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
    ):
        assert run_check(check, "Some preamble.\n" + expected).passed


# --- contains_all ------------------------------------------------------------------------

CONTAINS_CASES = [
    ("all present", ("alpha", "beta"), "beta then alpha", True),
    ("one missing", ("alpha", "gamma"), "alpha beta", False),
    ("case-insensitive", ("Alpha", "BETA"), "ALPHA and beta", True),
    ("whitespace collapsed in answer", ("foo bar",), "foo\n   bar", True),
    ("whitespace collapsed in expected", ("foo   bar",), "foo bar", True),
    ("substring inside a word counts", ("cat",), "concatenate", True),
    ("unicode casefold", ("straße",), "STRASSE", True),
    ("empty answer", ("a",), "", False),
    ("whitespace answer", ("a",), "   ", False),
]


@pytest.mark.parametrize(
    ("name", "expected", "answer", "passed"), CONTAINS_CASES, ids=[c[0] for c in CONTAINS_CASES]
)
def test_contains_all(name: str, expected: tuple[str, ...], answer: str, passed: bool) -> None:
    result = run_check(ContainsAllCheck(expected=expected), answer)
    assert result.passed is passed, result.detail


def test_contains_all_detail_names_missing() -> None:
    detail = run_check(ContainsAllCheck(expected=("alpha", "gamma")), "alpha").detail
    assert "gamma" in detail and "alpha" not in detail.replace("gamma", "")


# --- regex -------------------------------------------------------------------------------

REGEX_CASES = [
    ("search anywhere", r"\d{3}", "code 404 here", True),
    ("no match", r"\d{3}", "no digits", False),
    ("anchored, whole answer", r"^42$", "42", True),
    ("anchored, last line after preamble", r"^42$", "thinking...\n42", True),
    ("anchored, surrounding whitespace", r"^42$", "  42  \n", True),
    ("anchored, backticked last line", r"^42$", "result:\n`42`.", True),
    ("case-sensitive (no flags)", r"^Error$", "error", False),
    ("inline flag works", r"(?i)^error$", "ERROR", True),
    ("dot does not cross lines on the whole answer", r"a.b", "a\nb", False),
    ("anchors are not per line", r"^first$", "first\nsecond", False),
    ("pattern matching empty never passes an empty answer", r".*", "", False),
    ("pattern matching empty passes a non-empty answer", r".*", "x", True),
]


@pytest.mark.parametrize(
    ("name", "pattern", "answer", "passed"), REGEX_CASES, ids=[c[0] for c in REGEX_CASES]
)
def test_regex(name: str, pattern: str, answer: str, passed: bool) -> None:
    result = run_check(RegexCheck(expected=pattern), answer)
    assert result.passed is passed, result.detail


def test_regex_invalid_pattern_fails_without_raising() -> None:
    check = RegexCheck.model_construct(kind="regex", expected="(unclosed")
    result = run_check(check, "anything")
    assert not result.passed and "invalid" in result.detail


# --- json_equal --------------------------------------------------------------------------

JSON_CASES = [
    ("identical object", '{"a": 1, "b": [1, 2]}', '{"a": 1, "b": [1, 2]}', True),
    ("key order irrelevant", '{"a": 1, "b": 2}', '{"b": 2, "a": 1}', True),
    ("list order relevant", "[1, 2]", "[2, 1]", False),
    ("int equals float", '{"n": 1}', '{"n": 1.0}', True),
    ("bool is not a number", "[true]", "[1]", False),
    ("false is not zero", '{"x": 0}', '{"x": false}', False),
    ("null", "null", "null", True),
    ("extra key", '{"a": 1}', '{"a": 1, "b": 2}', False),
    ("missing key", '{"a": 1, "b": 2}', '{"a": 1}', False),
    ("nested key order", '{"o": {"x": 1, "y": 2}}', '{"o": {"y": 2, "x": 1}}', True),
    ("string exact", '"Abc"', '"abc"', False),
    ("number vs string", "1", '"1"', False),
    ("scalar", "42", "42", True),
    ("whitespace and newlines", "[1, 2]", "\n[\n 1,\n 2\n]\n", True),
    ("last line after preamble", '{"a": 1}', 'Here is the result:\n{"a": 1}', True),
    ("json fence", '{"a": 1}', '```json\n{\n  "a": 1\n}\n```', True),
    (
        "json fence after preamble",
        '{"a": [1, 2]}',
        'Result:\n```json\n{\n  "a": [1, 2]\n}\n```\n',
        True,
    ),
    ("bare fence after preamble", "[1, 2]", "Result:\n```\n[\n1,\n2\n]\n```", True),
    ("embedded in a sentence", "[1, 2, 3]", "The list is [1, 2, 3] as requested", True),
    ("last embedded value wins", '{"a": 2}', 'First {"a": 1}, corrected: {"a": 2} done', True),
    (
        "earlier value does not rescue a wrong last one",
        '{"a": 1}',
        '{"a": 1} no wait:\n{"a": 2}',
        False,
    ),
    ("last line beats an earlier embedded value", '{"a": 1}', '{"a": 1}\n42', False),
    ("embedded nested: outermost", '{"a": [1]}', 'x {"a": [1]} y', True),
    ("backticked inline json", "[1, 2]", "`[1, 2]`", True),
    ("not json at all", "[1]", "no json here", False),
    ("NaN is not JSON", "1", "NaN", False),
    ("empty answer", "[]", "", False),
    ("whitespace answer", "[]", "  \n", False),
    ("json string on last line", '"done"', 'ok\n"done"', True),
    ("unicode", '{"s": "é"}', '{"s": "\\u00e9"}', True),
]


@pytest.mark.parametrize(
    ("name", "expected", "answer", "passed"), JSON_CASES, ids=[c[0] for c in JSON_CASES]
)
def test_json_equal(name: str, expected: str, answer: str, passed: bool) -> None:
    result = run_check(JsonEqualCheck(expected=expected), answer)
    assert result.passed is passed, result.detail


def test_extract_json_sources() -> None:
    assert extract_json("[1]") == ("whole answer", [1])
    assert extract_json("```json\n[1]\n```") == ("fenced answer", [1])
    assert extract_json("x\n[1]") == ("last non-empty line", [1])
    assert extract_json("x\n```\n[\n1\n]\n```\ntrailing words") == ("last fenced block", [1])
    assert extract_json("see [1] and {") == ("last embedded value", [1])
    assert extract_json("nothing") is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_json_roundtrip_passes(value: object) -> None:
    check = JsonEqualCheck(expected=json.dumps(value))
    assert run_check(check, json.dumps(value, indent=2)).passed
    assert run_check(check, "Final answer:\n" + json.dumps(value)).passed


@given(st.dictionaries(st.text(max_size=4), st.integers(), max_size=6))
def test_json_key_order_irrelevant(d: dict[str, int]) -> None:
    reordered = dict(reversed(list(d.items())))
    assert json_structurally_equal(d, reordered)
    assert run_check(JsonEqualCheck(expected=json.dumps(d)), json.dumps(reordered)).passed


@given(st.integers(-(10**9), 10**9))
def test_json_int_equals_float(n: int) -> None:
    assert json_structurally_equal(n, float(n))
    assert json_structurally_equal([n], [float(n)])
    assert not json_structurally_equal(bool(n % 2), n % 2)  # true/false never equal 1/0


# --- every kind --------------------------------------------------------------------------

ALL_KINDS = [
    ExactCheck(expected="x"),
    ContainsAllCheck(expected=("",)),
    RegexCheck(expected=""),
    JsonEqualCheck(expected='""'),
]


@pytest.mark.parametrize("check", ALL_KINDS, ids=lambda c: c.kind)
@pytest.mark.parametrize("answer", ["", " ", "\n\n", "\t \r\n"])
def test_empty_answer_never_passes(check: object, answer: str) -> None:
    result = run_check(check, answer)  # type: ignore[arg-type]
    assert not result.passed and result.detail == "empty answer"


# --- post-checks (tasks that change files) ----------------------------------------------


def _run(code: int | None, out: str = "", err: str = "", timed_out: bool = False) -> PostCheckRun:
    return PostCheckRun(exit_code=code, stdout=out, stderr=err, timed_out=timed_out)


def _case_with_post_check(**post: object) -> DeciderCase:
    return sum_numbers_case(
        post_check=PostCheck.model_validate({"script": "test -s data/total.txt", **post})
    )


@pytest.mark.parametrize(
    ("run", "passed", "detail"),
    [
        (_run(0), True, "post-check passed"),
        (_run(1, "step 1\nFAIL: shop.py still exists\n"), False, "FAIL: shop.py still exists"),
        (_run(2, "", "Traceback\nAssertionError: nope\n"), False, "exited with 2"),
        (_run(None, timed_out=True), False, "post-check timed out"),
        (_run(137), False, "exited with 137"),
    ],
)
def test_grade_post_check(run: PostCheckRun, passed: bool, detail: str) -> None:
    result = grade_post_check(run)
    assert result.passed is passed and detail in result.detail


def test_a_case_with_a_post_check_passes_only_with_the_answer_and_the_work() -> None:
    case = _case_with_post_check()
    ok, failed = _run(0), _run(1, "FAIL: no data/total.txt")
    assert grade_decider_case(case, "6", ok).passed
    words_only = grade_decider_case(case, "6", failed)
    assert not words_only.passed and "FAIL: no data/total.txt" in words_only.detail
    assert not grade_decider_case(case, "7", ok).passed
    assert not grade_decider_case(case, "6", None).passed  # a post-check that did not run
    plain = sum_numbers_case()
    assert grade_decider_case(plain, "6", None) == run_check(plain.check, "6")


def test_post_check_command_is_the_script_with_strict_bash() -> None:
    case = _case_with_post_check()
    assert case.post_check is not None
    command = post_check_command(case.post_check)
    assert command.startswith("set -euo pipefail\n") and command.endswith(case.post_check.script)


def test_post_check_restores_named_files_and_directories() -> None:
    case = sum_numbers_case(
        files={"data/nums.txt": "1\n", "data/more.txt": "2\n", "check.py": "print()\n"}
    ).model_copy(update={"post_check": PostCheck(script="true", restore=("check.py", "data/"))})
    assert case.restored_files() == {
        "check.py": "print()\n",
        "data/more.txt": "2\n",
        "data/nums.txt": "1\n",
    }


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"post_check": {"script": "true", "restore": ["nope.py"]}}, "names no workspace file"),
        ({"post_check": {"script": "true", "restore": ["dat/"]}}, "names no workspace file"),
        ({"post_check": {"script": ""}}, "at least 1 character"),
        (
            {
                "id": "debugging-bug_fix-words-only",
                "taskType": "debugging",
                "subtaskType": "bug_fix",
                "post_check": {"script": "true"},
                "reference": None,
            },
            "needs workspace files and a reference",
        ),
    ],
)
def test_invalid_post_checks_are_refused(update: dict[str, object], message: str) -> None:
    data = {**sum_numbers_case().model_dump(), **update}
    with pytest.raises(ValueError, match=message):
        DeciderCase.model_validate(data)


def test_the_post_check_is_needed_only_when_the_answer_passes() -> None:
    case = _case_with_post_check()
    assert needs_post_check(case, "6") and not needs_post_check(case, "7")
    assert not needs_post_check(sum_numbers_case(), "6")  # no post-check at all
    detail = grade_decider_case(case, "7", None).detail
    assert "work: not checked (the answer fails)" in detail
