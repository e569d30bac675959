"""Mechanical grading of decider answers: ``exact``, ``contains_all``, ``regex``, ``json_equal``.

No LLM judges: every check is a pure function of the golden expectation and the agent's final
text. Agent harnesses sometimes print preamble before the answer despite the final-answer
instruction, so most kinds also look at the *last non-empty line*: a line that is only a
code-fence marker (```` ``` ```` or ```` ```json ````) does not count as a line.

Rules common to every kind
--------------------------
* An empty answer (nothing but whitespace) never passes, whatever the check.
* "Whitespace collapsed" means every run of whitespace (spaces, tabs, newlines) becomes a
  single space and the ends are stripped.

``exact`` — case-sensitive after normalisation
    Candidates: the whole answer, then its last non-empty line. Each candidate and the
    expected text get the same normalisation:

    1. a code fence around the whole text is removed (the opening line with its optional
       language tag, and the closing ```` ``` ````);
    2. surrounding whitespace is stripped;
    3. surrounding wrappers are peeled while the first and last characters are the same
       backtick, double quote or single quote (```` `x` ````, ``"x"``, ``'x'``);
    4. one trailing period is removed (then wrappers are peeled again, so ```` `x`. ```` and
       ```` `x.` ```` both become ``x``);
    5. internal whitespace is collapsed.

    Case is *kept*: answers are often identifiers, paths or code where case matters
    (``HTTPError`` vs ``HttpError``). Passes when any candidate's normalised form is
    non-empty and equals the expected text's.

``contains_all`` — case-insensitive, whitespace-collapsed
    The whole answer and each expected substring are case-folded and whitespace-collapsed;
    passes when every expected substring occurs in the answer.

``regex`` — :func:`re.search`, no flags
    The pattern is searched with no flags (case-sensitive, ``.`` does not match a newline,
    ``^``/``$`` anchor the whole candidate), in order on: the whole answer stripped of
    surrounding whitespace; the last non-empty line stripped; that line with ``exact``'s
    normalisation (so ```` `42`. ```` offers ``42``). Passes on the first match.

``json_equal`` — first value that parses, compared structurally
    The answer's JSON value is the first of these that parses as JSON (strict: no
    ``NaN``/``Infinity``):

    1. the whole answer (stripped), or its inside when the whole answer is one code fence;
    2. the last non-empty line;
    3. the contents of the last fenced block (```` ```json ... ``` ```` or a bare fence);
    4. the last top-level ``{...}`` or ``[...]`` embedded in the text.

    Only that value is compared (a wrong final answer is not rescued by an earlier right
    one). Equality is structural: object key order is irrelevant, array order matters,
    numbers compare by value (``1 == 1.0``), booleans are not numbers (``true != 1``),
    strings are compared exactly.

Post-checks (tasks that change files)
-------------------------------------
A case with a ``post_check`` is also graded on its workspace: after the agent finished, the
hidden script runs in the same container (:func:`post_check_command`), and the case passes
only when the answer passes its check *and* the script exits 0 in time
(:func:`grade_decider_case`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from contracts.cases import (
    Check,
    ContainsAllCheck,
    DeciderCase,
    ExactCheck,
    JsonEqualCheck,
    PostCheck,
    RegexCheck,
)

_WRAPPERS: Final = frozenset("`\"'")
_FENCE_LINE: Final = re.compile(r"`{3,}[\w+\-.#]*")
_WHOLE_FENCE: Final = re.compile(r"\A`{3,}[^\n`]*\n(.*?)\n?`{3,}\Z", re.DOTALL)
_FENCED_BLOCK: Final = re.compile(r"`{3,}[^\n`]*\n(.*?)`{3,}", re.DOTALL)
_DETAIL_MAX: Final = 120


class CheckResult(BaseModel):
    """The outcome of one mechanical check."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    passed: bool
    detail: str
    """Human-readable reason: which candidate matched, or what was expected vs found."""


def _short(text: str) -> str:
    """A one-line, bounded rendering of ``text`` for details."""
    flat = text.replace("\n", "\\n")
    return repr(flat if len(flat) <= _DETAIL_MAX else flat[: _DETAIL_MAX - 3] + "...")


def collapse_whitespace(text: str) -> str:
    """Every whitespace run becomes one space; the ends are stripped."""
    return " ".join(text.split())


def last_non_empty_line(text: str) -> str | None:
    """The last line that is not blank and not only a code-fence marker, stripped."""
    for line in reversed(text.splitlines()):
        stripped = line.strip()
        if stripped and not _FENCE_LINE.fullmatch(stripped):
            return stripped
    return None


def _unfence(text: str) -> str:
    match = _WHOLE_FENCE.match(text.strip())
    return match.group(1) if match else text


def _peel(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in _WRAPPERS:
        text = text[1:-1].strip()
    return text


def normalize_exact(text: str) -> str:
    """``exact``'s normalisation (see the module docstring): fence, wrappers, one trailing
    period, whitespace; case is kept."""
    text = _peel(_unfence(text))
    if text.endswith("."):
        text = _peel(text[:-1])
    return collapse_whitespace(text)


def normalize_contains(text: str) -> str:
    """``contains_all``'s normalisation: case-folded, whitespace collapsed."""
    return collapse_whitespace(text.casefold())


def _exact(check: ExactCheck, answer: str) -> CheckResult:
    expected = normalize_exact(check.expected)
    whole = normalize_exact(answer)
    if whole and whole == expected:
        return CheckResult(passed=True, detail="exact match of the whole answer")
    last = last_non_empty_line(answer)
    last_norm = normalize_exact(last) if last is not None else ""
    if last_norm and last_norm == expected:
        return CheckResult(passed=True, detail="exact match of the last non-empty line")
    return CheckResult(
        passed=False,
        detail=f"expected {_short(expected)}, got last line {_short(last_norm)}",
    )


def _contains_all(check: ContainsAllCheck, answer: str) -> CheckResult:
    haystack = normalize_contains(answer)
    missing = [e for e in check.expected if normalize_contains(e) not in haystack]
    if missing:
        return CheckResult(passed=False, detail="missing: " + ", ".join(_short(m) for m in missing))
    return CheckResult(passed=True, detail=f"all {len(check.expected)} substrings present")


def _regex(check: RegexCheck, answer: str) -> CheckResult:
    try:
        pattern = re.compile(check.expected)
    except re.error as e:  # the Check model validates patterns; stay total anyway
        return CheckResult(passed=False, detail=f"invalid pattern: {e}")
    candidates: list[tuple[str, str]] = [("whole answer", answer.strip())]
    last = last_non_empty_line(answer)
    if last is not None:
        candidates.append(("last non-empty line", last))
        candidates.append(("normalised last line", normalize_exact(last)))
    for name, text in candidates:
        if text and pattern.search(text):
            return CheckResult(passed=True, detail=f"pattern matched the {name}")
    return CheckResult(passed=False, detail=f"pattern {_short(check.expected)} matched nothing")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _loads(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return False, None


def _last_embedded(text: str) -> tuple[bool, Any]:
    """The last top-level JSON object/array inside free text."""
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    found: tuple[bool, Any] = (False, None)
    i = 0
    while i < len(text):
        if text[i] in "{[":
            try:
                value, end = decoder.raw_decode(text, i)
            except (ValueError, RecursionError):
                i += 1
                continue
            found = (True, value)
            i = end  # skip the value's inside: nested values are not top-level
        else:
            i += 1
    return found


def extract_json(answer: str) -> tuple[str, Any] | None:
    """The answer's JSON value and where it came from, per ``json_equal``'s order."""
    stripped = answer.strip()
    for source, text in (("whole answer", stripped), ("fenced answer", _unfence(stripped))):
        ok, value = _loads(text)
        if ok:
            return source, value
    last = last_non_empty_line(answer)
    if last is not None:
        ok, value = _loads(last)
        if ok:
            return "last non-empty line", value
    blocks = _FENCED_BLOCK.findall(answer)
    if blocks:
        ok, value = _loads(blocks[-1].strip())
        if ok:
            return "last fenced block", value
    ok, value = _last_embedded(answer)
    if ok:
        return "last embedded value", value
    return None


def json_structurally_equal(a: Any, b: Any) -> bool:
    """JSON equality: key order irrelevant, list order relevant, 1 == 1.0, true != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_structurally_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(
            json_structurally_equal(x, y) for x, y in zip(a, b, strict=True)
        )
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return a is None and b is None


def _json_equal(check: JsonEqualCheck, answer: str) -> CheckResult:
    extracted = extract_json(answer)
    if extracted is None:
        return CheckResult(passed=False, detail="no JSON value found in the answer")
    source, value = extracted
    if json_structurally_equal(value, check.expected_value()):
        return CheckResult(passed=True, detail=f"JSON equal ({source})")
    rendered = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return CheckResult(
        passed=False,
        detail=f"JSON differs ({source}): expected {_short(check.expected)}, "
        f"got {_short(rendered)}",
    )


def run_check(check: Check, answer: str) -> CheckResult:
    """Grade ``answer`` against ``check`` (see the module docstring for each kind's rules)."""
    if not answer.strip():
        return CheckResult(passed=False, detail="empty answer")
    if isinstance(check, ExactCheck):
        return _exact(check, answer)
    if isinstance(check, ContainsAllCheck):
        return _contains_all(check, answer)
    if isinstance(check, RegexCheck):
        return _regex(check, answer)
    if isinstance(check, JsonEqualCheck):
        return _json_equal(check, answer)
    raise TypeError(f"unknown check kind: {type(check).__name__}")


# ------------------------------------------------------------------ post-checks

POST_CHECK_PRELUDE: Final = "set -euo pipefail\n"
"""Prepended to every post-check script: a failing step fails the check."""
_POST_CHECK_TAIL_LINES: Final = 3


class PostCheckRun(BaseModel):
    """What a post-check printed and how it ended (a sandbox exec result)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool


def post_check_command(post: PostCheck) -> str:
    """The one command that runs `post` (sent to the sandbox, never written to the workspace)."""
    return POST_CHECK_PRELUDE + post.script


def grade_post_check(run: PostCheckRun) -> CheckResult:
    """Passed when the post-check exited 0 in time; otherwise why, from its last lines."""
    if run.timed_out:
        return CheckResult(passed=False, detail="post-check timed out")
    if run.exit_code == 0:
        return CheckResult(passed=True, detail="post-check passed")
    lines = [ln.strip() for ln in (run.stdout + "\n" + run.stderr).splitlines() if ln.strip()]
    tail = " | ".join(lines[-_POST_CHECK_TAIL_LINES:])
    return CheckResult(
        passed=False, detail=f"post-check exited with {run.exit_code}: {_short(tail)}"
    )


def needs_post_check(case: DeciderCase, answer: str) -> bool:
    """Whether the case's post-check has to run: it has one and the answer passes (a failing
    answer fails the case whatever the workspace holds, so the container time is saved)."""
    return case.post_check is not None and run_check(case.check, answer).passed


def grade_decider_case(case: DeciderCase, answer: str, post: PostCheckRun | None) -> CheckResult:
    """Grade a decider case: its answer, and its workspace when it has a post-check.

    `post` is the post-check's run (None when it did not run: then a case that has one fails).
    """
    said = run_check(case.check, answer)
    if case.post_check is None:
        return said
    if post is not None:
        done = grade_post_check(post)
    elif not said.passed:
        done = CheckResult(passed=False, detail="not checked (the answer fails)")
    else:
        done = CheckResult(passed=False, detail="post-check did not run")
    return CheckResult(
        passed=said.passed and done.passed, detail=f"answer: {said.detail}; work: {done.detail}"
    )
