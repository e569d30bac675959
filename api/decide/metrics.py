"""Prometheus metrics of the decide service, on a registry of its own (one per app, so
several apps in one process — tests — never collide in the global registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
)


class DecideMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "provenroute_decisions",
            "Non-null /decide answers by tier, model and stickiness.",
            ["tier", "model", "sticky"],
            registry=r,
        )
        self.null_decisions = Counter(
            "provenroute_null_decisions",
            "Null /decide answers by reason.",
            ["reason"],
            registry=r,
        )
        self.decide_latency = Histogram(
            "provenroute_decide_latency_seconds",
            "Time /decide spent on an answer (inside the handler).",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.classifier_latency = Histogram(
            "provenroute_classifier_latency_seconds",
            "Classifier calls made by /decide, by outcome (ok, fallback, timeout, error).",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.classification_cache = Counter(
            "provenroute_classification_cache",
            "Classification cache lookups by result (hit, miss).",
            ["result"],
            registry=r,
        )
        self.events_sent = Counter(
            "provenroute_decide_messages_sent",
            "Messages delivered to Kafka by the decide service, by topic kind.",
            ["kind"],
            registry=r,
        )
        self.events_dropped = Counter(
            "provenroute_decide_messages_dropped",
            "Messages the decide service gave up on (queue full or delivery failed).",
            ["kind", "why"],
            registry=r,
        )
        self.events_spooled = Counter(
            "provenroute_decide_messages_spooled",
            "Decision events written to the local spool instead of dropped (queue full,"
            " delivery failed, shutdown); sent again once Kafka takes messages.",
            ["kind", "why"],
            registry=r,
        )
        self.spool_pending = Gauge(
            "provenroute_decide_spool_pending",
            "Spooled messages not yet sent again.",
            registry=r,
        )
        self.queue_full = Gauge(
            "provenroute_decide_queue_full",
            "1 while the Kafka queue is full (decision events are being spooled).",
            registry=r,
        )
        self.queue_depth = Gauge(
            "provenroute_decide_queue_depth",
            "Messages waiting for Kafka.",
            registry=r,
        )
        self.table_loaded = Gauge(
            "provenroute_routing_table_loaded",
            "1 when a routing table is held in memory.",
            registry=r,
        )
        self.ready = Gauge("provenroute_decide_ready", "1 when /readyz answers ready.", registry=r)
        self.sessions_degraded = Counter(
            "provenroute_sessions_degraded",
            "Requests served without sessions (a fresh pick) or session writes lost, by reason "
            "(not_ready, read_failed, write_failed, write_dropped, write_unconfirmed).",
            ["reason"],
            registry=r,
        )
        self.sessions_count = Gauge(
            "provenroute_sessions",
            "Sessions this replica holds (every replica holds all of them).",
            registry=r,
        )
