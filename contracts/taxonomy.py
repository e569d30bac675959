"""The classification taxonomy: six task types, three subtypes each (18 pairs)."""

from __future__ import annotations

from typing import Final, Literal, get_args

TaskType = Literal[
    "code_generation",
    "debugging",
    "refactoring",
    "investigation",
    "planning_design",
    "agentic_execution",
]
SubtaskType = Literal[
    "new_feature",
    "boilerplate",
    "tests",
    "bug_fix",
    "error_diagnosis",
    "performance",
    "restructure",
    "migration",
    "cleanup",
    "codebase_question",
    "external_research",
    "system_behavior",
    "system_design",
    "task_breakdown",
    "api_design",
    "shell_automation",
    "multi_file_edit",
    "data_processing",
]
Level = Literal["low", "medium", "high"]
ExecutionMode = Literal["single_turn", "multi_step", "autonomous"]
Tier = Literal["low", "medium", "high"]
ReasoningEffort = Literal["minimal", "low", "medium", "high"]

TASK_TYPES: Final[tuple[TaskType, ...]] = get_args(TaskType)
SUBTASK_TYPES: Final[tuple[SubtaskType, ...]] = get_args(SubtaskType)
LEVELS: Final[tuple[Level, ...]] = get_args(Level)
EXECUTION_MODES: Final[tuple[ExecutionMode, ...]] = get_args(ExecutionMode)
TIERS: Final[tuple[Tier, ...]] = get_args(Tier)
REASONING_EFFORTS: Final[tuple[ReasoningEffort, ...]] = get_args(ReasoningEffort)

SUBTYPES_BY_TASK: Final[dict[TaskType, tuple[SubtaskType, ...]]] = {
    "code_generation": ("new_feature", "boilerplate", "tests"),
    "debugging": ("bug_fix", "error_diagnosis", "performance"),
    "refactoring": ("restructure", "migration", "cleanup"),
    "investigation": ("codebase_question", "external_research", "system_behavior"),
    "planning_design": ("system_design", "task_breakdown", "api_design"),
    "agentic_execution": ("shell_automation", "multi_file_edit", "data_processing"),
}

TASK_OF_SUBTYPE: Final[dict[SubtaskType, TaskType]] = {
    sub: task for task, subs in SUBTYPES_BY_TASK.items() for sub in subs
}

TAXONOMY_PAIRS: Final[tuple[tuple[TaskType, SubtaskType], ...]] = tuple(
    (task, sub) for task, subs in SUBTYPES_BY_TASK.items() for sub in subs
)


def subtype_belongs(task: str, subtask: str) -> bool:
    """True when `subtask` is one of `task`'s three subtypes."""
    return subtask in SUBTYPES_BY_TASK.get(task, ())  # type: ignore[call-overload]
