"""Bad commands are answered with CommandRejected and a reason, and the worker keeps going
(real Kafka; no run reaches the provider)."""

from __future__ import annotations

import orjson

from contracts.commands import StartRun
from contracts.events import BenchmarkConfigSaved, CommandAccepted, CommandRejected
from tests.e2e.conftest import Pipeline, new_id, utc_now
from tests.e2e.test_pipeline_decider import THREE_MODELS


def test_start_run_without_a_config_is_rejected_with_a_reason(pipeline: Pipeline) -> None:
    for kind in ("classifier", "decider"):
        cid = pipeline.post(StartRun(command_id=new_id(), issued_at=utc_now(), kind=kind))
        outcome = pipeline.outcome(cid)
        assert isinstance(outcome, CommandRejected)
        assert outcome.command_type == "StartRun"
        assert "no benchmark config" in outcome.reason

    # A decider run also needs a benchmark identity.
    pipeline.save_config(THREE_MODELS.model_copy(update={"benchmarkIdentity": None}))
    cid = pipeline.post(StartRun(command_id=new_id(), issued_at=utc_now(), kind="decider"))
    outcome = pipeline.outcome(cid)
    assert isinstance(outcome, CommandRejected)
    assert "benchmarkIdentity" in outcome.reason


def _valid_start(cid: str) -> dict[str, object]:
    return {
        "command_id": cid,
        "type": "StartRun",
        "schema_version": 1,
        "issued_at": utc_now(),
        "kind": "classifier",
        "force": False,
    }


def test_garbage_commands_are_rejected_and_the_next_valid_one_works(pipeline: Pipeline) -> None:
    garbage: list[tuple[bytes, str]] = [
        (b"\x00this is {not json", "not JSON"),
        (orjson.dumps({**_valid_start(new_id()), "type": "LaunchMissiles"}), "unknown type"),
        (orjson.dumps({**_valid_start(new_id()), "kind": "everything"}), "invalid field kind"),
        (orjson.dumps({**_valid_start(new_id()), "force": "yes please"}), "invalid field force"),
        (orjson.dumps([1, 2, 3]), "not an object"),
    ]
    for raw, _ in garbage:
        pipeline.post_raw(raw)

    valid = THREE_MODELS
    from contracts.commands import SaveBenchmarkConfig

    cid = pipeline.post(SaveBenchmarkConfig(command_id=new_id(), issued_at=utc_now(), config=valid))
    accepted = pipeline.outcome(cid)
    assert isinstance(accepted, CommandAccepted), accepted

    events = pipeline.events()
    rejected = [e for e in events if isinstance(e, CommandRejected)]
    assert len({e.event_id for e in rejected}) == len(garbage)
    for raw, reason in garbage:
        excerpt = raw.decode("utf-8", errors="replace")
        match = [e for e in rejected if e.raw_excerpt and excerpt.startswith(e.raw_excerpt)]
        assert len(match) == 1, (reason, rejected)
        assert reason in match[0].reason, (reason, match[0].reason)
    assert [e.config for e in events if isinstance(e, BenchmarkConfigSaved)] == [valid]
    # The answer is the last thing a command writes (here on the same partition as the
    # config, so in log order): whoever has seen it finds what it answered for.
    answered = [type(e) for e in events if getattr(e, "correlation_id", None) == cid]
    assert answered == [BenchmarkConfigSaved, CommandAccepted], answered

    # The raw bytes of every malformed command went to the commands dead-letter topic.
    dead = pipeline.raw_topic("commands.dlq")
    assert sorted(dead) == sorted(raw for raw, _ in garbage)
    assert pipeline.worker.alive()
