"""Dataset quotas, pure over loaded cases.

`quota_report(classifier, decider)` counts the cases per (taskType, subtaskType) pair for both
datasets, per tier and per task type per tier for the decider, and checks every rule of
DESIGN.md and the seed:

- classifier: exactly 72 cases, exactly 4 per pair;
- decider: exactly 76 cases, at least 4 per pair, tiers exactly 23 low / 31 medium / 22 high
  (each at least 20), at least 4 distinct task types per tier;
- both: ids follow `<taskType>-<subtaskType>-<topic>` and are unique within and across the
  datasets; every agentic_execution decider case has workspace files and a reference;
- decider: no expected answer can be read off the prompt text alone (`answer_in_prompt`).

The loader already refuses most malformed cases; the rules are repeated here so the report
holds for cases built in memory (tests, generated variants) as well.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from contracts.cases import ClassifierCase, ContainsAllCheck, DeciderCase, ExactCheck, RegexCheck
from contracts.decider_grading import (
    collapse_whitespace,
    json_structurally_equal,
    normalize_contains,
    normalize_exact,
    run_check,
)
from contracts.taxonomy import TASK_TYPES, TAXONOMY_PAIRS, TIERS, TaskType, Tier

CLASSIFIER_TOTAL: Final = 72
CLASSIFIER_PER_PAIR: Final = 4
DECIDER_TOTAL: Final = 76
DECIDER_MIN_PER_PAIR: Final = 4
DECIDER_PER_TIER: Final[dict[Tier, int]] = {"low": 23, "medium": 31, "high": 22}
DECIDER_MIN_PER_TIER: Final = 20
DECIDER_MIN_TASK_TYPES_PER_TIER: Final = 4
TOPIC_PATTERN: Final = r"[a-z0-9][a-z0-9\-]*"
"""The `<topic>` part of a case id: lowercase words joined by hyphens."""

Rule = Literal[
    "classifier.total",
    "classifier.per_pair",
    "decider.total",
    "decider.per_pair",
    "decider.per_tier",
    "decider.min_per_tier",
    "decider.task_types_per_tier",
    "decider.agentic_workspace",
    "decider.answer_in_prompt",
    "ids.scheme",
    "ids.unique",
    "ids.cross_dataset",
]


class QuotaFailure(BaseModel):
    """One broken rule, e.g. a pair one case short."""

    model_config = ConfigDict(frozen=True)

    rule: Rule
    """Which rule (stable name, for tests and tooling)."""
    message: str
    """What is wrong, in plain words, naming the pair, tier or case."""


class PairCount(BaseModel):
    model_config = ConfigDict(frozen=True)

    taskType: TaskType
    subtaskType: str
    classifier: int
    decider: int


class TierCount(BaseModel):
    model_config = ConfigDict(frozen=True)

    tier: Tier
    cases: int
    """Decider cases of this tier."""
    expected: int
    """The tier's quota."""
    by_task_type: dict[TaskType, int]
    """Cases of this tier per task type (all six listed, zeros included)."""

    @property
    def distinct_task_types(self) -> int:
        return sum(1 for n in self.by_task_type.values() if n > 0)


class QuotaReport(BaseModel):
    """Counts of both datasets and every rule they break."""

    model_config = ConfigDict(frozen=True)

    classifier_total: int
    decider_total: int
    decider_with_reference: int
    """Decider cases carrying a reference solution (run by `datasets verify`)."""
    decider_with_post_check: int = 0
    """Decider cases also graded on the workspace by a hidden post-check."""
    pairs: list[PairCount]
    """All 18 taxonomy pairs, in taxonomy order."""
    tiers: list[TierCount]
    """low, medium, high."""
    failures: list[QuotaFailure]

    @property
    def ok(self) -> bool:
        return not self.failures


def quota_report(
    classifier: Sequence[ClassifierCase], decider: Sequence[DeciderCase]
) -> QuotaReport:
    """Count both datasets and check every quota and id rule (pure)."""
    failures: list[QuotaFailure] = []
    c_pairs = Counter((c.label.taskType, c.label.subtaskType) for c in classifier)
    d_pairs = Counter((d.taskType, d.subtaskType) for d in decider)
    d_tiers = Counter(d.tier for d in decider)
    d_tier_tasks = Counter((d.tier, d.taskType) for d in decider)

    def fail(rule: Rule, message: str) -> None:
        failures.append(QuotaFailure(rule=rule, message=message))

    if len(classifier) != CLASSIFIER_TOTAL:
        fail(
            "classifier.total",
            f"classifier has {len(classifier)} cases, expected exactly {CLASSIFIER_TOTAL}",
        )
    for task, sub in TAXONOMY_PAIRS:
        n = c_pairs[(task, sub)]
        if n != CLASSIFIER_PER_PAIR:
            fail(
                "classifier.per_pair",
                f"classifier pair {task}/{sub} has {n} cases, expected exactly "
                f"{CLASSIFIER_PER_PAIR}",
            )

    if len(decider) != DECIDER_TOTAL:
        fail("decider.total", f"decider has {len(decider)} cases, expected exactly {DECIDER_TOTAL}")
    for task, sub in TAXONOMY_PAIRS:
        n = d_pairs[(task, sub)]
        if n < DECIDER_MIN_PER_PAIR:
            fail(
                "decider.per_pair",
                f"decider pair {task}/{sub} has {n} cases, expected at least "
                f"{DECIDER_MIN_PER_PAIR}",
            )
    for tier in TIERS:
        n = d_tiers[tier]
        if n != DECIDER_PER_TIER[tier]:
            fail(
                "decider.per_tier",
                f"decider tier {tier} has {n} cases, expected exactly {DECIDER_PER_TIER[tier]}",
            )
        if n < DECIDER_MIN_PER_TIER:
            fail(
                "decider.min_per_tier",
                f"decider tier {tier} has {n} cases, expected at least {DECIDER_MIN_PER_TIER}",
            )
        distinct = sum(1 for t in TASK_TYPES if d_tier_tasks[(tier, t)] > 0)
        if distinct < DECIDER_MIN_TASK_TYPES_PER_TIER:
            fail(
                "decider.task_types_per_tier",
                f"decider tier {tier} covers {distinct} task types, expected at least "
                f"{DECIDER_MIN_TASK_TYPES_PER_TIER}",
            )
    for d in decider:
        if d.taskType == "agentic_execution":
            missing = [
                what
                for what, has in (("workspace files", d.files), ("reference solution", d.reference))
                if not has
            ]
            if missing:
                fail(
                    "decider.agentic_workspace",
                    f"agentic_execution case {d.id} has no {' and no '.join(missing)}",
                )

    for d in decider:
        leak = answer_in_prompt(d)
        if leak is not None:
            fail(
                "decider.answer_in_prompt",
                f"the expected answer of {d.id} can be read off its prompt: {leak}",
            )

    c_ids = [(c.id, c.label.taskType, c.label.subtaskType) for c in classifier]
    d_ids = [(d.id, d.taskType, d.subtaskType) for d in decider]
    for dataset, ids in (("classifier", c_ids), ("decider", d_ids)):
        for case_id, task, sub in ids:
            if not id_follows_scheme(case_id, task, sub):
                fail(
                    "ids.scheme",
                    f"{dataset} id {case_id!r} does not follow "
                    f"'{task}-{sub}-<topic>' (topic: lowercase letters, digits, hyphens)",
                )
        counts = Counter(case_id for case_id, _, _ in ids)
        for case_id, n in counts.items():
            if n > 1:
                fail("ids.unique", f"{dataset} id {case_id!r} is used by {n} cases")
    for case_id in sorted({i for i, _, _ in c_ids} & {i for i, _, _ in d_ids}):
        fail("ids.cross_dataset", f"id {case_id!r} is used in both the classifier and decider")

    return QuotaReport(
        classifier_total=len(classifier),
        decider_total=len(decider),
        decider_with_reference=sum(1 for d in decider if d.reference),
        decider_with_post_check=sum(1 for d in decider if d.post_check is not None),
        pairs=[
            PairCount(
                taskType=task,
                subtaskType=sub,
                classifier=c_pairs[(task, sub)],
                decider=d_pairs[(task, sub)],
            )
            for task, sub in TAXONOMY_PAIRS
        ],
        tiers=[
            TierCount(
                tier=tier,
                cases=d_tiers[tier],
                expected=DECIDER_PER_TIER[tier],
                by_task_type={t: d_tier_tasks[(tier, t)] for t in TASK_TYPES},
            )
            for tier in TIERS
        ],
        failures=failures,
    )


def id_follows_scheme(case_id: str, task: str, sub: str) -> bool:
    """True when `case_id` is `<task>-<sub>-<topic>`."""
    return re.fullmatch(f"{re.escape(task)}-{re.escape(sub)}-{TOPIC_PATTERN}", case_id) is not None


# ---------------------------------------------------------------- answers in prompts

_TOKEN_EDGE: Final = r"[0-9A-Za-z_]"
_CODE_SPAN: Final = re.compile(r"`([^`\n]+)`")
_PROMPT_PLACEHOLDER: Final = re.compile(r"<[^<>\n]+>|\b[A-Z]\b|\d+")
"""What a prompt uses to stand for a value in an answer form: `<name>`, `K`, `N`, numbers."""
_DIGITS: Final = re.compile(r"\d+")


def answer_in_prompt(case: DeciderCase) -> str | None:
    """How the case's expected answer can be read off its prompt alone, or None.

    Grep-like and deliberately strict: the expected text (exact), every expected substring
    (contains_all) or a match of the pattern (regex) occurs in the prompt, an embedded JSON
    value equals the expectation (json_equal), a line or `code span` of the prompt passes
    the case's own check, or the prompt spells out the answer's form with placeholders for
    its only variable parts (`killed K/N` for the answer `killed 6/6`).
    """
    check = case.check
    prompt = collapse_whitespace(case.prompt)
    if isinstance(check, ExactCheck):
        expected = normalize_exact(check.expected)
        if expected and _has_token(prompt, expected):
            return f"it contains {expected!r}"
        form = _answer_form(expected)
        if form is not None and _has_token(_PROMPT_PLACEHOLDER.sub("#", prompt), form):
            return f"it spells out the answer's form {form!r} and the answer only fills it in"
    elif isinstance(check, ContainsAllCheck):
        if all(normalize_contains(e) in normalize_contains(prompt) for e in check.expected):
            return "it contains every expected substring"
    elif isinstance(check, RegexCheck):
        for text in (prompt, *_fragments(case.prompt)):
            if re.search(check.expected, text):
                return f"{_shorten(text)!r} matches the expected pattern"
    else:
        value = check.expected_value()
        scalar = not isinstance(value, dict | list)
        if any(json_structurally_equal(v, value) for v in _json_values(prompt)) or (
            scalar and _has_token(prompt, json.dumps(value))
        ):
            return "it embeds the expected JSON value"
    for text in _fragments(case.prompt):
        if run_check(check, text).passed:
            return f"{_shorten(text)!r} passes the case's check"
    return None


def _has_token(text: str, token: str) -> bool:
    """`token` occurs in `text` as a whole word: not inside a longer name or number, nor
    joined to one by `-` or `.` (the 8 of "8-digit" or "v8.1" is not an answer 8)."""
    e = _TOKEN_EDGE
    pattern = f"(?<!{e})(?<!{e}[.-]){re.escape(token)}(?!{e})(?![.-]{e})"
    return re.search(pattern, text) is not None


def _answer_form(expected: str) -> str | None:
    """The answer with its numbers masked, when it is words around numbers (else None)."""
    if not re.search(r"[A-Za-z]", expected) or not _DIGITS.search(expected):
        return None
    return _DIGITS.sub("#", expected)


def _fragments(prompt: str) -> Iterator[str]:
    """Each non-empty line of the prompt and each `code span`, stripped."""
    for line in prompt.splitlines():
        if line.strip():
            yield line.strip()
    for span in _CODE_SPAN.findall(prompt):
        if span.strip():
            yield span.strip()


def _json_values(text: str) -> Iterator[object]:
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                yield decoder.raw_decode(text, i)[0]
            except ValueError:
                continue


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
