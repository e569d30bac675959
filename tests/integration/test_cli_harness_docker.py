"""Agent-CLI harnesses end to end: the Kilo CLI and mini-swe-agent inside real network-less
containers, their model traffic through the job's model proxy on a bind-mounted unix socket,
the simulated provider behind it. No mocks of Docker; the job image must carry both CLIs
(`make image`, or PROVENROUTE_DOCKER_IMAGE for a private tag)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from pydantic import SecretStr

from contracts.cases import DeciderCase
from contracts.config import HarnessName
from contracts.decider_grading import grade_decider_case
from datasets.verify import run_post_check
from infra.settings import Settings
from simulator import behaviour
from simulator.catalog import decider_case_hash, load_cases
from simulator.fleet import load_fleet
from streams.cli_harness import CliHarness
from streams.cli_job import cli_job
from streams.docker_sandbox import DEFAULT_IMAGE, DockerSandbox, ensure_image
from streams.harness import HarnessResult
from streams.sandbox import Sandbox
from tests.sim_server import serve_sim

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3000)]

BENCH_SECRET = "sk-or-v1-PLANTED-bench-" + uuid.uuid4().hex
DEFAULT_SECRET = "sk-or-v1-PLANTED-default-" + uuid.uuid4().hex
TEST_LABEL = "provenroute.test"
CLI_HARNESSES: tuple[HarnessName, ...] = ("kilo", "mini-swe-agent")


def agentic_sample(per_tier: int = 4) -> list[DeciderCase]:
    """A fixed sample across tiers: the first agentic cases of each tier in content-hash
    order (pseudo-random, stable, independent of any model's draws)."""
    _, decider = load_cases()
    ordered = sorted((c for c in decider if behaviour.is_agentic(c)), key=decider_case_hash)
    return [
        c for t in ("low", "medium", "high") for c in [c for c in ordered if c.tier == t][:per_tier]
    ]


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    c = docker.from_env()
    c.ping()
    ensure_image(c)
    yield c
    c.close()


@pytest.fixture(scope="module")
def run_id(client: Any) -> Iterator[str]:
    rid = uuid.uuid4().hex[:12]
    yield rid
    assert client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={rid}"}) == []


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with serve_sim({BENCH_SECRET}) as url:
        yield url


def settings_for(url: str) -> Settings:
    return Settings(
        provider_base_url=url,
        provider_api_key=SecretStr(DEFAULT_SECRET),
        provider_credentials={"bench": SecretStr(BENCH_SECRET)},
        docker_image=DEFAULT_IMAGE,
    )


def job(
    client: Any, run_id: str, url: str, harness: HarnessName, model: str
) -> Any:  # an async context manager of (CliHarness, Sandbox)
    def sandbox(key: str, directory: Any) -> DockerSandbox:
        return DockerSandbox(
            key,
            image=DEFAULT_IMAGE,
            client=client,
            model_socket_dir=directory,
            mem_limit="1g",
            labels={TEST_LABEL: run_id},
        )

    return cli_job(
        settings_for(url),
        job_key=f"test-{run_id}:{harness}:{model}:{uuid.uuid4().hex[:6]}",
        harness=harness,
        model=model,
        reasoning_effort="high",
        credential="bench",
        sandbox_factory=sandbox,
    )


async def grade(case: DeciderCase, sandbox: Sandbox, result: HarnessResult) -> bool:
    post = await run_post_check(sandbox, case) if case.post_check is not None else None
    return bool(result.answer) and grade_decider_case(case, result.answer, post).passed


# ------------------------------------------------------------------ pass rates and cost


async def _work_sample(
    client: Any, run_id: str, url: str, harness: HarnessName, model: str
) -> list[tuple[DeciderCase, HarnessResult, bool]]:
    out = []
    async with job(client, run_id, url, harness, model) as (h, sandbox):
        for case in agentic_sample():
            result = await h.run_case(case, sandbox, model=model, reasoning_effort="high", rep=0)
            out.append((case, result, await grade(case, sandbox, result)))
    return out


@pytest.mark.parametrize("harness", CLI_HARNESSES)
async def test_the_sample_realises_the_draws_through_the_cli_and_costs_are_the_proxys(
    client: Any, run_id: str, sim_url: str, harness: HarnessName
) -> None:
    frontier, tiny = await asyncio.gather(
        _work_sample(client, run_id, sim_url, harness, "sim/frontier"),
        _work_sample(client, run_id, sim_url, harness, "sim/tiny"),
    )
    fleet = load_fleet()
    wrong: list[tuple[str, str, str, str]] = []
    for model, rows in (("sim/frontier", frontier), ("sim/tiny", tiny)):
        profile = fleet.get(model)
        assert profile is not None
        for case, result, passed in rows:
            draw = behaviour.decider_draw(profile, decider_case_hash(case), case.tier, 0)
            print(
                model,
                case.id,
                passed,
                result.stop_reason,
                f"{result.latency_ms:.0f} ms",
                f"first call {result.first_call_ms:.0f} ms",
                result.cost_usd,
            )
            if passed != draw.correct:
                wrong.append((model, case.id, result.stop_reason, result.transcript_tail[-600:]))
            assert result.harness == harness
            if result.timed_out:
                continue
            assert result.steps >= 1
            assert result.tool_calls >= (draw.failure not in ("empty", "malformed_json"))
            # the case's cost is the proxy's meter, call by call, as the provider billed it
            billed = [c["cost_usd"] for c in result.proxy_calls if c["status"] == 200]
            assert result.cost_usd == pytest.approx(sum(billed)) and all(b > 0 for b in billed)
            if harness == "kilo":  # the CLI's own figure (read from the provider's usage.cost)
                cli_costs = sum(
                    float(e.get("part", {}).get("cost") or 0)
                    for run in result.cli_runs
                    for e in map(json.loads, filter(None, run["stdout"].splitlines()))
                    if e.get("type") == "step_finish"
                )
                assert cli_costs == pytest.approx(result.cost_usd, rel=1e-6), case.id
    assert wrong == [], "cases whose grade differs from the model's draw"
    rate = {m: sum(p for _, _, p in rows) / len(rows) for m, rows in (("f", frontier), ("t", tiny))}
    assert len(frontier) >= 12 and {c.tier for c, _, _ in frontier} == {"low", "medium", "high"}
    assert rate["f"] >= 0.8, rate
    assert rate["t"] <= 0.3, rate


# ------------------------------------------------------------------ isolation


async def test_a_planted_key_is_nowhere_in_the_container_or_the_results(
    client: Any, run_id: str, sim_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    case = agentic_sample()[0]
    async with job(client, run_id, sim_url, "kilo", "sim/frontier") as (h, sandbox):
        assert isinstance(h, CliHarness)
        h.keep_state = True  # the CLI's own state stays for inspection
        result = await h.run_case(
            case, sandbox, model="sim/frontier", reasoning_effort="high", rep=0
        )
        assert result.answer and result.steps >= 1  # the run really went through the proxy
        scan = await sandbox.exec(
            # A bracket pattern never matches its own text, so neither this shell's
            # command line nor grep's (both under /proc while cat reads) counts itself.
            "set +e; k='PLAN[T]ED'; "
            'grep -rIl -e "$k" /tmp /home /workspace /run /var /etc /opt/provenroute '
            "2>/dev/null; "
            "cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' "
            '| grep -c "$k"; '
            "ls -A /tmp/agent-runs | head -3",
            timeout_s=120,
        )
        assert scan.stdout.splitlines()[0] == "0", scan.stdout  # no file, no process env
        assert "agent-runs" not in scan.stdout.splitlines()[0]
        assert scan.stdout.count("\n") >= 2  # the kept CLI state was there to be scanned
        net = await sandbox.exec(
            "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; ls -A /run/provenroute; "
            "python3 -c 'import socket\n"
            'for target in (("1.1.1.1", 80), ("10.0.0.1", 443)):\n'
            "    try:\n"
            '        socket.create_connection(target, timeout=3); print("REACHED")\n'
            '    except OSError as e: print("unreachable", e.errno)\n'
            "try:\n"
            '    socket.getaddrinfo("pypi.org", 443); print("RESOLVED")\n'
            'except OSError: print("no dns")\'',
            timeout_s=60,
        )
    lines = net.stdout.split()
    assert lines[0] == "lo" and "model.sock" in lines, net.stdout
    assert "REACHED" not in net.stdout and "RESOLVED" not in net.stdout, net.stdout
    emitted = json.dumps(result.to_dict()) + caplog.text
    for secret in (BENCH_SECRET, DEFAULT_SECRET):
        assert secret not in emitted


async def test_a_dead_provider_ends_the_case_as_a_timeout(client: Any, run_id: str) -> None:
    case = agentic_sample()[0]
    async with job(client, run_id, "http://127.0.0.1:9/v1", "kilo", "sim/frontier") as (h, sb):
        result = await h.run_case(case, sb, model="sim/frontier", reasoning_effort=None, rep=0)
    assert result.timed_out and result.stop_reason == "timeout" and result.answer == ""
    assert result.proxy_calls and all(c["upstream_failed"] for c in result.proxy_calls)
    assert result.cost_usd is None


# ------------------------------------------------------------------ harness try


@pytest.mark.parametrize("harness", ["builtin", "kilo"])
def test_harness_try_prints_the_raw_stream_the_call_log_and_the_grade(
    sim_url: str, harness: str
) -> None:
    from typer.testing import CliRunner

    from api.cli.main import app

    case = agentic_sample()[0]
    env = {
        "PROVENROUTE_PROVIDER_BASE_URL": sim_url,
        "PROVENROUTE_PROVIDER_CREDENTIALS": json.dumps({"bench": BENCH_SECRET}),
        "PROVENROUTE_DOCKER_IMAGE": DEFAULT_IMAGE,
    }
    args = ["harness", "try", "--harness", harness, "--model", "sim/frontier"]
    args += ["--case", case.id, "--identity", "bench"]
    out = CliRunner().invoke(app, args, env=env)
    assert out.exit_code == 0, out.output
    graded = json.loads(out.output[out.output.rindex("{") :])
    assert graded["passed"] is True and graded["harness"] == harness
    assert BENCH_SECRET not in out.output
    if harness == "kilo":
        assert '"type":"step_finish"' in out.output  # the CLI's own event stream
        assert "model proxy call log" in out.output and graded["model_calls"] >= 2
