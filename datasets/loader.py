"""Load the classifier and decider datasets from their JSON files.

Each dataset lives in its own directory (`classifier/`, `decider/`) under a root that defaults
to this package's directory; every `*.json` file there holds a JSON array of cases. Loading
collects every problem it can find (bad JSON, unknown or missing fields, invalid values,
duplicate ids, an id used in both datasets, ...) and raises one `DatasetError` listing them
all, each naming the file, the case and the problem in plain words.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from contracts.cases import ClassifierCase, DeciderCase
from contracts.taxonomy import SUBTYPES_BY_TASK, TASK_OF_SUBTYPE, subtype_belongs

DatasetName = Literal["classifier", "decider"]
DATASET_NAMES: Final[tuple[DatasetName, ...]] = ("classifier", "decider")
PACKAGE_ROOT: Final[Path] = Path(__file__).resolve().parent
"""Default root: the installed `datasets` package, which ships the data files."""

CaseT = TypeVar("CaseT", bound=BaseModel)


@dataclass(frozen=True)
class DatasetProblem:
    """One thing wrong with a dataset file."""

    file: str
    """The file, relative to the datasets root (e.g. `decider/debugging.json`)."""
    case: str | None
    """The case id, or `#<index>` when the case has no usable id; None for the whole file."""
    message: str
    """What is wrong, in plain words."""
    index: int | None = None
    """Position of the case in the file's array (0-based), when known."""

    @property
    def where(self) -> str:
        if self.case is None:
            return self.file
        if self.index is None or self.case == f"#{self.index}":
            return f"{self.file} {self.case}"
        return f"{self.file} #{self.index} {self.case}"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class DatasetError(Exception):
    """A dataset could not be loaded; `problems` lists everything found wrong."""

    def __init__(self, problems: Sequence[DatasetProblem]) -> None:
        self.problems: list[DatasetProblem] = list(problems)
        n = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{n} dataset problem{'s' if n != 1 else ''}:\n{lines}")


@dataclass(frozen=True)
class Datasets:
    classifier: list[ClassifierCase]
    decider: list[DeciderCase]


def load_classifier_cases(root: Path | None = None) -> list[ClassifierCase]:
    """Every classifier case under `<root>/classifier/*.json`, in file then array order."""
    return _load_one("classifier", ClassifierCase, _root(root))


def load_decider_cases(root: Path | None = None) -> list[DeciderCase]:
    """Every decider golden task under `<root>/decider/*.json`, in file then array order."""
    return _load_one("decider", DeciderCase, _root(root))


def load_datasets(root: Path | None = None) -> Datasets:
    """Both datasets; problems of both are reported together in one `DatasetError`."""
    base = _root(root)
    problems: list[DatasetProblem] = []
    c_cases, c_problems = _read_dataset(base, "classifier", ClassifierCase)
    d_cases, d_problems = _read_dataset(base, "decider", DeciderCase)
    problems += c_problems + d_problems
    c_ids = {case.id: file for file, case in c_cases}
    for file, case in d_cases:
        if case.id in c_ids:
            problems.append(
                DatasetProblem(
                    file,
                    case.id,
                    f"id is also used by the classifier dataset ({c_ids[case.id]}); "
                    "ids must be unique across both datasets",
                )
            )
    if problems:
        raise DatasetError(problems)
    return Datasets([c for _, c in c_cases], [d for _, d in d_cases])


# ---------------------------------------------------------------------------------------


def _root(root: Path | None) -> Path:
    return PACKAGE_ROOT if root is None else Path(root)


def _load_one(name: DatasetName, model: type[CaseT], base: Path) -> list[CaseT]:
    cases, problems = _read_dataset(base, name, model)
    other: DatasetName = "decider" if name == "classifier" else "classifier"
    other_ids = _peek_ids(base, other)
    for file, case in cases:
        case_id = getattr(case, "id", None)
        if isinstance(case_id, str) and case_id in other_ids:
            problems.append(
                DatasetProblem(
                    file,
                    case_id,
                    f"id is also used by the {other} dataset ({other_ids[case_id]}); "
                    "ids must be unique across both datasets",
                )
            )
    if problems:
        raise DatasetError(problems)
    return [case for _, case in cases]


def _dataset_files(base: Path, name: DatasetName) -> tuple[list[Path], list[DatasetProblem]]:
    directory = base / name
    if not directory.is_dir():
        return [], [DatasetProblem(name, None, f"dataset directory {directory} does not exist")]
    files: list[Path] = []
    problems: list[DatasetProblem] = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(base).as_posix()
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue  # .gitkeep, editor swap files
        if path.suffix != ".json":
            problems.append(
                DatasetProblem(rel, None, "not a .json file; only JSON arrays of cases belong here")
            )
            continue
        files.append(path)
    if not files and not problems:
        problems.append(DatasetProblem(name, None, "no *.json files found"))
    return files, problems


def _read_dataset(
    base: Path, name: DatasetName, model: type[CaseT]
) -> tuple[list[tuple[str, CaseT]], list[DatasetProblem]]:
    """Parse every file of one dataset: (file, case) pairs and the problems found."""
    files, problems = _dataset_files(base, name)
    cases: list[tuple[str, CaseT]] = []
    first_seen: dict[str, str] = {}
    for path in files:
        rel = path.relative_to(base).as_posix()
        items, file_problem = _read_array(path, rel)
        if file_problem is not None:
            problems.append(file_problem)
            continue
        for index, item in enumerate(items):
            label = _case_label(item, index)
            if not isinstance(item, dict):
                problems.append(
                    DatasetProblem(
                        rel, label, f"expected a JSON object, got {_json_type(item)}", index
                    )
                )
                continue
            raw_id = item.get("id")
            if isinstance(raw_id, str):
                if raw_id in first_seen:
                    problems.append(
                        DatasetProblem(
                            rel, raw_id, f"duplicate id (first used in {first_seen[raw_id]})", index
                        )
                    )
                else:
                    first_seen[raw_id] = f"{rel} #{index}"
            messages = _precheck(name, item)
            try:
                cases.append((rel, model.model_validate(item)))
            except ValidationError as e:
                messages += [m for m in describe_errors(e) if m not in messages]
            problems += [DatasetProblem(rel, label, msg, index) for msg in messages]
    return cases, problems


def _read_array(path: Path, rel: str) -> tuple[list[Any], DatasetProblem | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        return [], DatasetProblem(rel, None, f"not UTF-8 text: {e}")
    except OSError as e:
        return [], DatasetProblem(rel, None, f"cannot be read: {e}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return [], DatasetProblem(
            rel, None, f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
        )
    if not isinstance(data, list):
        return [], DatasetProblem(
            rel, None, f"must hold a JSON array of cases, got {_json_type(data)}"
        )
    return data, None


def _peek_ids(base: Path, name: DatasetName) -> dict[str, str]:
    """Ids of the other dataset (id -> file), read leniently: its own problems are ignored."""
    directory = base / name
    ids: dict[str, str] = {}
    if not directory.is_dir():
        return ids
    for path in sorted(directory.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, list):
            rel = path.relative_to(base).as_posix()
            for item in data:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    ids.setdefault(item["id"], rel)
    return ids


def _precheck(name: DatasetName, item: dict[str, Any]) -> list[str]:
    """Consistency problems pydantic would hide behind another field's error.

    A model validator runs only once every field is valid; the subtype-of-task rule is checked
    here too so that it is reported alongside the other problems of the same case.
    """
    fields = item.get("label") if name == "classifier" else item
    if not isinstance(fields, dict):
        return []
    task, sub = fields.get("taskType"), fields.get("subtaskType")
    if task in SUBTYPES_BY_TASK and sub in TASK_OF_SUBTYPE and not subtype_belongs(task, sub):
        where = "label: " if name == "classifier" else ""
        return [f"{where}{_subtype_message(task, sub)}"]
    return []


def _subtype_message(task: str, sub: str) -> str:
    # Same wording as the model validators of contracts, so the two deduplicate.
    return f"subtaskType {sub!r} does not belong to taskType {task!r}"


def _case_label(item: Any, index: int) -> str:
    if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
        return str(item["id"])
    return f"#{index}"


def _json_type(value: Any) -> str:
    names: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "a boolean"),
        ((int, float), "a number"),
        (str, "a string"),
        (list, "an array"),
        (dict, "an object"),
    ]
    for t, n in names:
        if isinstance(value, t):
            return n
    return "null"


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_errors(error: ValidationError) -> list[str]:
    """Pydantic's errors of one case, rewritten in plain words (one line each)."""
    messages: list[str] = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        ctx = err.get("ctx") or {}
        field = _loc(_strip_union_tag(loc))
        if kind == "extra_forbidden":
            messages.append(f"unknown field {field!r}")
        elif kind == "missing":
            messages.append(f"missing field {field!r}")
        elif kind == "union_tag_not_found":
            tags = ", ".join(sorted(_CHECK_TAGS))
            messages.append(f"{field}: missing field 'kind' (one of {tags})")
        elif kind == "union_tag_invalid":
            messages.append(
                f"{field}: unknown check kind {ctx.get('tag')!r} "
                f"(expected one of {ctx.get('expected_tags')})"
            )
        elif kind in ("value_error", "assertion_error"):
            reason = str(ctx.get("error", err["msg"]))
            messages.append(f"{field}: {reason}" if field else reason)
        else:
            got = _short(err.get("input"))
            msg = err["msg"]
            messages.append(f"invalid value for {field!r}: {got} ({msg})" if field else msg)
    return messages


_CHECK_TAGS: Final = frozenset({"exact", "contains_all", "regex", "json_equal"})


def _strip_union_tag(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """`('check', 'regex', 'expected')` -> `('check', 'expected')`."""
    out: list[int | str] = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "check" and part in _CHECK_TAGS:
            continue
        out.append(part)
    return tuple(out)
