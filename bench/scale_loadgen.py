"""Closed-loop /decide load over several replicas (run by bench/scale.py as its own process).

Reads a JSON spec on stdin ({ports, seconds, connections, bodies, secret}), opens
`connections` keep-alive HTTP/1.1 connections spread evenly over the ports (what a load
balancer without affinity does), each sending the next conversation's request as soon as
the previous answer is in. Prints JSON: requests, errors, rps, p50/p99 ms and the answers
per replica (from the `X-Provenroute-Replica` header).
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
from typing import Any

import orjson


def _request(port: int, body: bytes, secret: str) -> bytes:
    return (
        f"POST /decide HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _connection(
    port: int,
    requests: list[bytes],
    offset: int,
    stop_at: float,
    latencies: list[float],
    by_replica: collections.Counter[str],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            writer.write(requests[i % len(requests)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length, replica, status = 0, "?", head[9:12]
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"x-provenroute-replica":
                    replica = value.strip().decode()
            body = await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != b"200" or b'"model":null' in body:
                errors[0] += 1
            by_replica[replica] += 1
    except (OSError, asyncio.IncompleteReadError):
        errors[0] += 1
    finally:
        writer.close()


async def main() -> None:
    spec: dict[str, Any] = orjson.loads(sys.stdin.buffer.read())
    ports: list[int] = spec["ports"]
    per_port = {
        p: [_request(p, orjson.dumps(b), spec["secret"]) for b in spec["bodies"]] for p in ports
    }
    latencies: list[float] = []
    by_replica: collections.Counter[str] = collections.Counter()
    errors = [0]
    started = time.monotonic()
    stop_at = started + spec["seconds"]
    await asyncio.gather(
        *(
            _connection(
                ports[c % len(ports)],
                per_port[ports[c % len(ports)]],
                c * 7,
                stop_at,
                latencies,
                by_replica,
                errors,
            )
            for c in range(spec["connections"])
        )
    )
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2)

    print(
        orjson.dumps(
            {
                "requests": len(latencies),
                "errors": errors[0],
                "seconds": round(elapsed, 2),
                "rps": round(len(latencies) / elapsed, 1),
                "p50_ms": pct(0.5) if latencies else None,
                "p99_ms": pct(0.99) if latencies else None,
                "by_replica": dict(by_replica),
            }
        ).decode()
    )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
