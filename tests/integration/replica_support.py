"""`provenroute serve` replicas as real processes, and a client that spreads conversations
over them like a load balancer with health checks (no affinity). No tests here: the replica
tests and bench/scale.py use it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from infra.processes import ChildProcess, child_env, cli
from infra.settings import PROJECT_ROOT, Settings

INTERNAL_SECRET = "dev-internal-secret"
REPLICA_HEADER = "x-provenroute-replica"


def replica_env(settings: Settings, provider_url: str, **extra: str) -> dict[str, str]:
    """Environment of a replica bound to `settings`' topics and schema."""
    env = child_env()
    env.update(
        {
            "PROVENROUTE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "PROVENROUTE_DATABASE_URL": settings.database_url,
            "PROVENROUTE_TOPIC_PREFIX": settings.topic_prefix,
            "PROVENROUTE_DB_SCHEMA": settings.db_schema,
            "PROVENROUTE_PROVIDER_BASE_URL": provider_url,
            "PROVENROUTE_INTERNAL_SECRET": INTERNAL_SECRET,
            "PROVENROUTE_DEFAULT_CLASSIFIER_MODEL": "sim/balanced",
            **extra,
        }
    )
    return env


@dataclass
class Replica:
    """One `provenroute serve` process (`infra.processes`); `start` again after `stop` is a
    restart. Waits are async: the tests and benches drive load on the same loop."""

    name: str
    port: int
    env: Mapping[str, str]
    log_dir: Path
    starts: int = 0
    child: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def replica_id(self) -> str:
        """Differs per start, so answers tell a restarted replica from its predecessor."""
        return f"{self.name}.{self.starts}"

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None else None

    def start(self) -> None:
        self.starts += 1
        self.child = ChildProcess(
            self.name,
            cli("serve", "--port", str(self.port)),
            {**self.env, "PROVENROUTE_DECIDE_REPLICA_ID": self.replica_id},
            PROJECT_ROOT,
            log_dir=self.log_dir,
        )

    async def wait_ready(self, timeout_s: float = 180.0) -> float:
        """Seconds from now until /readyz answers 200 (raises if the process died)."""
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return time.monotonic() - started
                if self.child is None or not self.child.alive():
                    raise RuntimeError(f"replica {self.name} exited; see {self.log_dir}")
                if time.monotonic() - started > timeout_s:
                    raise TimeoutError(f"replica {self.name} not ready after {timeout_s}s")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM (a graceful, rolling-deploy stop), SIGKILL if it hangs."""
        if self.child is not None:
            self.child.stop()

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            data: dict[str, Any] = (await http.get("/healthz")).json()
            return data


@contextlib.contextmanager
def replicas(
    names: list[str], env: Mapping[str, str], log_dir: Path, ports: list[int]
) -> Iterator[list[Replica]]:
    started = [Replica(n, p, env, log_dir) for n, p in zip(names, ports, strict=True)]
    try:
        for r in started:
            r.start()
        yield started
    finally:
        for r in started:
            r.stop()


@dataclass
class Balancer:
    """Sends each request to the next healthy replica, round robin; a replica that refuses a
    connection is skipped until its /readyz answers again (what a load balancer does)."""

    pool: list[Replica]
    up: dict[str, bool] = field(default_factory=dict)
    turn: int = 0

    async def watch(self, stop: asyncio.Event, interval_s: float = 0.2) -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            while not stop.is_set():
                for r in self.pool:
                    try:
                        self.up[r.name] = (await http.get(f"{r.url}/readyz")).status_code == 200
                    except httpx.HTTPError:
                        self.up[r.name] = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)

    async def decide(
        self,
        http: httpx.AsyncClient,
        body: dict[str, Any],
        prefer: int | None = None,
        attempts: int = 40,
    ) -> tuple[dict[str, Any], str]:
        """The answer and the replica id that served it. `prefer` picks the replica (modulo
        the pool) when it is healthy; otherwise round robin over the healthy ones."""
        last: Exception | None = None
        for attempt in range(attempts):
            self.turn += 1
            start = (prefer if prefer is not None else self.turn) + attempt
            order = [self.pool[(start + i) % len(self.pool)] for i in range(len(self.pool))]
            r = next((x for x in order if self.up.get(x.name, True)), order[0])
            try:
                resp = await http.post(
                    f"{r.url}/decide",
                    json=body,
                    headers={"Authorization": f"Bearer {INTERNAL_SECRET}"},
                )
                resp.raise_for_status()
                return resp.json(), resp.headers[REPLICA_HEADER]
            except httpx.HTTPError as e:  # stopping or not started: try another one
                last = e
                self.up[r.name] = False
                await asyncio.sleep(0.05)
        raise RuntimeError(f"no replica answered: {last!r}")
