"""A minimal Faust app for the smoke test: an agent that echoes decoded events.

Run as `faust -A tests.integration.faust_smoke_app worker`; the topic prefix comes from
SMOKE_PREFIX so the test owns its topics.
"""

from __future__ import annotations

import os

import faust

from contracts.codec import decode_event

PREFIX = os.environ["SMOKE_PREFIX"]
app = faust.App(
    f"{PREFIX}smoke",
    broker=f"kafka://{os.environ.get('PROVENROUTE_KAFKA_BOOTSTRAP', '127.0.0.1:9092')}",
    store="memory://",
    web_enabled=False,
)
events = app.topic(f"{PREFIX}events", value_serializer="raw", key_serializer="raw")
echoes = app.topic(f"{PREFIX}decisions", value_serializer="raw", key_serializer="raw")


@app.agent(events)
async def echo(stream):  # type: ignore[no-untyped-def]
    async for raw in stream:
        event = decode_event(raw)
        await echoes.send(key=event.event_id.encode(), value=f"seen {event.type}".encode())
