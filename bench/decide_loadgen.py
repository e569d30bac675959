"""Open-loop /decide load from a process of its own (run by bench/decide.py), and the
requests it sends.

It shares the 2 CPUs with the service, so it is kept cheap: uvloop, asyncio Protocols (no
StreamReader), keep-alive HTTP/1.1, one request in flight per connection, no HTTP library.
Open loop: request i is due at start + i/rate whatever the answers do; its latency runs
from that due time (no coordinated omission), so a generator or server stall shows.

Job (JSON on stdin): {port, payloads, rate, seconds, connections}; request i sends
`payloads[i % len(payloads)]`. Result (JSON on stdout): latency percentiles, the service's
own figures read from each answer (`latencyMs`, `classifierLatencyMs`), and what the answers
were (sent, answered, null decisions, cached, classifier models and outcomes) so the caller
can check that the work it timed was done.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import time
from typing import Any

import orjson


def http_request(path: str, body: bytes, port: int, secret: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def decide_body(conversation: str, messages: list[dict[str, str]]) -> bytes:
    return orjson.dumps({"conversationId": conversation, "messages": messages})


def cached_bodies(n: int) -> list[bytes]:
    return [
        decide_body(
            f"bench-{i}",
            [
                {
                    "role": "user",
                    "content": f"Fix the failing test number {i} in the billing module; "
                    "it raises a KeyError on empty invoices.",
                }
            ],
        )
        for i in range(n)
    ]


def new_turn_bodies(tag: str, n: int, conversations: int) -> list[bytes]:
    """`n` requests, each a new turn (never seen content) of one of `conversations`."""
    return [
        decide_body(
            f"{tag}-{i % conversations}",
            [
                {"role": "user", "content": "The billing service drops invoices at midnight."},
                {"role": "assistant", "content": "Which job runs at midnight?"},
                {
                    "role": "user",
                    "content": f"Turn {i} ({tag}): the nightly rollup; debug why invoice "
                    f"{i} is skipped and propose a fix with a regression test.",
                },
            ],
        )
        for i in range(n)
    ]


class _Conn(asyncio.Protocol):
    __slots__ = ("buf", "due", "gen", "transport")

    def __init__(self, gen: _LoadGen) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's, write() has it

    def send(self, due: float, request: bytes) -> None:
        self.due = due
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[: end + 2]).lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 : head.index(b"\r\n", at)]) if at >= 0 else 0
        if len(buf) < end + 4 + length:
            return
        body = bytes(buf[end + 4 : end + 4 + length])
        del buf[: end + 4 + length]
        self.gen.done(self, head[9:12] == b"200", body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)


class _LoadGen:
    def __init__(self) -> None:
        self.idle: list[_Conn] = []
        self.pending: collections.deque[tuple[float, bytes]] = collections.deque()
        self.latencies: list[float] = []
        self.server_ms: list[float] = []
        self.classifier_ms: list[float] = []
        self.overhead_ms: list[float] = []
        """End to end minus the classifier call, for answers that made one."""
        self.server_overhead_ms: list[float] = []
        """The service's in-handler time minus the classifier call."""
        self.errors = 0
        self.nulls = 0
        self.cached = 0
        self.classifier_models: collections.Counter[str] = collections.Counter()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.outstanding = 0
        self.sent = 0
        self.finished = asyncio.Event()
        self.last_done = 0.0
        self.all_sent = False

    def dispatch(self, due: float, request: bytes) -> None:
        self.outstanding += 1
        self.sent += 1
        if self.idle:
            self.idle.pop().send(due, request)
        else:
            self.pending.append((due, request))

    def done(self, conn: _Conn, ok: bool, body: bytes) -> None:
        now = time.perf_counter()
        self.last_done = now
        if ok:
            self._record(now - conn.due, orjson.loads(body))
        else:
            self.errors += 1
        self.outstanding -= 1
        if self.pending:
            conn.send(*self.pending.popleft())
        else:
            self.idle.append(conn)
        self._maybe_finished()

    def _record(self, latency_s: float, answer: dict[str, Any]) -> None:
        self.latencies.append(latency_s)
        server = float(answer["latencyMs"])
        self.server_ms.append(server)
        if answer["model"] is None:
            self.nulls += 1
        if answer["classificationCached"]:
            self.cached += 1
        self.classifier_models[str(answer["classifierModel"])] += 1
        self.outcomes[str(answer["classifierOutcome"])] += 1
        classifier = answer.get("classifierLatencyMs")
        if classifier is not None:
            self.classifier_ms.append(classifier)
            self.overhead_ms.append(latency_s * 1000.0 - classifier)
            self.server_overhead_ms.append(server - classifier)

    def lost(self, conn: _Conn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        else:  # a request was in flight on it
            self.errors += 1
            self.outstanding -= 1
            self._maybe_finished()

    def _maybe_finished(self) -> None:
        if self.outstanding == 0 and self.all_sent:
            self.finished.set()


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted `xs` (NaN when empty)."""
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


async def load(
    port: int, payloads: list[bytes], rate: float, seconds: float, connections: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    gen = _LoadGen()
    conns: list[_Conn] = []
    for _ in range(connections):
        transport, conn = await loop.create_connection(lambda: _Conn(gen), "127.0.0.1", port)
        conn.transport = transport
        conns.append(conn)
    await asyncio.sleep(0.2)
    gen.idle = list(conns)
    total = int(rate * seconds)
    start = time.perf_counter()
    i = 0
    n = len(payloads)
    while i < total:
        due_now = min(total, int((time.perf_counter() - start) * rate) + 1)
        while i < due_now:
            gen.dispatch(start + i / rate, payloads[i % n])
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
    gen.all_sent = True
    if gen.outstanding:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gen.finished.wait(), 60)
    elapsed = max(gen.last_done, start + seconds) - start
    for c in conns:
        c.transport.close()  # type: ignore[union-attr]
    lat = sorted(x * 1000.0 for x in gen.latencies)
    srv = sorted(gen.server_ms)
    cls = sorted(gen.classifier_ms)
    over = sorted(gen.overhead_ms)
    srv_over = sorted(gen.server_overhead_ms)
    return {
        "target": rate,
        "achieved": len(lat) / elapsed,
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "max_ms": lat[-1] if lat else float("nan"),
        "server_p99_ms": pct(srv, 0.99),
        "classifier_p50_ms": pct(cls, 0.50),
        "classifier_p99_ms": pct(cls, 0.99),
        "overhead_p50_ms": pct(over, 0.50),
        "overhead_p99_ms": pct(over, 0.99),
        "server_overhead_p99_ms": pct(srv_over, 0.99),
        "expected": total,
        "sent": gen.sent,
        "answered": len(lat),
        "unanswered": gen.outstanding,
        "errors": gen.errors,
        "nulls": gen.nulls,
        "cached": gen.cached,
        "classifier_models": dict(gen.classifier_models),
        "outcomes": dict(gen.outcomes),
        "elapsed": elapsed,
        "loadgen_cpu_us": time.process_time() / max(1, len(lat)) * 1e6,
    }


def main() -> None:
    import uvloop

    job = orjson.loads(sys.stdin.buffer.read())
    payloads = [p.encode("latin-1") for p in job["payloads"]]
    result = uvloop.run(
        load(job["port"], payloads, job["rate"], job["seconds"], job["connections"])
    )
    sys.stdout.buffer.write(orjson.dumps(result))


if __name__ == "__main__":
    main()
