"""Load on POST /decide over loopback with cached classifications.

Sets up its own topic prefix and schema on the local Kafka and PostgreSQL, publishes a
routing table, starts the simulated provider (in a thread) and `provenroute serve` (a
subprocess, info logging to a file: the per-decision JSON line is part of the cost), warms
one classification per conversation, then drives an open-loop load at fixed rates from a
separate load-generator process (uvloop, raw keep-alive HTTP/1.1 over asyncio Protocols:
it shares the CPUs with the service, so it is kept cheap). Latency is measured from each
request's *scheduled* send time (no coordinated omission). Prints p50/p99/max per rate,
the service's own p99, the CPU time the service and the generator spent per request (a
figure other load on the host barely moves), the highest rate sustained (achieved >= 97%
of the target, p99 <= 50 ms, no errors), the host's load average, and the service's peak
RSS.

    .venv/bin/python bench/decide.py [--rates 500,1000,2000,3000] [--seconds 5] [--step 500]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import sys
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = "bench-internal-secret"


def _request(path: str, body: bytes, port: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {SECRET}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# ---- the load generator (a process of its own) ---------------------------------------------
#
# It shares the 2 CPUs with the service, so it is kept cheap: uvloop, asyncio Protocols (no
# StreamReader), keep-alive HTTP/1.1, one request in flight per connection, no HTTP library.
# Open loop: request i is due at start + i/rate whatever the answers do; its latency runs
# from that due time (no coordinated omission), so a generator or server stall shows.


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
    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads
        self.idle: list[_Conn] = []
        self.pending: collections.deque[tuple[float, bytes]] = collections.deque()
        self.latencies: list[float] = []
        self.server_ms: list[float] = []
        self.errors = 0
        self.outstanding = 0
        self.finished = asyncio.Event()
        self.last_done = 0.0

    def dispatch(self, due: float, request: bytes) -> None:
        self.outstanding += 1
        if self.idle:
            self.idle.pop().send(due, request)
        else:
            self.pending.append((due, request))

    def done(self, conn: _Conn, ok: bool, body: bytes) -> None:
        now = time.perf_counter()
        self.last_done = now
        if ok:
            self.latencies.append(now - conn.due)
            at = body.find(b'"latencyMs":') + 12  # cheaper than parsing the whole answer
            end = body.find(b",", at)
            self.server_ms.append(float(body[at : end if end >= 0 else -1]))
        else:
            self.errors += 1
        self.outstanding -= 1
        if self.pending:
            conn.send(*self.pending.popleft())
        else:
            self.idle.append(conn)
        if self.outstanding == 0 and self.pending_done:
            self.finished.set()

    pending_done = False

    def lost(self, conn: _Conn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        else:  # a request was in flight on it
            self.errors += 1
            self.outstanding -= 1
            if self.outstanding == 0 and self.pending_done:
                self.finished.set()


async def _load(
    port: int, payloads: list[bytes], rate: float, seconds: float, connections: int
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    gen = _LoadGen(payloads)
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
    gen.pending_done = True
    if gen.outstanding:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gen.finished.wait(), 60)
    elapsed = max(gen.last_done, start + seconds) - start
    for c in conns:
        c.transport.close()  # type: ignore[union-attr]
    lat = sorted(gen.latencies)
    srv = sorted(gen.server_ms)

    def pct(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")

    return {
        "target": rate,
        "achieved": len(lat) / elapsed,
        "p50_ms": pct(lat, 0.50) * 1000,
        "p99_ms": pct(lat, 0.99) * 1000,
        "max_ms": (lat[-1] if lat else float("nan")) * 1000,
        "server_p99_ms": pct(srv, 0.99),
        "errors": gen.errors,
        "elapsed": elapsed,
        "loadgen_cpu_us": time.process_time() / max(1, len(lat)) * 1e6,
    }


def _load_child() -> None:
    """`python bench/decide.py --load-child`: job on stdin (JSON), results on stdout."""
    import uvloop

    job = orjson.loads(sys.stdin.buffer.read())
    payloads = [p.encode("latin-1") for p in job["payloads"]]
    result = uvloop.run(
        _load(job["port"], payloads, job["rate"], job["seconds"], job["connections"])
    )
    sys.stdout.buffer.write(orjson.dumps(result))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_rate(
    port: int,
    payloads: list[bytes],
    rate: float,
    seconds: float,
    connections: int,
    server_pid: int | None = None,
) -> dict[str, float]:
    """One open-loop run at `rate` from the load-generator process; with `server_pid`, also
    the server's CPU time per answered request (robust to other load on the host)."""
    job = orjson.dumps(
        {
            "port": port,
            "payloads": [p.decode("latin-1") for p in payloads],
            "rate": rate,
            "seconds": seconds,
            "connections": connections,
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "--load-child",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    out, _ = await proc.communicate(job)
    if proc.returncode != 0:
        raise SystemExit(f"load generator failed ({proc.returncode})")
    # orjson writes NaN (no answers at all) as null.
    res = {k: float("nan") if v is None else v for k, v in orjson.loads(out).items()}
    answered = res["achieved"] * res["elapsed"]
    res["server_cpu_us"] = (
        (cpu_seconds(server_pid) - cpu_before) / answered * 1e6
        if server_pid and answered
        else float("nan")
    )
    return res


def _row(res: dict[str, float], note: str = "") -> str:
    return (
        f"{res['target']:9.0f} {res['achieved']:10.0f} {res['p50_ms']:7.2f} "
        f"{res['p99_ms']:7.2f} {res['max_ms']:7.1f} {res['server_p99_ms']:13.3f} "
        f"{res['server_cpu_us']:11.0f} {res['loadgen_cpu_us']:11.0f} {res['errors']:6.0f}  {note}"
    ).rstrip()


def _sustained(res: dict[str, float]) -> bool:
    return res["achieved"] >= 0.97 * res["target"] and res["p99_ms"] <= 50 and not res["errors"]


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="500,1000,2000,3000")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument(
        "--step", type=float, default=500, help="Rate step when searching the highest (0: skip)."
    )
    args = ap.parse_args()

    import httpx
    import psycopg

    from infra.processes import ChildProcess, free_port, start_serve
    from infra.settings import Settings, assume_dev
    from streams.kafka_admin import ensure_topics
    from tests.integration.test_decide_support import (
        candidate,
        publish_and_project,
        routing_table,
        serve_in_thread,
        table_published,
    )

    assume_dev()
    base = Settings()
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(update={"topic_prefix": prefix, "db_schema": schema})
    await ensure_topics(base.kafka_bootstrap, prefix)
    with psycopg.connect(base.database_url, autocommit=True) as c:
        c.execute(f'create schema "{schema}"')
    table = routing_table(
        "bench-v1",
        {
            "low": [candidate("sim/flash-lite", 0.001, effort="low")],
            "medium": [candidate("sim/balanced", 0.01)],
            "high": [candidate("sim/reasoner", 0.05, effort="high")],
        },
    )
    await publish_and_project(settings, table_published(table))

    from simulator.server import create_app as create_sim

    log_dir = ROOT / "artifacts"
    proc: ChildProcess | None = None
    try:
        with serve_in_thread(create_sim(latency_scale=0.0), free_port()) as sim:
            env = {
                **os.environ,
                "PROVENROUTE_TOPIC_PREFIX": prefix,
                "PROVENROUTE_DB_SCHEMA": schema,
                "PROVENROUTE_PROVIDER_BASE_URL": f"{sim}/v1",
                "PROVENROUTE_INTERNAL_SECRET": SECRET,
                "PROVENROUTE_DEFAULT_CLASSIFIER_MODEL": "sim/balanced",
                "PYTHONPATH": str(ROOT),
            }
            proc, url = start_serve(ROOT, env, name="bench-decide-server", log_dir=log_dir)
            port = int(url.rsplit(":", 1)[1])
            async with httpx.AsyncClient(base_url=url) as http:
                bodies = [
                    orjson.dumps(
                        {
                            "conversationId": f"bench-{i}",
                            "messages": [
                                {
                                    "role": "user",
                                    "content": f"Fix the failing test number {i} in the "
                                    "billing module; it raises a KeyError on empty invoices.",
                                }
                            ],
                        }
                    )
                    for i in range(args.conversations)
                ]
                for b in bodies:  # warm: one classifier call per conversation
                    r = await http.post(
                        "/decide",
                        content=b,
                        headers={
                            "Authorization": f"Bearer {SECRET}",
                            "Content-Type": "application/json",
                        },
                    )
                    assert r.json()["model"], r.text
            payloads = [_request("/decide", b, port) for b in bodies]
            await run_rate(port, payloads, 300, 1.0, args.connections)  # JIT-free warm-up
            print(
                f"decide bench: {args.conversations} conversations, cached "
                f"classifications, {args.seconds:.0f} s per rate, loopback, "
                f"{os.cpu_count()} CPUs shared with the load generator (a separate "
                f"uvloop process, open loop, {args.connections} keep-alive connections); "
                f"load average before: {_loadavg()}"
            )
            print(
                f"{'target/s':>9} {'achieved/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
                f"{'max ms':>7} {'server p99 ms':>13} {'srv CPU us':>11} "
                f"{'gen CPU us':>11} {'errors':>6}"
            )
            results = []
            for rate in [float(x) for x in args.rates.split(",")]:
                res = await run_rate(port, payloads, rate, args.seconds, args.connections, proc.pid)
                results.append(res)
                print(_row(res))
            # Highest sustained: step up until the service falls behind.
            best = max((r["target"] for r in results if _sustained(r)), default=0.0)
            rate = max(best, 1000.0)
            while args.step > 0:
                rate += args.step
                res = await run_rate(port, payloads, rate, args.seconds, args.connections, proc.pid)
                ok = _sustained(res)
                print(_row(res, "sustained" if ok else "falls behind"))
                if not ok:
                    break
                best = rate
            print(
                f"highest rate sustained: {best:.0f} req/s (achieved >= 97% of target, "
                f"p99 <= 50 ms); load average after: {_loadavg()}"
            )
            proc.sample()
            print(f"decide service peak RSS: {proc.peak_rss_mb:.0f} MB")
    finally:
        if proc is not None:
            proc.stop(timeout_s=15)
        with psycopg.connect(base.database_url, autocommit=True) as c:
            c.execute(f'drop schema if exists "{schema}" cascade')


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load-child"]:
        _load_child()
    else:
        asyncio.run(main())
