"""Load on POST /decide over loopback with cached classifications.

Sets up its own topic prefix and schema on the local Kafka and PostgreSQL, publishes a
routing table, starts the simulated provider (in a thread) and `provenroute serve` (a
subprocess, info logging to a file: the per-decision JSON line is part of the cost), warms
one classification per conversation, then drives an open-loop load at fixed rates from a
raw keep-alive HTTP/1.1 client. Latency is measured from each request's *scheduled* send
time (no coordinated omission). Prints p50/p99 per rate, the highest rate sustained
(achieved >= 97% of the target with p99 <= 50 ms), and the server's peak RSS.

    .venv/bin/python -m bench.decide [--rates 500,1000,2000,3000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.commands.infra import ensure_topics  # noqa: E402
from api.settings import Settings  # noqa: E402
from tests.integration.test_decide_support import (  # noqa: E402
    candidate,
    free_port,
    publish_and_project,
    routing_table,
    serve_in_thread,
    table_published,
)

SECRET = "bench-internal-secret"


def _request(path: str, body: bytes, port: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {SECRET}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    status = head[9:12]
    body = await reader.readexactly(length)
    if status != b"200":
        raise RuntimeError(f"HTTP {status!r}: {body[:200]!r}")
    return body


async def run_rate(
    port: int, payloads: list[bytes], rate: float, seconds: float, connections: int
) -> dict[str, float]:
    total = int(rate * seconds)
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = 0

    async def conn_worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                scheduled, req = item
                writer.write(req)
                try:
                    body = await _read_response(reader)
                except Exception:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - scheduled)
                server_ms.append(orjson.loads(body)["latencyMs"])
        finally:
            writer.close()

    workers = [asyncio.create_task(conn_worker()) for _ in range(connections)]
    await asyncio.sleep(0.2)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, payloads[i % len(payloads)]))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    latencies.sort()
    server_ms.sort()

    def pct(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")

    return {
        "target": rate,
        "achieved": len(latencies) / elapsed,
        "p50_ms": pct(latencies, 0.50) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "server_p99_ms": pct(server_ms, 0.99),
        "errors": errors,
    }


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="500,1000,2000,3000")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()

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

    from api.sim.server import create_app as create_sim

    port = free_port()
    log_path = ROOT / "artifacts" / "bench-decide-server.log"
    log_path.parent.mkdir(exist_ok=True)
    proc: subprocess.Popen[bytes] | None = None
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
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        f"from api.commands.serve import serve; serve('127.0.0.1', {port})",
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                )
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                    deadline = time.monotonic() + 90
                    while True:
                        try:
                            if (await http.get("/readyz")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        if time.monotonic() > deadline or proc.poll() is not None:
                            raise SystemExit(f"decide service not ready; see {log_path}")
                        await asyncio.sleep(0.2)
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
                    f"{os.cpu_count()} CPUs (load generator on the same host)"
                )
                print(
                    f"{'target/s':>9} {'achieved/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
                    f"{'server p99 ms':>13} {'errors':>6}"
                )
                results = []
                for rate in [float(x) for x in args.rates.split(",")]:
                    res = await run_rate(port, payloads, rate, args.seconds, args.connections)
                    results.append(res)
                    print(
                        f"{res['target']:9.0f} {res['achieved']:10.0f} {res['p50_ms']:7.2f} "
                        f"{res['p99_ms']:7.2f} {res['server_p99_ms']:13.3f} "
                        f"{res['errors']:6.0f}"
                    )
                # Highest sustained: step up until the service falls behind.
                best = max(
                    (
                        r["target"]
                        for r in results
                        if r["achieved"] >= 0.97 * r["target"] and r["p99_ms"] <= 50
                    ),
                    default=0.0,
                )
                rate = max(best, 1000.0)
                while True:
                    rate += 500
                    res = await run_rate(port, payloads, rate, args.seconds, args.connections)
                    ok = res["achieved"] >= 0.97 * rate and res["p99_ms"] <= 50
                    print(
                        f"{res['target']:9.0f} {res['achieved']:10.0f} {res['p50_ms']:7.2f} "
                        f"{res['p99_ms']:7.2f} {res['server_p99_ms']:13.3f} "
                        f"{res['errors']:6.0f}  {'sustained' if ok else 'falls behind'}"
                    )
                    if not ok:
                        break
                    best = rate
                print(
                    f"highest rate sustained: {best:.0f} req/s (achieved >= 97% of target, "
                    f"p99 <= 50 ms)"
                )
                print(f"decide service peak RSS: {peak_rss_mb(proc.pid):.0f} MB")
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        with psycopg.connect(base.database_url, autocommit=True) as c:
            c.execute(f'drop schema if exists "{schema}" cascade')


if __name__ == "__main__":
    asyncio.run(main())
