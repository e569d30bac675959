"""Dataset case shapes: classifier cases (labelled requests) and decider golden tasks."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.classification import Classification
from contracts.taxonomy import SubtaskType, TaskType, Tier, subtype_belongs

FINAL_ANSWER_INSTRUCTION = (
    "When you are done, reply with your final answer alone on the last line, with no other text."
)
"""Every decider prompt ends with exactly this sentence."""

CASE_ID_PATTERN = r"^[a-z_]+-[a-z_]+-[a-z0-9][a-z0-9\-]*$"


def content_hash(text: str) -> str:
    """Stable content hash used to recognise a case's prompt (sha256 of the UTF-8 text)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    name: str | None = None
    """For tool messages: the tool's name."""


class ClassifierCase(BaseModel):
    """A realistic request to a coding assistant with its hand label."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=CASE_ID_PATTERN)
    messages: tuple[ChatMessage, ...] = Field(min_length=1)
    label: Classification

    @model_validator(mode="after")
    def _id_matches_label(self) -> ClassifierCase:
        prefix = f"{self.label.taskType}-{self.label.subtaskType}-"
        if not self.id.startswith(prefix):
            raise ValueError(f"id must start with {prefix!r}")
        if self.label.fallback:
            raise ValueError("a hand label cannot be a fallback")
        return self


class ExactCheck(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["exact"] = "exact"
    expected: str


class ContainsAllCheck(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["contains_all"] = "contains_all"
    expected: tuple[str, ...] = Field(min_length=1)


class RegexCheck(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["regex"] = "regex"
    expected: str

    @field_validator("expected")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"invalid regex {v!r}: {e}") from e
        return v


class JsonEqualCheck(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["json_equal"] = "json_equal"
    expected: str
    """The expected value as JSON text."""

    @field_validator("expected")
    @classmethod
    def _parses(cls, v: str) -> str:
        import json

        try:
            json.loads(v)
        except ValueError as e:
            raise ValueError(f"unparsable json_equal expectation: {e}") from e
        return v

    def expected_value(self) -> Any:
        import json

        return json.loads(self.expected)


Check = Annotated[
    ExactCheck | ContainsAllCheck | RegexCheck | JsonEqualCheck, Field(discriminator="kind")
]


class PostCheck(BaseModel):
    """A hidden check of the workspace, run in the job's container after the agent finished.

    The agent never sees it (it is neither in the prompt nor in the workspace): it is sent as
    one command. A case with a post-check passes only when its answer passes `check` and the
    post-check exits 0, so a task that changes files is graded on the files, not only on
    the words of its answer.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    script: str = Field(min_length=1)
    """Bash run in the workspace (with `set -euo pipefail`); exit 0 means the work is there.
    On failure it should print why (the last lines become the grade's detail)."""
    restore: tuple[str, ...] = ()
    """Workspace files written back to their original content (from the case's `files`)
    before the script runs: checkers, fixtures and files the task must not change, so
    editing them cannot fake a pass. An entry ending in `/` names every file under it."""
    timeout_s: int = Field(default=120, ge=5, le=900)


class DeciderCase(BaseModel):
    """A golden task with one tier, a mechanical check and (where executable) a reference."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=CASE_ID_PATTERN)
    taskType: TaskType
    subtaskType: SubtaskType
    tier: Tier
    prompt: str
    """The task; ends with FINAL_ANSWER_INSTRUCTION."""
    check: Check
    golden_answer: str
    """A canonical final answer that passes `check` (hand-derived, mechanically re-verified)."""
    files: dict[str, str] = Field(default_factory=dict)
    """Workspace files (relative path -> text) written before the case runs."""
    timeout_s: int = Field(default=120, ge=5, le=900)
    reference: str | None = None
    """Shell run in the workspace whose last non-empty stdout line passes `check`."""
    post_check: PostCheck | None = None
    """For tasks that change files: the hidden check of the workspace (see `PostCheck`)."""

    @model_validator(mode="after")
    def _consistent(self) -> DeciderCase:
        if not subtype_belongs(self.taskType, self.subtaskType):
            raise ValueError(
                f"subtaskType {self.subtaskType!r} does not belong to taskType {self.taskType!r}"
            )
        prefix = f"{self.taskType}-{self.subtaskType}-"
        if not self.id.startswith(prefix):
            raise ValueError(f"id must start with {prefix!r}")
        if not self.prompt.rstrip().endswith(FINAL_ANSWER_INSTRUCTION):
            raise ValueError("prompt must end with the uniform final-answer instruction")
        for path in self.files:
            if path.startswith("/") or ".." in path.split("/"):
                raise ValueError(f"workspace file path {path!r} must be relative and inside")
        if self.taskType == "agentic_execution" and not self.files:
            raise ValueError("agentic_execution cases need workspace files")
        if self.taskType == "agentic_execution" and not self.reference:
            raise ValueError("agentic_execution cases need a reference solution")
        if self.post_check is not None:
            # Workspace files and a reference: the case is worked with tools (the simulated
            # provider's right draws run the reference), so the post-check has work to see.
            if not self.files or not self.reference:
                raise ValueError("a case with a post_check needs workspace files and a reference")
            for entry in self.post_check.restore:
                if not restored_paths(self.files, (entry,)):
                    raise ValueError(f"post_check.restore entry {entry!r} names no workspace file")
        return self

    def restored_files(self) -> dict[str, str]:
        """The original content of every file the post-check restores before it runs."""
        if self.post_check is None:
            return {}
        return {p: self.files[p] for p in restored_paths(self.files, self.post_check.restore)}


def restored_paths(files: Mapping[str, str], entries: Sequence[str]) -> list[str]:
    """The workspace files `entries` name: exact paths, or every file under a `dir/`."""
    return sorted(
        path
        for path in files
        if any(path == e or (e.endswith("/") and path.startswith(e)) for e in entries)
    )


def dataset_hash(cases: Iterable[ClassifierCase] | Iterable[DeciderCase]) -> str:
    """Content hash of a whole dataset: every field of every case, in id order, so editing,
    adding or removing any case changes it (and file layout or order does not)."""
    ordered = sorted((c.model_dump(mode="json") for c in cases), key=lambda d: str(d["id"]))
    return hashlib.sha256(orjson.dumps(ordered, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
