"""Keyword fallback classifier, used when the model's answer cannot be parsed.

It is deliberately crude: a fallback classification scores 0 in the benchmark and never
re-anchors a session, so it only has to pick a sensible tier for this one request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, TypeVar

from contracts.classification import Classification
from contracts.conversation import MessageLike, Turn, turns_of
from contracts.taxonomy import SUBTYPES_BY_TASK, ExecutionMode, Level, SubtaskType, TaskType


class Keyword:
    """A regex that must start at a word boundary, e.g. `optimi[sz]` matches "optimise"."""

    __slots__ = ("pattern",)

    def __init__(self, regex: str) -> None:
        # The boundary is checked in Python rather than with a leading \b: a pattern that
        # starts with a literal lets `re` use its fast prefix scan (about 40x faster).
        self.pattern = re.compile(regex)

    def search(self, text: str) -> bool:
        for match in self.pattern.finditer(text):
            start = match.start()
            if start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_"):
                return True
        return False


def _patterns(*regexes: str) -> tuple[Keyword, ...]:
    return tuple(Keyword(r.removeprefix(r"\b")) for r in regexes)


# Order matters only for ties: more specific intents first, the generic question last.
TASK_KEYWORDS: Final[dict[TaskType, tuple[Keyword, ...]]] = {
    "debugging": _patterns(
        r"\bbug",
        r"\bfix",
        r"\berror",
        r"\bexception",
        r"\btraceback",
        r"\bstack ?trace",
        r"\bcrash",
        r"\bfail(s|ed|ing)?\b",
        r"\bbroken\b",
        r"\bdoes(n'?t| not) work",
        r"\bslow",
        r"\bperformance",
        r"\bmemory leak",
        r"\blatency",
    ),
    "refactoring": _patterns(
        r"\brefactor",
        r"\brestructur",
        r"\bclean ?up",
        r"\bmigrat",
        r"\bupgrade",
        r"\brename",
        r"\bextract",
        r"\bdead code",
        r"\bsimplify",
        r"\bport (it|this|to)\b",
        r"\bdecouple",
        r"\bmodulari[sz]",
    ),
    "planning_design": _patterns(
        r"\bdesign",
        r"\barchitect",
        r"\bplan\b",
        r"\bplanning",
        r"\bbreak (it |this )?down",
        r"\broadmap",
        r"\bmilestones?\b",
        r"\bschema",
        r"\btrade-?offs?\b",
        r"\bendpoints?\b",
    ),
    "agentic_execution": _patterns(
        r"\brun\b",
        r"\bexecute",
        r"\bshell",
        r"\bterminal",
        r"\bcommand line",
        r"\bscript",
        r"\bin (the|this) (repo|workspace|directory)",
        r"\ball (the )?files",
        r"\bacross (the )?(repo|codebase|files)",
        r"\bcsv\b",
        r"\blog files?\b",
        r"\bprocess (the )?data",
    ),
    "code_generation": _patterns(
        r"\bwrite\b",
        r"\bimplement",
        r"\bcreate\b",
        r"\badd\b",
        r"\bgenerate",
        r"\bbuild\b",
        r"\bscaffold",
        r"\bboilerplate",
        r"\bunit tests?\b",
        r"\btest cases?\b",
        r"\bnew (feature|function|endpoint|component|class|module)",
    ),
    "investigation": _patterns(
        r"\bwhy\b",
        r"\bhow (does|do|is|are)\b",
        r"\bwhat (does|is|are)\b",
        r"\bexplain",
        r"\bwhere (is|are|does)\b",
        r"\bunderstand",
        r"\bdocumentation",
        r"\bcompare",
        r"\bdifference between",
        r"\bwhich (library|framework|tool)",
    ),
}

SUBTYPE_KEYWORDS: Final[dict[SubtaskType, tuple[Keyword, ...]]] = {
    "new_feature": _patterns(r"\bfeature", r"\bimplement", r"\badd\b", r"\bnew\b"),
    "boilerplate": _patterns(
        r"\bboilerplate",
        r"\bscaffold",
        r"\btemplate",
        r"\bcrud\b",
        r"\bdockerfile",
        r"\bconfig",
        r"\bskeleton",
    ),
    "tests": _patterns(r"\btests?\b", r"\btesting", r"\bcoverage", r"\bpytest", r"\bjest\b"),
    "bug_fix": _patterns(r"\bbug", r"\bfix", r"\bbroken\b", r"\bwrong\b", r"\bincorrect"),
    "error_diagnosis": _patterns(
        r"\berror",
        r"\bexception",
        r"\btraceback",
        r"\bstack ?trace",
        r"\bcrash",
    ),
    "performance": _patterns(
        r"\bslow",
        r"\bperformance",
        r"\boptimi[sz]",
        r"\blatency",
        r"\bmemory",
        r"\bfaster",
    ),
    "restructure": _patterns(
        r"\brestructur",
        r"\bsplit\b",
        r"\bextract",
        r"\breorgani[sz]",
        r"\bmodulari[sz]",
        r"\bdecouple",
    ),
    "migration": _patterns(
        r"\bmigrat",
        r"\bupgrade",
        r"\bport\b",
        r"\bconvert",
        r"\bmove (from|to)\b",
    ),
    "cleanup": _patterns(
        r"\bclean",
        r"\brename",
        r"\bdead code",
        r"\blint",
        r"\bsimplify",
        r"\bformat",
    ),
    "codebase_question": _patterns(
        r"\bthis (code|function|class|module|repo)",
        r"\bour (code|codebase|repo)",
        r"\bwhere (is|are|does)\b",
        r"\bhow does\b",
    ),
    "external_research": _patterns(
        r"\blibrar(y|ies)",
        r"\bframework",
        r"\bdocumentation",
        r"\bcompare",
        r"\bbest practice",
        r"\bwhich\b",
    ),
    "system_behavior": _patterns(
        r"\bbehav",
        r"\bproduction\b",
        r"\bin prod\b",
        r"\blogs?\b",
        r"\bintermittent",
        r"\bsometimes\b",
        r"\brunning (service|system)",
    ),
    "system_design": _patterns(
        r"\barchitect",
        r"\bsystem design",
        r"\bscal(e|able|ability|ing)\b",
        r"\bdistributed",
        r"\bservices?\b",
    ),
    "task_breakdown": _patterns(
        r"\bplan\b",
        r"\bbreak (it |this )?down",
        r"\bsteps\b",
        r"\bmilestones?\b",
        r"\broadmap",
        r"\btasks\b",
    ),
    "api_design": _patterns(
        r"\bapi\b",
        r"\bendpoints?\b",
        r"\binterface",
        r"\bschema",
        r"\brest\b",
        r"\bgraphql",
    ),
    "shell_automation": _patterns(
        r"\bshell",
        r"\bbash\b",
        r"\bcommands?\b",
        r"\bcron",
        r"\bautomat",
        r"\brun\b",
        r"\bscript",
    ),
    "multi_file_edit": _patterns(
        r"\bfiles\b",
        r"\bacross\b",
        r"\bevery file",
        r"\ball (the )?files",
        r"\bcodemod",
    ),
    "data_processing": _patterns(
        r"\bcsv\b",
        r"\bjson\b",
        r"\bdata\b",
        r"\bparse",
        r"\baggregat",
        r"\breport\b",
    ),
}

HIGH_REASONING: Final = _patterns(
    r"\barchitect",
    r"\bdistributed",
    r"\bconcurren",
    r"\brace condition",
    r"\bdeadlock",
    r"\bconsisten(t|cy)",
    r"\balgorithm",
    r"\bsecurity",
    r"\bscalab",
    r"\btrade-?offs?\b",
    r"\bintermittent",
    r"\bsubtle",
)
LOW_REASONING: Final = _patterns(
    r"\btypo",
    r"\brename",
    r"\bsimple\b",
    r"\bquick",
    r"\btrivial",
    r"\bboilerplate",
    r"\bone-?liner",
)
WIDE_CONTEXT: Final = _patterns(
    r"\bentire (codebase|repo)",
    r"\bwhole (codebase|repo|project)",
    r"\bacross (the )?(repo|codebase|project)",
    r"\bmany files",
    r"\bmonorepo",
)
TOOL_WORDS: Final = _patterns(
    r"\brun\b",
    r"\bexecute",
    r"\bfiles?\b",
    r"\bshell",
    r"\bterminal",
    r"\bcommand",
    r"\bscript",
    r"\bgrep\b",
    r"\binstall\b",
)
MULTI_STEP_WORDS: Final = _patterns(
    r"\bstep by step",
    r"\bsteps\b",
    r"\bfirst\b.*\bthen\b",
    r"\biterate",
    r"\buntil\b",
)
HIGH_RISK: Final = _patterns(
    r"\bproduction\b",
    r"\bprod\b",
    r"\bdeploy",
    r"\bdatabase",
    r"\bdrop table",
    r"\bdelet",
    r"\brm -rf",
    r"\bsecurity",
    r"\bvulnerab",
    r"\bauth",
    r"\bpassword",
    r"\bcredential",
    r"\bpayment",
    r"\bbilling",
    r"\birreversib",
    r"\bdata loss",
)

_K = TypeVar("_K", bound=str)

SHORT_CHARS: Final = 300
LONG_CHARS: Final = 6000
SMALL_CONTEXT_CHARS: Final = 1500
LARGE_CONTEXT_CHARS: Final = 8000
MANY_TURNS: Final = 10
MAX_SCAN_HEAD: Final = 4000
MAX_SCAN_TAIL: Final = 8000
# The scan reads at most head + tail characters: a fallback must stay cheap on a huge paste.


def heuristic_classification(messages: Sequence[MessageLike], reason: str) -> Classification:
    """Classify by keywords; the result has `fallback=True` and `fallback_reason=reason`."""
    if not reason:
        raise ValueError("a fallback classification needs a reason")
    turns = turns_of(messages)
    joined = "\n".join(t.text for t in turns)
    size = len(joined)
    everything = _bounded(joined, MAX_SCAN_HEAD, MAX_SCAN_TAIL).lower()
    request = _bounded(_last_user_text(turns), MAX_SCAN_HEAD, MAX_SCAN_HEAD // 2).lower()

    task = _best(TASK_KEYWORDS, everything, request, default="investigation")
    subtask = _best(
        {s: SUBTYPE_KEYWORDS[s] for s in SUBTYPES_BY_TASK[task]},
        everything,
        request,
        default=SUBTYPES_BY_TASK[task][0],
    )

    tool_activity = any(t.uses_tools for t in turns)
    requires_tools = tool_activity or task == "agentic_execution" or _any(TOOL_WORDS, request)

    return Classification(
        taskType=task,
        subtaskType=subtask,
        reasoningComplexity=_reasoning(everything, size),
        contextComplexity=_context(everything, size, turns),
        executionMode=_execution(task, tool_activity, requires_tools, request),
        requiresTools=requires_tools,
        riskLevel=_risk(task, everything),
        fallback=True,
        fallback_reason=reason,
    )


def _bounded(text: str, head: int, tail: int) -> str:
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}\n{text[-tail:]}"


def _last_user_text(turns: list[Turn]) -> str:
    for t in reversed(turns):
        if t.role == "user":
            return t.text
    return turns[-1].text if turns else ""


def _any(patterns: tuple[Keyword, ...], text: str) -> bool:
    return any(p.search(text) for p in patterns)


def _hits(patterns: tuple[Keyword, ...], text: str) -> int:
    return sum(1 for p in patterns if p.search(text))


def _best(table: dict[_K, tuple[Keyword, ...]], everything: str, request: str, default: _K) -> _K:
    # The request itself counts double: earlier turns are context, not the ask.
    best, best_score = default, 0
    for key, patterns in table.items():
        score = _hits(patterns, everything) + 2 * _hits(patterns, request)
        if score > best_score:  # strict: ties keep the earlier (more specific) key
            best, best_score = key, score
    return best


def _reasoning(text: str, size: int) -> Level:
    if _any(HIGH_REASONING, text) or size > LONG_CHARS:
        return "high"
    if _any(LOW_REASONING, text) or size < SHORT_CHARS:
        return "low"
    return "medium"


def _context(text: str, size: int, turns: list[Turn]) -> Level:
    if size > LARGE_CONTEXT_CHARS or len(turns) > MANY_TURNS or _any(WIDE_CONTEXT, text):
        return "high"
    user_turns = sum(1 for t in turns if t.role == "user")
    if size < SMALL_CONTEXT_CHARS and user_turns <= 1 and not any(t.uses_tools for t in turns):
        return "low"
    return "medium"


def _execution(
    task: TaskType, tool_activity: bool, requires_tools: bool, request: str
) -> ExecutionMode:
    if tool_activity or task == "agentic_execution":
        return "autonomous"
    if requires_tools or _any(MULTI_STEP_WORDS, request):
        return "multi_step"
    return "single_turn"


def _risk(task: TaskType, text: str) -> Level:
    if _any(HIGH_RISK, text):
        return "high"
    if task in ("debugging", "refactoring", "agentic_execution"):
        return "medium"
    return "low"
