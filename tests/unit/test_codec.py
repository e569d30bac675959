"""Codec: commands round-trip; every decode failure is one DecodeError with a precise reason;
upcasters run before validation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.codec import (
    COMMAND_UPCASTERS,
    EVENT_UPCASTERS,
    DecodeError,
    Upcaster,
    decode_command,
    decode_event,
    encode_command,
    encode_event,
    register_upcaster,
)
from contracts.commands import (
    COMMAND_CLASSES,
    SaveBenchmarkConfig,
    SetClassifierOverride,
    StartRun,
)
from contracts.config import BenchmarkConfig, DeciderModel
from contracts.envelope import CommandBase
from contracts.events import ClassifierOverrideSet

AT = "2026-06-11T09:30:00.000Z"
CONFIG = BenchmarkConfig(
    classifierModels=("sim/classify-mini", "sim/classify-pro"),
    deciderModels=(DeciderModel(model="sim/swift-mini", reasoningEffort="high"),),
    classifierMaxP95LatencyMs=None,
    acceptance="lower_bound",
)
COMMANDS: list[CommandBase] = [
    SaveBenchmarkConfig(command_id="c1", issued_at=AT, config=CONFIG),
    StartRun(command_id="c2", issued_at=AT, kind="decider"),
    StartRun(command_id="c3", issued_at=AT, kind="classifier", force=True),
    SetClassifierOverride(command_id="c4", issued_at=AT, model="sim/classify-pro"),
    SetClassifierOverride(command_id="c5", issued_at=AT, model=None),
]


def _reason(decode: Any, raw: bytes) -> str:
    with pytest.raises(DecodeError) as exc:
        decode(raw)
    assert isinstance(exc.value, ValueError)
    assert str(exc.value) == exc.value.reason
    return exc.value.reason


def _command(**fields: Any) -> bytes:
    return orjson.dumps(
        {
            "type": "StartRun",
            "schema_version": 1,
            "command_id": "c",
            "issued_at": AT,
            "kind": "decider",
            **fields,
        }
    )


# ---- commands round-trip ----------------------------------------------------------------


def test_commands_cover_every_class() -> None:
    assert {type(c) for c in COMMANDS} == set(COMMAND_CLASSES.values())


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.command_id)
def test_command_round_trip(command: CommandBase) -> None:
    raw = encode_command(command)
    assert decode_command(raw) == command
    assert encode_command(decode_command(raw)) == raw


@settings(max_examples=50, deadline=None)
@given(
    kind=st.sampled_from(["classifier", "decider"]),
    force=st.booleans(),
    command_id=st.text(min_size=1, max_size=40),
)
def test_start_run_round_trips_any_id(kind: str, force: bool, command_id: str) -> None:
    command = StartRun.model_validate(
        {"command_id": command_id, "issued_at": AT, "kind": kind, "force": force}
    )
    assert decode_command(encode_command(command)) == command


def test_encoding_is_compact_json_with_envelope_first() -> None:
    raw = encode_command(COMMANDS[1])
    assert raw == (
        b'{"command_id":"c2","type":"StartRun","schema_version":1,'
        b'"issued_at":"2026-06-11T09:30:00.000Z","kind":"decider","force":false}'
    )


def test_minimal_start_run_uses_force_default() -> None:
    raw = orjson.dumps(
        {
            "type": "StartRun",
            "schema_version": 1,
            "command_id": "c",
            "issued_at": AT,
            "kind": "decider",
        }
    )
    assert decode_command(raw) == StartRun(command_id="c", issued_at=AT, kind="decider")


# ---- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not JSON"),
        (b"{oops", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not an object: got a JSON array"),
        (b'"StartRun"', "not an object: got a JSON string"),
        (b"null", "not an object: got a JSON null"),
        (b'{"schema_version": 1}', "missing field type"),
        (b'{"type": 7, "schema_version": 1}', "field type must be a string"),
        (b'{"type": "LaunchRockets", "schema_version": 1}', "unknown type 'LaunchRockets'"),
        (b'{"type": "StartRun"}', "missing field schema_version of 'StartRun'"),
        (b'{"type": "StartRun", "schema_version": "1"}', "schema_version of 'StartRun' must be"),
        (b'{"type": "StartRun", "schema_version": true}', "schema_version of 'StartRun' must be"),
        (
            b'{"type": "StartRun", "schema_version": 3}',
            "schema_version 3 of 'StartRun' is newer than supported 1",
        ),
        (
            b'{"type": "StartRun", "schema_version": 0}',
            "schema_version 0 of 'StartRun' is older than supported 1 and no upcaster",
        ),
        (_command(kind="everything"), "invalid field kind: Input should be 'classifier'"),
        (_command(command_id=None), "invalid field command_id"),
        (
            _command(issued_at="2026-06-11T11:30:00+02:00"),
            "invalid field issued_at: Value error, timestamp must be UTC",
        ),
        (_command(extra=1), "unexpected field extra"),
        (_command(force="maybe"), "invalid field force"),
    ],
)
def test_command_decode_failures(raw: bytes, reason: str) -> None:
    got = _reason(decode_command, raw)
    assert got.startswith(reason), got


def test_missing_field_is_named() -> None:
    raw = orjson.dumps({"type": "StartRun", "schema_version": 1, "issued_at": AT, "kind": "x"})
    assert _reason(decode_command, raw) == "missing field command_id (and 1 more)"


def test_nested_field_path_is_named() -> None:
    config = {**CONFIG.model_dump(mode="json"), "minAccuracy": 1.5}
    raw = orjson.dumps(
        {
            "type": "SaveBenchmarkConfig",
            "schema_version": 1,
            "command_id": "c",
            "issued_at": AT,
            "config": config,
        }
    )
    assert _reason(decode_command, raw) == (
        "invalid field config.minAccuracy: Input should be less than or equal to 1"
    )
    config = {**CONFIG.model_dump(mode="json"), "deciderRepetitions": 6}
    raw = orjson.dumps(
        {
            "type": "SaveBenchmarkConfig",
            "schema_version": 1,
            "command_id": "c",
            "issued_at": AT,
            "config": config,
        }
    )
    assert _reason(decode_command, raw).startswith("invalid field config.deciderRepetitions:")
    config = {
        **CONFIG.model_dump(mode="json"),
        "deciderModels": [{"model": "sim/a", "reasoningEffort": "max"}],
    }
    raw = orjson.dumps(
        {
            "type": "SaveBenchmarkConfig",
            "schema_version": 1,
            "command_id": "c",
            "issued_at": AT,
            "config": config,
        }
    )
    assert _reason(decode_command, raw).startswith(
        "invalid field config.deciderModels.0.reasoningEffort:"
    )


def test_model_level_error_is_reported() -> None:
    config = {**CONFIG.model_dump(mode="json"), "classifierModels": ["sim/a", "sim/a"]}
    raw = orjson.dumps(
        {
            "type": "SaveBenchmarkConfig",
            "schema_version": 1,
            "command_id": "c",
            "issued_at": AT,
            "config": config,
        }
    )
    assert "duplicate classifier model" in _reason(decode_command, raw)


def test_type_name_is_exposed_for_command_rejected() -> None:
    with pytest.raises(DecodeError) as exc:
        decode_command(_command(kind="x"))
    assert exc.value.type_name == "StartRun"
    with pytest.raises(DecodeError) as exc:
        decode_command(b"nope")
    assert exc.value.type_name is None
    with pytest.raises(DecodeError) as exc:
        decode_command(b'{"type": "Nope", "schema_version": 1}')
    assert exc.value.type_name == "Nope"


def test_events_and_commands_are_separate_unions() -> None:
    event = ClassifierOverrideSet(event_id="e", occurred_at=AT, model=None)
    assert _reason(decode_command, encode_event(event)) == "unknown type 'ClassifierOverrideSet'"
    assert _reason(decode_event, encode_command(COMMANDS[1])) == "unknown type 'StartRun'"


def test_event_decode_failures() -> None:
    assert _reason(decode_event, b"\x00").startswith("not JSON")
    assert _reason(decode_event, b"3") == "not an object: got a JSON number"
    assert _reason(decode_event, b'{"type": "RunStarted", "schema_version": 2}') == (
        "schema_version 2 of 'RunStarted' is newer than supported 1"
    )
    raw = orjson.dumps(
        {
            "type": "ClassifierOverrideSet",
            "schema_version": 1,
            "event_id": "e",
            "occurred_at": AT,
            "model": 42,
        }
    )
    assert _reason(decode_event, raw) == "invalid field model: Input should be a valid string"


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(raw: bytes) -> None:
    for decode in (decode_event, decode_command):
        try:
            decode(raw)
        except DecodeError as e:
            assert e.reason


# ---- upcasters --------------------------------------------------------------------------


def _override_v0_to_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Test-local v0 shape: the override was called `classifier` and `clear` meant None."""
    model = None if data.pop("clear", False) else data.pop("classifier")
    return {**data, "model": model, "schema_version": 1}


V0_EVENT = orjson.dumps(
    {
        "type": "ClassifierOverrideSet",
        "schema_version": 0,
        "event_id": "e",
        "occurred_at": AT,
        "classifier": "sim/old",
    }
)


def test_event_upcaster_runs_before_validation() -> None:
    upcasters: dict[tuple[str, int], Upcaster] = {}
    register_upcaster(upcasters, "ClassifierOverrideSet", 0)(_override_v0_to_v1)
    decoded = decode_event(V0_EVENT, upcasters=upcasters)
    assert decoded == ClassifierOverrideSet(event_id="e", occurred_at=AT, model="sim/old")
    # Upcasting is a read-side concern: re-encoding writes the current version.
    assert orjson.loads(encode_event(decoded))["schema_version"] == 1


def test_upcasters_chain_across_versions() -> None:
    seen: list[int] = []

    def minus1_to_0(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(data["schema_version"])
        who = data.pop("who")
        return {**data, "schema_version": 0, "classifier": who}

    def zero_to_1(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(data["schema_version"])
        return _override_v0_to_v1(data)

    upcasters = {
        ("ClassifierOverrideSet", -1): minus1_to_0,
        ("ClassifierOverrideSet", 0): zero_to_1,
    }
    raw = orjson.dumps(
        {
            "type": "ClassifierOverrideSet",
            "schema_version": -1,
            "event_id": "e",
            "occurred_at": AT,
            "who": "sim/older",
        }
    )
    decoded = decode_event(raw, upcasters=upcasters)
    assert isinstance(decoded, ClassifierOverrideSet) and decoded.model == "sim/older"
    assert seen == [-1, 0]


def test_without_upcaster_old_version_is_refused() -> None:
    assert _reason(decode_event, V0_EVENT) == (
        "schema_version 0 of 'ClassifierOverrideSet' is older than supported 1 "
        "and no upcaster is registered for it"
    )


def test_broken_upcasters_raise_decode_error() -> None:
    def stuck(data: dict[str, Any]) -> dict[str, Any]:
        return data  # forgets to bump the version

    def crashes(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("classifier")

    key = ("ClassifierOverrideSet", 0)
    assert "must keep the type and raise schema_version" in _reason(
        lambda raw: decode_event(raw, upcasters={key: stuck}), V0_EVENT
    )
    assert _reason(lambda raw: decode_event(raw, upcasters={key: crashes}), V0_EVENT).startswith(
        "upcasting 'ClassifierOverrideSet' from schema_version 0 failed"
    )


def test_upcast_result_is_still_validated() -> None:
    def bad(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "schema_version": 1}  # leaves the v0 field in place

    reason = _reason(
        lambda raw: decode_event(raw, upcasters={("ClassifierOverrideSet", 0): bad}), V0_EVENT
    )
    assert reason.startswith("missing field model")


def test_register_refuses_duplicates_and_global_registries_start_empty() -> None:
    upcasters: dict[tuple[str, int], Upcaster] = {}
    register_upcaster(upcasters, "StartRun", 0)(_override_v0_to_v1)
    with pytest.raises(ValueError, match="already registered"):
        register_upcaster(upcasters, "StartRun", 0)(_override_v0_to_v1)
    assert EVENT_UPCASTERS == {} and COMMAND_UPCASTERS == {}


def test_command_upcaster_registry_is_used() -> None:
    raw = orjson.dumps(
        {
            "type": "StartRun",
            "schema_version": 0,
            "command_id": "c",
            "issued_at": AT,
            "runKind": "decider",
        }
    )

    def rename(data: dict[str, Any]) -> dict[str, Any]:
        kind = data.pop("runKind")
        return {**data, "kind": kind, "schema_version": 1}

    assert decode_command(raw, upcasters={("StartRun", 0): rename}) == StartRun(
        command_id="c", issued_at=AT, kind="decider"
    )
