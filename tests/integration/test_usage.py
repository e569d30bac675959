"""Per-user usage (16.12) over projected decisions, and the projector's decision dedupe by
the idempotent decision id (16.11): a redelivered decision is one row and billed once."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from api.cli.main import app
from bench.synthetic import produce
from contracts.envelope import EventBase
from contracts.events import DecisionMade
from projections.db import connect
from projections.projector import project_once
from projections.usage import UsageRow, usage
from tests.integration.replay_check import assert_bulk_replay_equals

pytestmark = pytest.mark.timeout(120)


def decision(
    n: int,
    user: str | None,
    day: int,
    cost: float | None,
    outcome: str = "ok",
    *,
    event_id: str | None = None,
) -> tuple[str, str, EventBase]:
    event = DecisionMade(
        event_id=event_id or f"ev-{n}",
        occurred_at=f"2026-03-0{day}T10:00:{n:02d}.000Z",
        decision_id=f"dec-{n}",
        user_id=user,
        conversation_id=f"conv-{n}",
        model="sim/a",
        reasoning_effort="low",
        tier="low",
        sticky=False,
        null_reason=None,
        classifier_model="sim/classifier",
        classifier_cost_usd=cost,
        classifier_outcome=outcome,  # type: ignore[arg-type]
        classification_fallback=False,
        table_version="t1",
        latency_ms=2.0,
    )
    return ("decisions", event.conversation_id, event)


LOG = [
    decision(1, "u1", 1, 0.001),
    decision(2, "u1", 1, 0.002),
    decision(3, "u1", 1, None, "timeout"),  # attempted, cost unknown
    decision(4, "u1", 1, None, "cached"),  # no call
    decision(5, "u2", 1, 0.004),
    decision(6, None, 1, 0.0005, "fallback"),
    decision(7, "u1", 2, 0.003),
    # dec-2 delivered again (a re-send after a failed acknowledgement), differing: ignored
    decision(2, "u1", 1, 0.5, event_id="ev-2-resent"),
]

DAY1, DAY2 = datetime(2026, 3, 1).date(), datetime(2026, 3, 2).date()


async def test_usage_per_user_and_day_bills_a_redelivered_decision_once(
    kafka_prefix: str, pg_schema: str, settings_for: Any
) -> None:
    settings = settings_for(kafka_prefix, pg_schema)
    await produce(settings.kafka_bootstrap, kafka_prefix, LOG)
    assert await project_once(settings, pg_schema) == len(LOG)

    with connect(settings.database_url, pg_schema) as conn:
        assert conn.execute(
            "select count(*), sum(classifier_cost_usd) from decisions where decision_id = 'dec-2'"
        ).fetchone() == (1, 0.002)
        everyone = usage(conn, datetime(2026, 3, 1, tzinfo=UTC))
        one_user = usage(conn, datetime(2026, 3, 1, tzinfo=UTC), "u1")
        later = usage(conn, datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC))
        view = conn.execute("select count(*) from usage_by_user_day").fetchone()

    assert [
        (r.day, r.user_id, r.decisions, r.classifier_calls, r.unpriced_calls) for r in everyone
    ] == [
        (DAY1, "u1", 4, 3, 1),
        (DAY1, "u2", 1, 1, 0),
        (DAY1, None, 1, 1, 0),
        (DAY2, "u1", 1, 1, 0),
    ]
    assert [round(r.classifier_cost_usd, 6) for r in everyone] == [0.003, 0.004, 0.0005, 0.003]
    assert [(r.day, r.user_id) for r in one_user] == [(DAY1, "u1"), (DAY2, "u1")]
    # --since is a moment, not a day: day 1's decisions before 10:00:05 are left out
    assert [(r.day, r.user_id, r.decisions) for r in later] == [
        (DAY1, "u2", 1),
        (DAY1, None, 1),
        (DAY2, "u1", 1),
    ]
    assert view == (4,)

    out = CliRunner().invoke(
        app,
        ["usage", "--since", "2026-03-01", "--user", "u1", "--format", "csv"],
        env={"PROVENROUTE_DB_SCHEMA": pg_schema},
    )
    assert out.exit_code == 0, out.output
    got = list(csv.DictReader(io.StringIO(out.output)))
    assert [(g["day"], g["user_id"], g["classifier_calls"]) for g in got] == [
        ("2026-03-01", "u1", "3"),
        ("2026-03-02", "u1", "1"),
    ]
    assert float(got[0]["classifier_cost_usd"]) == pytest.approx(0.003)
    assert list(got[0]) == list(UsageRow.__dataclass_fields__)

    # The bulk replay keeps the first delivery too.
    await assert_bulk_replay_equals(settings, pg_schema)
