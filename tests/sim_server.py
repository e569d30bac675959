"""The simulated provider served on a free loopback port from a background thread (tests)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Collection, Iterator

import uvicorn

from simulator.catalog import CaseIndex, load_cases
from simulator.fleet import Fleet, load_fleet
from simulator.server import create_app


@contextlib.contextmanager
def serve_sim(
    api_keys: Collection[str] | None = None,
    *,
    fleet: Fleet | None = None,
    latency_scale: float = 0.0,
) -> Iterator[str]:
    """Yields the base URL (`http://127.0.0.1:PORT/v1`); stops the server on exit."""
    app = create_app(
        fleet or load_fleet(),
        cases=CaseIndex.build(*load_cases()),
        latency_scale=latency_scale,
        api_keys=api_keys,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("simulated provider did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
