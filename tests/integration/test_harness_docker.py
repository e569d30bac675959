"""The built-in harness end to end: real containers, the real provider client and the
simulated provider over loopback HTTP (plus a scripted provider for exact scenarios).

No mocks of Docker. In CI a missing Docker daemon is a failure, never a skip.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import docker
import pytest
import pytest_asyncio
import uvicorn
from pydantic import SecretStr

from contracts.decider_grading import run_check
from contracts.envelope import iso_utc
from contracts.events.cases import CaseGraded
from contracts.ids import case_job_id, case_result_id
from infra.provider import ProviderClient
from infra.settings import Settings
from simulator import behaviour
from simulator.catalog import CaseIndex, decider_case_hash, load_cases
from simulator.fleet import load_fleet
from simulator.server import create_app
from streams.docker_sandbox import DockerSandbox, ensure_image
from streams.harness import BuiltinHarness, HarnessError
from tests.doubles import Call, Reply, ScriptedProvider
from tests.doubles import sum_numbers_case as sum_case

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TEST_LABEL = "provenroute.test"
SECRET = "sk-or-v1-PLANTED-" + uuid.uuid4().hex
BENCH_SECRET = "sk-bench-PLANTED-" + uuid.uuid4().hex


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    c = docker.from_env()
    c.ping()
    ensure_image(c)
    yield c
    c.close()


@pytest.fixture(scope="module")
def run_id() -> str:
    return uuid.uuid4().hex[:12]


# The test's own loop: a sandbox's stream to its runner belongs to the loop that started it.
@pytest_asyncio.fixture(loop_scope="function")
async def sandbox(client: Any, run_id: str) -> AsyncIterator[DockerSandbox]:
    async with DockerSandbox(
        f"test-{run_id}:harness:{uuid.uuid4().hex[:6]}:0",
        client=client,
        labels={TEST_LABEL: run_id},
    ) as sb:
        yield sb


@pytest.fixture(scope="module", autouse=True)
def no_leftovers(client: Any, run_id: str) -> Iterator[None]:
    yield
    assert client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={run_id}"}) == []


@pytest.fixture(scope="module")
def settings() -> Settings:
    """Provider settings with planted secrets: none may surface anywhere we emit."""
    return Settings(
        provider_api_key=SecretStr(SECRET),
        provider_credentials={"bench": SecretStr(BENCH_SECRET)},
    )


@pytest.fixture(scope="module")
def sim_url(settings: Settings) -> Iterator[str]:
    app = create_app(
        load_fleet(),
        cases=CaseIndex.build(*load_cases()),
        latency_scale=0.0,
        api_keys={SECRET, BENCH_SECRET},
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "simulated provider did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# ------------------------------------------------------------------ scripted replies


def shell(command: str, cost: float = 0.001, call_id: str = "c1") -> Reply:
    return Reply(None, [Call(call_id, "run_shell", {"command": command})], cost)


# ------------------------------------------------------------------ tests


async def test_empty_answer_is_retried_once_in_a_fresh_workspace(sandbox: DockerSandbox) -> None:
    provider = ScriptedProvider(
        [
            shell("echo junk > scratch.txt; awk '{s+=$1} END {print s}' data/nums.txt", 0.010),
            Reply("", cost_usd=0.020),  # exit 0, no text
            shell("ls -A; awk '{s+=$1} END {print s}' data/nums.txt", 0.040),
            Reply("6", cost_usd=0.080),
        ]
    )
    harness = BuiltinHarness(provider)
    result = await harness.run_case(
        sum_case(), sandbox, model="scripted", reasoning_effort=None, rep=0
    )
    assert (result.answer, result.stop_reason, result.attempts) == ("6", "final", 2)
    assert result.cost_usd == pytest.approx(0.150)
    assert run_check(sum_case().check, result.answer).passed
    retry_output = provider.requests[3]["messages"][3]["content"]
    assert "scratch.txt" not in retry_output  # the first attempt's files are gone
    assert "stdout:\ndata\n6\n" in retry_output


async def test_runaway_tool_call_is_killed_and_the_case_times_out(
    sandbox: DockerSandbox,
) -> None:
    provider = ScriptedProvider([shell("(while :; do :; done) & while :; do :; done")])
    case = sum_case().model_copy(update={"timeout_s": 3})
    t0 = time.monotonic()
    result = await BuiltinHarness(provider).run_case(
        case, sandbox, model="scripted", reasoning_effort=None, rep=0
    )
    assert result.timed_out and result.stop_reason == "timeout" and result.answer == ""
    assert time.monotonic() - t0 < 3 + sandbox.grace_s + 2
    ps = await sandbox.exec("ps -eo args --no-headers", 10)
    assert "while" not in ps.stdout


async def test_simulated_models_solve_agentic_cases_through_real_tool_calls(
    client: Any, run_id: str, settings: Settings, sim_url: str
) -> None:
    cases = [c for c in load_cases()[1] if behaviour.is_agentic(c)]
    assert cases, "no agentic decider case in the dataset"
    fleet = load_fleet()
    settings = settings.model_copy(update={"provider_base_url": sim_url})
    right = wrong = 0
    async with (
        ProviderClient.from_settings(settings, credential="bench") as provider,
        DockerSandbox(f"test-{run_id}:sim:0:0", client=client, labels={TEST_LABEL: run_id}) as sb,
    ):
        harness = BuiltinHarness(provider)
        for model, reps in (("sim/frontier", (0,)), ("sim/tiny", (0,))):
            profile = fleet.get(model)
            assert profile is not None
            for case in cases:
                for rep in reps:
                    draw = behaviour.decider_draw(profile, decider_case_hash(case), case.tier, rep)
                    if draw.failure is not None:
                        continue  # failure modes are covered elsewhere
                    result = await harness.run_case(
                        case, sb, model=model, reasoning_effort="low", rep=rep
                    )
                    passed = run_check(case.check, result.answer).passed
                    assert passed == draw.correct, (model, case.id, rep, result)
                    assert result.steps == 2 and "run_shell" in result.transcript_tail
                    assert result.cost_usd is not None and result.cost_usd > 0
                    right += passed
                    wrong += not passed
    assert right > 0 and wrong > 0


async def test_planted_secrets_never_surface(
    client: Any,
    run_id: str,
    settings: Settings,
    sim_url: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [SECRET, BENCH_SECRET]
    sim_settings = settings.model_copy(update={"provider_base_url": sim_url})
    emitted: list[str] = []
    probe = (
        "env; cat /proc/1/environ /proc/self/environ | tr '\\0' '\\n'; "
        "grep -rls 'PLANTED' /etc /home /opt /tmp /workspace 2>/dev/null | head; "
        "awk '{s+=$1} END {print s}' data/nums.txt"
    )
    key = f"test-{run_id}:secrets:0:0"
    async with DockerSandbox(key, client=client, labels={TEST_LABEL: run_id}) as sb:
        attrs = client.containers.get(sb.name).attrs
        emitted.append(json.dumps(attrs))  # env, labels, command line of the container

        # 1. a model that goes looking for credentials inside the container
        scripted = ScriptedProvider(
            [shell(probe), Reply("6")], api_key=sim_settings.provider_api_key
        )
        harness = BuiltinHarness(scripted, redact=secrets)
        found = await harness.run_case(
            sum_case(), sb, model="scripted", reasoning_effort=None, rep=0
        )
        assert found.answer == "6"
        tool_output = scripted.requests[-1]["messages"][3]["content"]  # what went back to the model
        assert "exit_code: 0" in tool_output and "PATH=" in tool_output  # the probe ran
        emitted += [json.dumps(m) for m in scripted.requests[-1]["messages"]]
        emitted.append(json.dumps(found.to_dict()))

        # 2. the real client against the simulated provider, on the benchmark credential
        async with ProviderClient.from_settings(sim_settings, credential="bench") as real:
            harness = BuiltinHarness(real, redact=secrets)
            case = next(c for c in load_cases()[1] if behaviour.is_agentic(c))
            result = await harness.run_case(
                case, sb, model="sim/frontier", reasoning_effort="low", rep=0
            )
            emitted.append(json.dumps(result.to_dict()))
            event = CaseGraded(
                event_id=case_result_id("run-s", "sim/frontier", case.id, 0),
                occurred_at=iso_utc(datetime.now(UTC)),
                run_id="run-s",
                kind="decider",
                model="sim/frontier",
                case_id=case.id,
                rep=0,
                tier=case.tier,
                score=1.0 if run_check(case.check, result.answer).passed else 0.0,
                latency_ms=result.latency_ms,
                cost_usd=result.cost_usd,
                timed_out=result.timed_out,
                answer_excerpt=result.answer[:2000],
                diagnostics=result.diagnostics(),
                job_id=case_job_id("run-s", "sim/frontier", 0, 0),
            )
            emitted.append(event.model_dump_json())

        # 3. a provider failure whose message carries the key
        failing = ScriptedProvider([RuntimeError(f"401 for Authorization: Bearer {SECRET}")])
        with pytest.raises(HarnessError) as info:
            await BuiltinHarness(failing, redact=secrets).run_case(
                sum_case(), sb, model="scripted", reasoning_effort=None, rep=0
            )
        emitted += [str(info.value), info.value.transcript_tail, repr(info.value)]
        emitted.append(sb.__dict__.__repr__())
        # Nothing the container prints is kept by Docker: it all came through the runner's
        # stream, into what was checked above.
        assert attrs["HostConfig"]["LogConfig"]["Type"] == "none"

    out, err = capfd.readouterr()
    emitted += [caplog.text, out, err, repr(sim_settings), str(sim_settings.model_dump())]
    for text in emitted:
        for secret in secrets:
            assert secret not in text
