"""Bytes <-> events and commands: orjson on the wire, a TypeAdapter on the union, upcasters.

Decoding runs: JSON -> object -> known `type` -> `schema_version` not newer than the code ->
upcasters (plain `dict -> dict`, keyed by (type, from_version)) -> validation. Every failure
raises one `DecodeError` whose `reason` says what was wrong, so the command worker can turn
it into a `CommandRejected` and keep going.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from contracts.commands import COMMAND_CLASSES, Command
from contracts.envelope import CommandBase, EventBase
from contracts.events import EVENT_CLASSES, Event

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns a payload of (type, from_version) into one of a later version (bumping it)."""

EVENT_UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""Registered event upcasters by (type, from_version). Empty while every event is at v1."""
COMMAND_UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""Registered command upcasters by (type, from_version)."""

_EVENT_ADAPTER: Final[TypeAdapter[Event]] = TypeAdapter(Event)
_COMMAND_ADAPTER: Final[TypeAdapter[Command]] = TypeAdapter(Command)

_M = TypeVar("_M", bound=BaseModel)


class DecodeError(ValueError):
    """Bytes that are not a valid event or command of a version this code understands."""

    def __init__(self, reason: str, type_name: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        """What was wrong, e.g. "unknown type 'X'" or "invalid field config.minAccuracy: ..."."""
        self.type_name = type_name
        """The payload's `type` tag when one could be read (for `CommandRejected`)."""


def register_upcaster(
    registry: dict[tuple[str, int], Upcaster], type_name: str, from_version: int
) -> Callable[[Upcaster], Upcaster]:
    """Decorator adding an upcaster to `registry` (EVENT_UPCASTERS or COMMAND_UPCASTERS)."""

    def add(fn: Upcaster) -> Upcaster:
        key = (type_name, from_version)
        if key in registry:
            raise ValueError(f"an upcaster for {key} is already registered")
        registry[key] = fn
        return fn

    return add


def encode_event(event: EventBase) -> bytes:
    """The event as compact JSON bytes (field order as declared, so output is stable)."""
    return orjson.dumps(event.model_dump(mode="json"))


def encode_command(command: CommandBase) -> bytes:
    """The command as compact JSON bytes."""
    return orjson.dumps(command.model_dump(mode="json"))


def decode_event(raw: bytes, upcasters: Mapping[tuple[str, int], Upcaster] | None = None) -> Event:
    """Parse, upcast and validate an event; raises DecodeError with a precise reason."""
    return _decode(
        raw,
        EVENT_CLASSES,
        EVENT_UPCASTERS if upcasters is None else upcasters,
        _EVENT_ADAPTER,
    )


def decode_command(
    raw: bytes, upcasters: Mapping[tuple[str, int], Upcaster] | None = None
) -> Command:
    """Parse, upcast and validate a command; raises DecodeError with a precise reason."""
    return _decode(
        raw,
        COMMAND_CLASSES,
        COMMAND_UPCASTERS if upcasters is None else upcasters,
        _COMMAND_ADAPTER,
    )


def _decode(
    raw: bytes,
    classes: Mapping[str, type[BaseModel]],
    upcasters: Mapping[tuple[str, int], Upcaster],
    adapter: TypeAdapter[_M],
) -> _M:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise DecodeError(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise DecodeError(f"not an object: got a JSON {_json_kind(data)}")

    type_name, version = _header(data, classes)
    current = _current_version(classes[type_name])
    if version > current:
        raise DecodeError(
            f"schema_version {version} of {type_name!r} is newer than supported {current}",
            type_name,
        )
    while version < current:
        upcast = upcasters.get((type_name, version))
        if upcast is None:
            raise DecodeError(
                f"schema_version {version} of {type_name!r} is older than supported {current} "
                "and no upcaster is registered for it",
                type_name,
            )
        try:
            data = upcast(dict(data))
        except Exception as e:  # an upcaster choking on a payload is that payload's fault
            raise DecodeError(
                f"upcasting {type_name!r} from schema_version {version} failed: {e}", type_name
            ) from e
        new_type, new_version = _header(data, classes)
        if new_type != type_name or new_version <= version:
            raise DecodeError(
                f"upcaster of {type_name!r} v{version} must keep the type and raise "
                f"schema_version (got {new_type!r} v{new_version})",
                type_name,
            )
        version = new_version

    try:
        return adapter.validate_python(data)
    except ValidationError as e:
        raise DecodeError(_describe(e, type_name), type_name) from None


def _header(data: dict[str, Any], classes: Mapping[str, type[BaseModel]]) -> tuple[str, int]:
    if "type" not in data:
        raise DecodeError("missing field type")
    type_name = data["type"]
    if not isinstance(type_name, str):
        raise DecodeError(f"field type must be a string, got a JSON {_json_kind(type_name)}")
    if type_name not in classes:
        raise DecodeError(f"unknown type {_short(type_name)!r}", _short(type_name))
    if "schema_version" not in data:
        raise DecodeError(f"missing field schema_version of {type_name!r}", type_name)
    version = data["schema_version"]
    # bool is an int in Python, but `true` is not a version.
    if not isinstance(version, int) or isinstance(version, bool):
        raise DecodeError(f"schema_version of {type_name!r} must be an integer", type_name)
    return type_name, version


def _current_version(cls: type[BaseModel]) -> int:
    default = cls.model_fields["schema_version"].default
    assert isinstance(default, int)
    return default


def _describe(error: ValidationError, type_name: str) -> str:
    """One line naming the first bad field by its dotted path, plus how many more there are."""
    problems = []
    for item in error.errors(include_url=False):
        loc = list(item["loc"])
        # The discriminated union puts the tag first; the path inside the payload is the rest.
        if loc and loc[0] == type_name:
            loc = loc[1:]
        path = ".".join(str(part) for part in loc)
        kind = item["type"]
        if kind == "missing":
            problems.append(f"missing field {path}")
        elif kind == "extra_forbidden":
            problems.append(f"unexpected field {path}")
        elif path:
            problems.append(f"invalid field {path}: {item['msg']}")
        else:
            problems.append(f"invalid {type_name}: {item['msg']}")
    reason = problems[0] if problems else f"invalid {type_name}"
    if len(problems) > 1:
        reason += f" (and {len(problems) - 1} more)"
    return reason


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
