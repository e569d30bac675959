"""Plumbing for bench/chaos.py: peak-RSS sampling of its children (started with
`infra.processes`), a PRIVATE Kafka broker started from the shared jars, a cuttable TCP
proxy in front of Postgres, and a resilient tail of a prefix's events topic.

Nothing here touches the shared broker's process, the shared Postgres server or dockerd:
everything is started by the chaos run itself and torn down by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from contracts.envelope import EventBase
from contracts.events import CaseGraded, RunCompleted
from infra.processes import ChildProcess, free_port, peak_rss_mb
from infra.settings import PROJECT_ROOT, Settings
from streams.event_log import EventReader

T = TypeVar("T")

KAFKA_LIBS = PROJECT_ROOT / ".state" / "kafka" / "libs"


def run_async(coro: Any) -> Any:
    """Run a coroutine on a fresh loop in a helper thread (no loop is shared)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class RssSampler:
    """Samples the VmHWM of every registered child every `interval_s` (a daemon thread)."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.children: list[ChildProcess] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def add(self, child: ChildProcess) -> ChildProcess:
        self.children.append(child)
        return child

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            for c in list(self.children):
                c.sample()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------- private Kafka
class PrivateKafka:
    """A private single-node KRaft broker from the shared jars, on its own ports and data dir.

    Same shape as scripts/services.sh (combined mode, replication factors 1), but nothing is
    shared with the broker other sessions use: own ports, own temporary data directory.
    """

    def __init__(
        self, logdir: Path, port: int = 19092, controller_port: int = 19093, heap: str = "384m"
    ) -> None:
        if not any(KAFKA_LIBS.glob("kafka_*.jar")):
            raise RuntimeError(f"no Kafka jars in {KAFKA_LIBS} (run scripts/services.sh up once)")
        self.port = free_port(port)
        self.controller_port = free_port(controller_port)
        if self.controller_port == self.port:
            self.controller_port = free_port()
        self.heap = heap
        self.data_root = Path(tempfile.mkdtemp(prefix="provenroute-chaos-kafka-"))
        self.logdir = logdir
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.props = self.data_root / "server.properties"
        self.log4j = self.data_root / "log4j2.properties"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.peak_rss_kb = 0
        self._write_config()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        data = self.data_root / "data"
        data.mkdir()
        self.props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=1",
                    "default.replication.factor=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "log.retention.hours=168",
                    "",
                ]
            )
        )
        self.log4j.write_text(
            "\n".join(
                [
                    "status = warn",
                    "appender.file.type = File",
                    "appender.file.name = FILE",
                    f"appender.file.fileName = {self.logdir / 'server.log'}",
                    "appender.file.layout.type = PatternLayout",
                    "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                    "rootLogger.level = INFO",
                    "rootLogger.appenderRef.file.ref = FILE",
                    "logger.kafka.name = kafka",
                    "logger.kafka.level = INFO",
                    "logger.apache.name = org.apache.kafka",
                    "logger.apache.level = WARN",
                    "",
                ]
            )
        )

    def _java(self, *args: str) -> list[str]:
        return [
            "java",
            "-Xms128m",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j}",
            "-cp",
            f"{KAFKA_LIBS}/*",
            *args,
        ]

    def format(self) -> None:
        cid = (
            subprocess.run(
                self._java("kafka.tools.StorageTool", "random-uuid"),
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cid,
                "-c",
                str(self.props),
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self.starts += 1
        out = open(self.logdir / f"stdout-{self.starts}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self._java("kafka.Kafka", str(self.props)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()

    def sample(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.peak_rss_kb = max(self.peak_rss_kb, int((peak_rss_mb(self.proc.pid) or 0) * 1024))

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Until a client can create a topic and produce (streams.kafka_admin.kafka_ready)."""
        from streams.kafka_admin import kafka_ready

        t0 = time.monotonic()
        run_async(kafka_ready(self.bootstrap, "chaos-probe.", timeout_s))
        return time.monotonic() - t0

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> float:
        """Stop the broker (SIGTERM: controlled shutdown); returns how long it took."""
        t0 = time.monotonic()
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        self.sample()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        return time.monotonic() - t0

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout_s=30)
        shutil.rmtree(self.data_root, ignore_errors=True)


# --------------------------------------------------------------------------- Postgres proxy
class PgProxy:
    """A TCP proxy in front of Postgres that can be cut (connections aborted, port refusing)
    and restored on the same port; it runs on its own event loop in a daemon thread."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="pg-proxy", daemon=True)
        self._thread.start()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def start(self) -> None:
        self._call(self._start())

    def cut(self) -> None:
        self._call(self._cut())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()
        self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self.writers |= {writer, up_w}

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.transport.abort()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))
        self.writers -= {writer, up_w}


# --------------------------------------------------------------------------- event tail
@dataclass
class RunWatch:
    """What the tail has seen of one run (deliveries deduplicated by result key)."""

    first_seen: dict[tuple[str, str, int], float] = field(default_factory=dict)
    """(model, case, rep) -> monotonic time its first CaseGraded was read."""
    completed_at: float | None = None
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)


class Tail:
    """Tails a prefix's events topic in a daemon thread, surviving broker outages (it reopens
    its reader and re-reads from the start; the state is keyed, so re-reading is harmless)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runs: dict[str, RunWatch] = {}
        self.events: list[EventBase] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), daemon=True, name="event-tail"
        )
        self._thread.start()

    def watch(self, run_id: str) -> RunWatch:
        with self._lock:
            return self.runs.setdefault(run_id, RunWatch())

    def seen(self, pred: Callable[[EventBase], bool]) -> list[EventBase]:
        with self._lock:
            return [e for e in self.events if pred(e)]

    def distinct(self, run_id: str) -> int:
        with self._lock:
            w = self.runs.get(run_id)
            return len(w.first_seen) if w else 0

    def completed(self, run_id: str) -> bool:
        with self._lock:
            w = self.runs.get(run_id)
            return bool(w and w.completed_at is not None)

    def _apply(self, evs: list[EventBase]) -> None:
        now = time.monotonic()
        with self._lock:
            self.events += evs
            for e in evs:
                run_id = getattr(e, "run_id", None)
                if not isinstance(run_id, str):
                    continue
                w = self.runs.setdefault(run_id, RunWatch())
                if isinstance(e, CaseGraded):
                    w.first_seen.setdefault((e.model, e.case_id, e.rep), now)
                elif isinstance(e, RunCompleted) and w.completed_at is None:
                    w.completed_at = now

    async def _main(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                async with EventReader(self.settings) as reader:
                    with self._lock:
                        self.events = []  # re-read from the start: keep one pass only
                        if not first:
                            for w in self.runs.values():
                                w.reconnects += 1
                    first = False
                    while not self._stop.is_set():
                        self._apply(await reader.poll(0.3))
            except Exception as e:  # the broker went away: reopen
                with self._lock:
                    for w in self.runs.values():
                        w.errors.append(f"{type(e).__name__}: {e}"[:200])
                await asyncio.sleep(1.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def wait_until(
    pred: Callable[[], bool],
    timeout_s: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    interval_s: float = 0.2,
) -> float:
    """Poll `pred` until true; returns the seconds waited. TimeoutError otherwise."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{what}: not reached within {timeout_s:.0f}s")
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: the process it depends on exited")
        time.sleep(interval_s)
    return time.monotonic() - t0
