"""Load on POST /decide over loopback: the cached path, and cache misses through the
simulated LLM classifier and through the in-process local classifier.

Sets up its own topic prefix and schema on the local Kafka and PostgreSQL, publishes a
routing table, starts the SIMULATED provider (a subprocess, latency scale 0) and `provenroute
serve` (a subprocess, info logging to a file: the per-decision JSON line is part of the
cost), then drives open-loop load from a separate load-generator process
(`bench/decide_loadgen.py`). Latency is measured from each request's *scheduled* send time
(no coordinated omission). Three paths:

- **cached**: 200 conversations, one classification each warmed up front; every timed
  request hits the cache (no classifier call). Rates from `--rates`, then stepping up by
  `--step` until the service falls behind: the highest rate with p99 <= 5 ms and the highest
  sustained (achieved >= 97 % of the target, p99 <= 50 ms).
- **miss** (`--miss-rate`): every request is a new turn of a conversation, so the classifier
  (`sim/balanced` on the simulated provider at zero latency) is really called. Beside the end
  to end latency it reports the classifier call's own time (`classifierLatencyMs` in the
  answer) and the service's overhead: end to end minus the classifier call.
- **local miss** (`--local-rate`): the same new turns with `local/heuristic` set as the
  classifier override, so /decide classifies in-process.

Every timed request is checked: answered 200, a non-null model, as many answers as requests
sent, cached exactly when the path says so, and the classifier the path names (the bench
exits non-zero otherwise). Prints a table per path, the service's CPU time per request (a
figure other load on the host barely moves), the host's load average and the service's peak
RSS; `--json` prints one JSON object of named figures instead (the table goes to stderr).

    .venv/bin/python -m bench.decide [--rates 500,1000,2000] [--seconds 5] [--step 500]
        [--miss-rate 100] [--local-rate 200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.cli.demo import cpu_seconds  # noqa: E402
from bench.decide_loadgen import (  # noqa: E402
    cached_bodies,
    decide_body,
    http_request,
    new_turn_bodies,
)

SECRET = "bench-internal-secret"
LOCAL = "local/heuristic"
SIM_CLASSIFIER = "sim/balanced"


class WorkNotDone(SystemExit):
    """A timed run whose answers do not show the work the bench meant to time."""


async def run_rate(
    port: int,
    payloads: list[bytes],
    rate: float,
    seconds: float,
    connections: int,
    server_pid: int | None = None,
) -> dict[str, Any]:
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
        str(ROOT / "bench" / "decide_loadgen.py"),
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
    res["server_cpu_us"] = (
        (cpu_seconds(server_pid) - cpu_before) / res["answered"] * 1e6
        if server_pid and res["answered"]
        else float("nan")
    )
    return res


def check(
    res: dict[str, Any], path: str, *, cached: bool, classifier: str | None = None
) -> dict[str, Any]:
    """Raise `WorkNotDone` unless every request of the run was answered with a decision on
    the path it was meant to take."""
    expected = res["expected"]
    problems = []
    if res["sent"] != expected or res["answered"] != expected:
        problems.append(f"{res['answered']} answers to {res['sent']} of {expected} requests")
    if res["errors"] or res["unanswered"]:
        problems.append(f"{res['errors']} errors, {res['unanswered']} unanswered")
    if res["nulls"]:
        problems.append(f"{res['nulls']} null decisions")
    if res["cached"] != (res["answered"] if cached else 0):
        problems.append(f"{res['cached']} of {res['answered']} answers from the cache")
    if classifier is not None and set(res["classifier_models"]) != {classifier}:
        problems.append(f"classifiers {res['classifier_models']}, not {classifier}")
    if not cached and "cached" in res["outcomes"]:
        problems.append(f"classifier outcomes {res['outcomes']}")
    if problems:
        raise WorkNotDone(f"{path} at {res['target']:.0f}/s: " + "; ".join(problems))
    return res


def _sustained(res: dict[str, Any]) -> bool:
    return res["achieved"] >= 0.97 * res["target"] and res["p99_ms"] <= 50


def _within_5ms(res: dict[str, Any]) -> bool:
    return res["achieved"] >= 0.97 * res["target"] and res["p99_ms"] <= 5


HEADER = (
    f"{'target/s':>9} {'achieved/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
    f"{'server p99 ms':>13} {'srv CPU us':>11} {'gen CPU us':>11}"
)
MISS_HEADER = HEADER + f" {'classifier p50/p99 ms':>21} {'overhead p50/p99 ms':>19}"


def _row(res: dict[str, Any], note: str = "") -> str:
    return (
        f"{res['target']:9.0f} {res['achieved']:10.0f} {res['p50_ms']:7.2f} "
        f"{res['p99_ms']:7.2f} {res['max_ms']:7.1f} {res['server_p99_ms']:13.3f} "
        f"{res['server_cpu_us']:11.0f} {res['loadgen_cpu_us']:11.0f}  {note}"
    ).rstrip()


def _miss_row(res: dict[str, Any]) -> str:
    return (
        _row(res)
        + f" {res['classifier_p50_ms']:10.2f}/{res['classifier_p99_ms']:<10.2f}"
        + f" {res['overhead_p50_ms']:9.2f}/{res['overhead_p99_ms']:.2f}"
    )


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def cached_path(
    port: int, pid: int, args: argparse.Namespace, say: Callable[[str], None]
) -> dict[str, Any]:
    payloads = [http_request("/decide", b, port, SECRET) for b in cached_bodies(args.conversations)]
    await run_rate(port, payloads, 300, 1.0, args.connections)  # warm-up, untimed
    say(
        f"cached: {args.conversations} conversations, {args.seconds:.0f} s per rate, "
        f"{args.connections} keep-alive connections; load average before: {_loadavg()}"
    )
    say(HEADER)
    runs = []

    async def timed(rate: float, note: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
        res = check(
            await run_rate(port, payloads, rate, args.seconds, args.connections, pid),
            "cached",
            cached=True,
        )
        runs.append(res)
        say(_row(res, note(res)))
        return res

    for rate in [float(x) for x in args.rates.split(",")]:
        await timed(rate, lambda r: "")
    best = max((r["target"] for r in runs if _sustained(r)), default=0.0)
    rate = max(best, 1000.0)
    while args.step > 0:  # step up until the service falls behind
        rate += args.step
        res = await timed(rate, lambda r: "sustained" if _sustained(r) else "falls behind")
        if not _sustained(res):
            break
        best = rate
    at_1000 = next((r for r in runs if r["target"] == 1000), None)
    figures = {
        "p99_ms_at_1000": at_1000["p99_ms"] if at_1000 else None,
        "p50_ms_at_1000": at_1000["p50_ms"] if at_1000 else None,
        "server_cpu_us_at_1000": at_1000["server_cpu_us"] if at_1000 else None,
        "max_rate_p99_le_5ms": max((r["target"] for r in runs if _within_5ms(r)), default=0.0),
        "max_rate_sustained": best,
    }
    say(
        f"highest rate with p99 <= 5 ms: {figures['max_rate_p99_le_5ms']:.0f} req/s; highest "
        f"sustained (achieved >= 97%, p99 <= 50 ms): {best:.0f} req/s; load average after: "
        f"{_loadavg()}"
    )
    return {**figures, "cached_runs": runs}


async def miss_path(
    port: int,
    pid: int,
    args: argparse.Namespace,
    say: Callable[[str], None],
    *,
    name: str,
    rate: float,
    classifier: str,
) -> dict[str, Any]:
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    total = int(rate * args.seconds)
    warm = new_turn_bodies(f"{tag}-warm", 50, 50)
    bodies = new_turn_bodies(tag, total, args.conversations)
    await run_rate(port, [http_request("/decide", b, port, SECRET) for b in warm], 50, 1.0, 8)
    payloads = [http_request("/decide", b, port, SECRET) for b in bodies]
    res = check(
        await run_rate(port, payloads, rate, args.seconds, args.connections, pid),
        name,
        cached=False,
        classifier=classifier,
    )
    say(f"{name}: every request a new turn, classifier {classifier}; load {_loadavg()}")
    say(MISS_HEADER)
    say(_miss_row(res))
    return res


def miss_figures(key: str, res: dict[str, Any]) -> dict[str, Any]:
    """The named figures of a miss run: end to end, the classifier call, and the service's
    overhead (end to end, and in-handler, minus the classifier call)."""
    return {
        f"{key}_rate": res["target"],
        **{
            f"{key}_{name}": res[name]
            for name in (
                "p50_ms",
                "p99_ms",
                "classifier_p50_ms",
                "classifier_p99_ms",
                "overhead_p50_ms",
                "overhead_p99_ms",
                "server_overhead_p99_ms",
                "server_cpu_us",
            )
        },
        f"{key}_run": res,
    }


async def set_override(settings: Any, port: int, model: str) -> None:
    """Publish the admin override, project it and wait until the service answers with it."""
    import httpx

    from tests.integration.test_decide_support import override_set, publish_and_project

    await publish_and_project(settings, [override_set(model, f"bench-override-{uuid.uuid4()}")])
    probe = decide_body(f"override-probe-{uuid.uuid4()}", [{"role": "user", "content": "hello"}])
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for _ in range(300):
            answer = (await http.post("/decide", content=probe, headers=headers)).json()
            if answer["classifierModel"] == model and answer["classifierSource"] == "override":
                return
            await asyncio.sleep(0.1)
    raise SystemExit(f"the override {model} never reached the service")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="500,1000,2000")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--step", type=float, default=500, help="Rate step up (0: no search).")
    ap.add_argument("--miss-rate", type=float, default=100, help="Miss via the LLM (0: skip).")
    ap.add_argument("--local-rate", type=float, default=200, help="Local miss (0: skip).")
    ap.add_argument("--json", action="store_true", help="One JSON object of figures.")
    args = ap.parse_args()
    say: Callable[[str], None] = (
        (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else print
    )

    import httpx
    import psycopg

    from infra.processes import ChildProcess, start_serve, start_sim_provider
    from infra.settings import Settings, assume_dev
    from streams.kafka_admin import ensure_topics
    from tests.conftest import delete_topics_with_prefix
    from tests.integration.test_decide_support import (
        candidate,
        publish_and_project,
        routing_table,
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

    proc: ChildProcess | None = None
    sim: ChildProcess | None = None
    figures: dict[str, Any] = {"load_average_before": _loadavg(), "cpus": os.cpu_count()}
    logs = ROOT / "artifacts"
    try:
        # A process of its own: in a thread here it would share this process's GIL, and
        # its queue under load would show as the classifier's time.
        sim, sim_url = start_sim_provider(
            ROOT, os.environ, latency_scale=0.0, name="bench-decide-sim", log_dir=logs
        )
        env = {
            **os.environ,
            "PROVENROUTE_TOPIC_PREFIX": prefix,
            "PROVENROUTE_DB_SCHEMA": schema,
            "PROVENROUTE_PROVIDER_BASE_URL": sim_url,
            "PROVENROUTE_INTERNAL_SECRET": SECRET,
            "PROVENROUTE_DEFAULT_CLASSIFIER_MODEL": SIM_CLASSIFIER,
            "PYTHONPATH": str(ROOT),
        }
        proc, url = start_serve(ROOT, env, name="bench-decide-server", log_dir=logs)
        port = int(url.rsplit(":", 1)[1])
        headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=url) as http:
            for b in cached_bodies(args.conversations):  # one classifier call each
                r = await http.post("/decide", content=b, headers=headers)
                assert r.status_code == 200 and r.json()["model"], r.text
        figures |= await cached_path(port, proc.pid, args, say)
        if args.miss_rate > 0:
            res = await miss_path(
                port, proc.pid, args, say, name="miss", rate=args.miss_rate,
                classifier=SIM_CLASSIFIER,
            )  # fmt: skip
            figures |= miss_figures("miss", res)
        if args.local_rate > 0:
            await set_override(settings, port, LOCAL)
            res = await miss_path(
                port, proc.pid, args, say, name="local miss", rate=args.local_rate,
                classifier=LOCAL,
            )  # fmt: skip
            figures |= miss_figures("local_miss", res)
        proc.sample()
        figures["peak_rss_mb"] = round(proc.peak_rss_mb, 1)
        figures["load_average_after"] = _loadavg()
        say(f"decide service peak RSS: {proc.peak_rss_mb:.0f} MB")
    finally:
        for child in (proc, sim):
            if child is not None:
                child.stop(timeout_s=15)
        with psycopg.connect(base.database_url, autocommit=True) as c:
            c.execute(f'drop schema if exists "{schema}" cascade')
        await delete_topics_with_prefix(base.kafka_bootstrap, prefix)
    if args.json:
        print(orjson.dumps(_finite(figures)).decode())


def _finite(value: Any) -> Any:
    """NaN (a figure with no samples) as null, rounded to what the timers resolve."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 3)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
