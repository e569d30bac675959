"""Every topic of provenroute, declared once: name, partitions, retention, key and value.

The Faust app and the infrastructure set-up both read these specs, so a topic's shape has
one obvious place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True)
class TopicSpec:
    name: str
    """Name without the deployment's prefix."""
    partitions: int
    key: str
    """What the messages are keyed by (what must stay ordered)."""
    value: str
    """The contract of the values."""
    config: dict[str, str] = field(default_factory=dict)


INFINITE_RETENTION: Final = {"retention.ms": "-1", "retention.bytes": "-1"}

COMMANDS = TopicSpec(
    "commands",
    1,
    key="command id",
    value="contracts Command (JSON), or garbage to reject",
    # One partition: commands are totally ordered (a config save precedes the run it feeds).
)
EVENTS = TopicSpec(
    "events",
    6,
    key="run id (or the config/override stream name) so a run's events stay ordered",
    value="contracts Event (JSON envelope)",
    config=INFINITE_RETENTION,
)
CASE_JOBS = TopicSpec(
    "case-jobs", 8, key="job id (run:model:chunk:rep)", value="a case job: cases of one chunk"
)
CASE_JOBS_DLQ = TopicSpec(
    "case-jobs.dlq", 1, key="job id", value="a case job that failed all its attempts"
)
COMMANDS_DLQ = TopicSpec(
    "commands.dlq", 1, key="none", value="raw bytes of a command that could not be parsed"
)
DECISIONS = TopicSpec(
    "decisions",
    4,
    key="conversation id",
    value="contracts DecisionMade (JSON envelope)",
    config=INFINITE_RETENTION,
)

MODEL_HISTORY = TopicSpec(
    "model-history",
    1,
    key="history key (kind|model|effort)",
    value="contracts ModelRecord (JSON): a model's latest measured summaries, for carrying",
    # Compacted: the latest record per model is kept forever. One partition, read whole by
    # whichever worker decides StartRun, so carry decisions see every run's records.
    config={"cleanup.policy": "compact", "retention.ms": "-1"},
)
RUN_TICKS = TopicSpec(
    "run-ticks",
    EVENTS.partitions,
    key="none (sent to an explicit partition)",
    value="a nudge: sweep the unfinished runs of this events partition",
    # Co-partitioned with `events` and read by the same agent, so partition p's tick reaches
    # the owner of partition p's runs, inside a stream (where its tables may be written).
    config={"retention.ms": "3600000"},
)
WORKER_HEARTBEATS = TopicSpec(
    "worker-heartbeats",
    1,
    key="worker id (host:pid:instance)",
    value="Heartbeat (JSON): a live worker and the jobs it runs right now",
    config={"cleanup.policy": "compact,delete", "retention.ms": "3600000"},
)

SESSIONS = TopicSpec(
    "decide-sessions",
    4,
    key="conversation id (JSON string)",
    value=(
        "SessionRecord (JSON, versioned): the conversation's incumbent and classification "
        "cache; null with header expires-version: the session expired"
    ),
    # Every decide replica reads all of it (api/decide/sessions.py). Compacted: a replica
    # starting reads one record per live conversation plus the not-yet-compacted tail, which
    # hourly segments keep short; tombstones stay an hour so a reader catching up sees them.
    config={
        "cleanup.policy": "compact",
        "segment.ms": "3600000",
        "delete.retention.ms": "3600000",
        "min.cleanable.dirty.ratio": "0.2",
    },
)

ALL_TOPICS: Final[tuple[TopicSpec, ...]] = (
    COMMANDS,
    EVENTS,
    CASE_JOBS,
    CASE_JOBS_DLQ,
    COMMANDS_DLQ,
    DECISIONS,
    SESSIONS,
    MODEL_HISTORY,
    RUN_TICKS,
    WORKER_HEARTBEATS,
)

# PostgreSQL NOTIFY channels: the projector announces a freshly projected publish on these
# (payload `{"schema", "version"}`), the decide service LISTENs. Declared beside the topics
# so the writer and the readers name a channel from one place.
CHANNEL_ROUTING_TABLE: Final = "provenroute_routing_table"
CHANNEL_CLASSIFIER_WINNER: Final = "provenroute_classifier_winner"
CHANNEL_CLASSIFIER_OVERRIDE: Final = "provenroute_classifier_override"
