"""The provider client against the real simulated provider over loopback HTTP.

No Kafka, Postgres or Docker needed: a uvicorn server runs in a background thread on a
free port, with the default fleet plus a few test models that always fail in one way.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from contracts.cases import ClassifierCase, DeciderCase
from contracts.classification import Classification
from contracts.classifier_prompt import build_classifier_messages, parse_classification
from contracts.decider_grading import run_check
from infra.provider import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderClient,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from infra.provider.pricing import token_cost
from infra.settings import Settings
from simulator import behaviour
from simulator.catalog import CaseIndex, classifier_case_hash, decider_case_hash, load_cases
from simulator.completions import FINGERPRINT
from simulator.fleet import Fleet, ModelProfile, load_fleet
from simulator.server import SIM_HEADER, SIM_LATENCY_SCALE_HEADER, create_app

KEY = "sk-test-0123456789abcdef-secret"
OTHER_KEY = "sk-benchmark-identity-secret"
ZERO = {"low": 0.0, "medium": 0.0, "high": 0.0}
ZERO_C = dict.fromkeys(
    [
        "taskType",
        "subtaskType",
        "reasoningComplexity",
        "contextComplexity",
        "executionMode",
        "requiresTools",
        "riskLevel",
    ],
    0.0,
)
HALF = {k: 0.5 for k in ZERO}
HALF_C = {k: 0.5 for k in ZERO_C}


def _test_model(model_id: str, failures: dict[str, float], **extra: object) -> ModelProfile:
    terminal = sum(v for k, v in failures.items() if k in behaviour.TERMINAL_FAILURES)
    return ModelProfile.model_validate(
        {
            "id": model_id,
            "price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
            "latency": {"median_ms": 100},
            "decider": ZERO if terminal else HALF,
            "classifier": ZERO_C if terminal else HALF_C,
            "failures": failures,
            **extra,
        }
    )


def _fleet() -> Fleet:
    default = load_fleet()
    extra = (
        _test_model("sim/test-timeout", {"timeout": 1.0}),
        _test_model("sim/test-burst", {"server_error": 1.0}, server_error_burst=2),
        _test_model("sim/test-long-burst", {"server_error": 1.0}, server_error_burst=5),
        _test_model("sim/test-429", {"rate_limited": 1.0}),
        _test_model("sim/test-nocost", {}, report_cost=False),
        _test_model("sim/test-empty", {"empty": 1.0}),
    )
    return Fleet(timeout_sleep_s=30.0, models=default.models + extra)


@dataclass
class Sim:
    base_url: str
    fleet: Fleet
    classifier: list[ClassifierCase]
    decider: list[DeciderCase]

    def client(self, key: str = KEY, **kw: object) -> ProviderClient:
        kw.setdefault("backoff_initial_s", 0.01)
        kw.setdefault("backoff_max_s", 0.05)
        kw.setdefault("timeout_s", 10.0)
        return ProviderClient(self.base_url, SecretStr(key), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    classifier, decider = load_cases()
    fleet = _fleet()
    app = create_app(
        fleet,
        cases=CaseIndex.build(classifier, decider),
        latency_scale=0.0,
        api_keys={KEY, OTHER_KEY},
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it, uvicorn serving pre-bound sockets answers
    # every request ~40 ms late (Nagle + delayed ACK on its split header/body writes).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
        yield Sim(f"http://127.0.0.1:{port}/v1", fleet, classifier, decider)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _classifier_request(case: ClassifierCase) -> list[dict[str, str]]:
    return build_classifier_messages(list(case.messages))


# -- the server's surface -----------------------------------------------------------------


async def test_models_lists_the_fleet_labelled_simulated(sim: Sim) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{sim.base_url}/models")
    assert r.status_code == 200
    assert r.headers[SIM_HEADER] == "1"
    assert r.headers[SIM_LATENCY_SCALE_HEADER] == "0.0"  # what a benchmark run records
    data = r.json()["data"]
    assert [m["id"] for m in data] == [m.id for m in sim.fleet.models]
    assert all(m["owned_by"] == "simulated" and m["id"].startswith("sim/") for m in data)


async def test_classifier_case_returns_a_parseable_classification_with_cost(sim: Sim) -> None:
    case = sim.classifier[0]
    async with sim.client() as client:
        result = await client.chat(model="sim/frontier", messages=_classifier_request(case))
    draw = behaviour.classifier_draw(sim.fleet.get("sim/frontier"), classifier_case_hash(case), 0)  # type: ignore[arg-type]
    parsed = parse_classification(result.text or "")
    if draw.failure is None:
        assert isinstance(parsed, Classification)
    assert result.cost_usd is not None and result.cost_usd > 0
    assert result.model == "sim/frontier"
    assert result.input_tokens > 100 and result.output_tokens > 0
    assert result.assistant_message == {"role": "assistant", "content": result.text}


async def test_cost_equals_the_servers_usage(sim: Sim) -> None:
    case = sim.classifier[1]
    messages = _classifier_request(case)
    async with httpx.AsyncClient() as http:
        raw = await http.post(
            f"{sim.base_url}/chat/completions",
            json={"model": "sim/balanced", "messages": messages, "seed": 2},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    body = raw.json()
    assert raw.headers[SIM_HEADER] == "1"
    assert body["system_fingerprint"] == FINGERPRINT and body["simulated"] is True
    usage = body["usage"]
    async with sim.client() as client:
        result = await client.chat(model="sim/balanced", messages=messages, seed=2)
    assert result.cost_usd == usage["cost"]
    assert (result.input_tokens, result.output_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    price = sim.fleet.get("sim/balanced").price  # type: ignore[union-attr]
    assert usage["cost"] == token_cost(
        usage["prompt_tokens"],
        usage["completion_tokens"],
        price.input_per_mtok,
        price.output_per_mtok,
    )
    assert result.text == body["choices"][0]["message"]["content"]


async def test_cost_falls_back_to_the_price_table(sim: Sim) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    async with sim.client() as client:
        result = await client.chat(model="sim/test-nocost", messages=messages)
    assert result.cost_usd is None  # no usage.cost and no price table: no cost signal
    async with sim.client(price_table=sim.fleet.price_table()) as client:
        priced = await client.chat(model="sim/test-nocost", messages=messages)
    assert priced.cost_usd == token_cost(priced.input_tokens, priced.output_tokens, 1.0, 4.0)
    assert priced.cost_usd is not None and priced.cost_usd > 0


# -- determinism ---------------------------------------------------------------------------


async def test_same_model_case_rep_answers_the_same(sim: Sim) -> None:
    async with sim.client() as client:
        for model in ("sim/tiny", "sim/flaky", "sim/balanced"):
            texts: dict[int, list[str | None]] = {0: [], 1: []}
            for case in sim.classifier[:12]:
                messages = _classifier_request(case)
                for rep in (0, 1):
                    answers = []
                    for _ in range(2):
                        try:
                            r = await client.chat(
                                model=model, messages=messages, seed=rep, timeout_s=1.0
                            )
                            answers.append((r.text, r.cost_usd))
                        except ProviderTimeout:  # sim/flaky's timeouts repeat too
                            answers.append(("timeout", None))
                    assert answers[0] == answers[1]
                    texts[rep].append(answers[0][0])
            assert texts[0] != texts[1] or model == "sim/frontier"  # reps do differ


async def test_served_classifier_answers_match_the_pure_draws(sim: Sim) -> None:
    profile = sim.fleet.get("sim/tiny")
    assert profile is not None
    async with sim.client() as client:
        for case in sim.classifier[:20]:
            result = await client.chat(
                model=profile.id, messages=_classifier_request(case), seed=1, timeout_s=2
            )
            plan = behaviour.plan_classifier(profile, case.label, classifier_case_hash(case), 1)
            assert result.text == plan.text


# -- agentic decider cases ----------------------------------------------------------------


async def test_agentic_case_correct_draw_drives_the_reference_through_run_shell(sim: Sim) -> None:
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in behaviour.HARNESS_TOOLS
    ]
    profile = sim.fleet.get("sim/frontier")
    assert profile is not None
    agentic = [c for c in sim.decider if behaviour.is_agentic(c)]
    assert agentic, "no agentic decider case in the dataset"
    seen_right = seen_wrong = 0
    async with sim.client() as client:
        for case in agentic:
            for rep in (0, 1, 2):
                draw = behaviour.decider_draw(profile, decider_case_hash(case), case.tier, rep)
                messages: list[dict[str, object]] = [
                    {"role": "system", "content": "You are a coding agent."},
                    {"role": "user", "content": case.prompt},
                ]
                first = await client.chat(
                    model=profile.id, messages=messages, tools=tools, seed=rep
                )
                assert first.finish_reason == "tool_calls" and first.text is None
                (call,) = first.tool_calls
                assert call.name == "run_shell"
                assert (call.arguments["command"] == case.reference) == draw.correct
                # what the container would print for that command
                output = case.golden_answer if draw.correct else "README.md\nsrc\n"
                messages += [
                    first.assistant_message,
                    {"role": "tool", "tool_call_id": call.id, "content": f"{output}\n"},
                ]
                final = await client.chat(
                    model=profile.id, messages=messages, tools=tools, seed=rep
                )
                assert not final.tool_calls
                assert run_check(case.check, final.text or "").passed == draw.correct
                seen_right += draw.correct
                seen_wrong += not draw.correct
    assert seen_right > 0


# -- failures, retries and errors ---------------------------------------------------------


async def test_timeout_is_typed_and_bounded_by_the_call_timeout(sim: Sim) -> None:
    async with sim.client(max_retries=3) as client:
        started = time.monotonic()
        with pytest.raises(ProviderTimeout) as info:
            await client.chat(
                model="sim/test-timeout",
                messages=[{"role": "user", "content": "anything"}],
                timeout_s=0.5,
            )
    assert 0.4 < time.monotonic() - started < 2.0  # not retried, no backoff past the budget
    assert info.value.model == "sim/test-timeout"


async def test_a_5xx_burst_is_retried_through(sim: Sim) -> None:
    messages = [{"role": "user", "content": "burst me"}]
    async with sim.client(max_retries=2) as client:
        result = await client.chat(model="sim/test-burst", messages=messages, seed=11)
    assert result.text and result.cost_usd is not None
    # the same key again: the burst is spent, answers at once
    async with sim.client(max_retries=0) as client:
        again = await client.chat(model="sim/test-burst", messages=messages, seed=11)
    assert again.text == result.text


async def test_a_5xx_burst_longer_than_the_retries_is_unavailable(sim: Sim) -> None:
    async with sim.client(max_retries=2) as client:
        with pytest.raises(ProviderUnavailable) as info:
            await client.chat(
                model="sim/test-long-burst", messages=[{"role": "user", "content": "x"}], seed=3
            )
    assert info.value.status_code == 503


async def test_429_is_retried_and_typed_when_retries_are_off(sim: Sim) -> None:
    messages = [{"role": "user", "content": "slow down"}]
    async with sim.client(max_retries=0) as client:
        with pytest.raises(ProviderRateLimited) as info:
            await client.chat(model="sim/test-429", messages=messages, seed=5)
    assert info.value.retry_after_s == 0.0
    async with sim.client(max_retries=1) as client:
        result = await client.chat(model="sim/test-429", messages=messages, seed=6)
    assert result.text


async def test_401_is_an_auth_error_and_never_shows_the_key(
    sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk-wrong-key-must-not-leak-42"
    caplog.set_level(logging.DEBUG)
    client = sim.client(key=wrong, max_retries=3)
    async with client:
        with pytest.raises(ProviderAuthError) as info:
            await client.chat(model="sim/tiny", messages=[{"role": "user", "content": "hi"}])
    err = info.value
    assert err.status_code == 401
    for text in (str(err), repr(err), repr(client), caplog.text, str(err.detail)):
        assert wrong not in text


async def test_unknown_model_is_a_bad_response(sim: Sim) -> None:
    async with sim.client() as client:
        with pytest.raises(ProviderBadResponse) as info:
            await client.chat(model="sim/nope", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404


async def test_empty_answer_is_returned_not_raised(sim: Sim) -> None:
    async with sim.client() as client:
        result = await client.chat(
            model="sim/test-empty", messages=[{"role": "user", "content": "say something"}]
        )
    assert result.text == "" and result.cost_usd is not None


async def test_connection_refused_is_unavailable_after_retries() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client = ProviderClient(
        f"http://127.0.0.1:{port}/v1", SecretStr(KEY), max_retries=2, backoff_initial_s=0.01
    )
    async with client:
        with pytest.raises(ProviderUnavailable):
            await client.chat(model="sim/tiny", messages=[{"role": "user", "content": "hi"}])


async def test_unknown_classifier_request_gets_the_heuristic_classification(sim: Sim) -> None:
    messages = build_classifier_messages(
        [{"role": "user", "content": "Fix the crash in the login handler, it throws a KeyError"}]
    )
    async with sim.client() as client:
        result = await client.chat(model="sim/balanced", messages=messages)
    parsed = parse_classification(result.text or "")
    assert isinstance(parsed, Classification)
    assert parsed.taskType == "debugging"


async def test_from_settings_uses_the_named_credential(sim: Sim) -> None:
    settings = Settings(
        provider_base_url=sim.base_url,
        provider_api_key=SecretStr(KEY),
        provider_credentials={"bench": SecretStr(OTHER_KEY), "stale": SecretStr("revoked")},
        provider_timeout_s=5,
        provider_max_retries=0,
    )
    messages = [{"role": "user", "content": "hi"}]
    for credential in (None, "bench"):
        async with ProviderClient.from_settings(settings, credential) as client:
            assert (await client.chat(model="sim/tiny", messages=messages)).text
    async with ProviderClient.from_settings(settings, "stale") as client:
        with pytest.raises(ProviderAuthError):
            await client.chat(model="sim/tiny", messages=messages)
    with pytest.raises(ProviderAuthError, match="no provider credential named 'missing'"):
        ProviderClient.from_settings(settings, "missing")


async def test_concurrent_calls_share_one_client(sim: Sim) -> None:
    async with sim.client() as client:
        results = await asyncio.gather(
            *(
                client.chat(model="sim/balanced", messages=_classifier_request(c), seed=0)
                for c in sim.classifier[:30]
            )
        )
    assert len(results) == 30 and all(r.cost_usd is not None for r in results)
