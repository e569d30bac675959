"""OpenAI-compatible chat-completions client with cost accounting.

One client serves OpenRouter in production and the built-in simulated provider offline.

- The key is held as a `SecretStr` and only unwrapped into the request's Authorization
  header; it never reaches a log line, an exception, a repr or a result.
- `timeout_s` bounds the whole call, retries included: the caller's budget (a /decide
  deadline, a decider case's wall clock) is never exceeded by backoff.
- 429, 5xx and connection failures are retried with exponential backoff and jitter
  (tenacity), honouring `Retry-After`; timeouts, auth and other 4xx are not.
- Cost comes from `usage.cost` when the endpoint reports it (OpenRouter always does), else
  from the price table, else it is None (no cost signal — never a made-up 0).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base

from infra.provider.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from infra.provider.pricing import PriceTable, reported_cost

if TYPE_CHECKING:
    from infra.settings import Settings

log = logging.getLogger(__name__)

_DETAIL_CHARS = 300
_CONNECT_TIMEOUT_S = 10.0


class ToolCall(BaseModel):
    """One function call requested by the model."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    """Parsed JSON arguments; `{}` when the model sent unparseable arguments."""
    arguments_error: str | None = None
    """Why the raw arguments could not be parsed (the harness reports it to the model)."""


class ChatResult(BaseModel):
    """The outcome of one successful chat completion."""

    model_config = ConfigDict(frozen=True)

    text: str | None
    """The assistant's text; None or "" when it only called tools or answered nothing."""
    tool_calls: list[ToolCall]
    cost_usd: float | None
    """`usage.cost`, else the price table's figure, else None (no cost signal)."""
    latency_ms: float
    """Wall time of the whole call, retries and backoff included."""
    input_tokens: int
    output_tokens: int
    model: str
    """The model that answered (as reported by the endpoint, else the one requested)."""
    finish_reason: str | None
    assistant_message: dict[str, Any]
    """The assistant message to append to the conversation for the next turn."""


def credential_key(settings: Settings, credential: str | None) -> SecretStr:
    """The key of a named credential (a config's benchmarkIdentity), or the default key."""
    if credential is None:
        return settings.provider_api_key
    try:
        return settings.provider_credentials[credential]
    except KeyError:
        raise ProviderAuthError(
            f"no provider credential named {credential!r} in settings"
        ) from None


class ProviderClient:
    """Async client of an OpenAI-compatible `/chat/completions` endpoint."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        price_table: PriceTable | None = None,
        http: httpx.AsyncClient | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
        retry_after_cap_s: float = 30.0,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.price_table = price_table or PriceTable()
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50)
        )
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._retry_after_cap_s = retry_after_cap_s
        self._extra_headers = dict(extra_headers or {})

    @classmethod
    def from_settings(
        cls, settings: Settings, credential: str | None = None, **kwargs: Any
    ) -> ProviderClient:
        """A client for `settings`' endpoint with the default key or a named credential.

        `credential` names an entry of `settings.provider_credentials` (a config's
        benchmarkIdentity); None uses `settings.provider_api_key`.
        """
        key = credential_key(settings, credential)
        price_table = (
            PriceTable.load(settings.price_table_file) if settings.price_table_file else None
        )
        return cls(
            settings.provider_base_url,
            key,
            timeout_s=settings.provider_timeout_s,
            max_retries=settings.provider_max_retries,
            price_table=price_table,
            **kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"ProviderClient(base_url={self.base_url!r}, timeout_s={self.timeout_s}, "
            f"max_retries={self.max_retries})"
        )

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        reasoning_effort: str | None = None,
        timeout_s: float | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
    ) -> ChatResult:
        """One chat completion; raises a `ProviderError` subclass on failure."""
        body: dict[str, Any] = {"model": model, "messages": messages}
        if tools:
            body["tools"] = tools
        if reasoning_effort is not None:
            body["reasoning"] = {"effort": reasoning_effort}
        if seed is not None:
            body["seed"] = seed
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        payload = orjson.dumps(body)

        budget = self.timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        deadline = started + budget

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1) | _StopAtDeadline(deadline),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, ProviderError) and e.retryable),
            reraise=True,
            before_sleep=lambda s: log.info(
                "provider retry model=%s attempt=%d error=%s",
                model,
                s.attempt_number,
                type(s.outcome.exception()).__name__ if s.outcome else "?",
            ),
        )
        data: dict[str, Any] = {}
        async for attempt in retrying:
            with attempt:
                data = await self._post_once(payload, model, deadline)
        latency_ms = (time.monotonic() - started) * 1000.0
        result = self._parse(data, model, latency_ms)
        log.debug(
            "provider chat model=%s latency_ms=%.1f in=%d out=%d cost=%s",
            model,
            latency_ms,
            result.input_tokens,
            result.output_tokens,
            result.cost_usd,
        )
        return result

    # -- internals ---------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        # Exponential with full-width jitter of one initial step (de-synchronises callers).
        exp = self._backoff_initial_s * 2 ** max(state.attempt_number - 1, 0)
        backoff = min(exp, self._backoff_max_s) + random.uniform(0, self._backoff_initial_s)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderRateLimited) and exc.retry_after_s is not None:
            return max(backoff, min(exc.retry_after_s, self._retry_after_cap_s))
        return backoff

    def _headers(self) -> dict[str, str]:
        return {
            **self._extra_headers,
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    def _redact(self, text: str) -> str:
        key = self._api_key.get_secret_value()
        if key and key in text:
            text = text.replace(key, "***")
        return text[:_DETAIL_CHARS]

    async def _post_once(self, payload: bytes, model: str, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProviderTimeout("provider call exceeded its timeout", model=model)
        timeout = httpx.Timeout(remaining, connect=min(remaining, _CONNECT_TIMEOUT_S))
        try:
            async with asyncio.timeout(remaining):
                response = await self._http.post(
                    f"{self.base_url}/chat/completions",
                    content=payload,
                    headers=self._headers(),
                    timeout=timeout,
                )
        except httpx.ConnectTimeout as e:
            raise ProviderUnavailable(
                "provider connection timed out", model=model, detail=type(e).__name__
            ) from None
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderTimeout(
                f"provider call exceeded its timeout of {remaining:.2f}s", model=model
            ) from None
        except httpx.TransportError as e:
            raise ProviderUnavailable(
                "provider connection failed",
                model=model,
                detail=self._redact(f"{type(e).__name__}: {e}"),
            ) from None
        return self._check_status(response, model)

    def _check_status(self, response: httpx.Response, model: str) -> dict[str, Any]:
        status = response.status_code
        if 200 <= status < 300:
            try:
                data = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                raise ProviderBadResponse(
                    "provider answered with a body that is not JSON",
                    model=model,
                    status_code=status,
                    detail=self._redact(response.text),
                ) from None
            if not isinstance(data, dict):
                raise ProviderBadResponse(
                    "provider answered with a JSON body that is not an object",
                    model=model,
                    status_code=status,
                )
            if "error" in data and not data.get("choices"):
                # OpenRouter reports some upstream failures as 200 + {"error": {...}}.
                err = data["error"] if isinstance(data["error"], dict) else {}
                code = err.get("code")
                code = code if isinstance(code, int) else 502
                return self._raise_for(code, model, orjson.dumps(data).decode(), None)
            return data
        return self._raise_for(status, model, response.text, response.headers.get("retry-after"))

    def _raise_for(
        self, status: int, model: str, body: str, retry_after: str | None
    ) -> dict[str, Any]:
        detail = self._redact(body)
        if status in (401, 403):
            raise ProviderAuthError(
                "provider rejected the credential", model=model, status_code=status, detail=detail
            )
        if status == 429:
            raise ProviderRateLimited(
                "provider rate limit",
                model=model,
                status_code=status,
                detail=detail,
                retry_after_s=_parse_retry_after(retry_after),
            )
        if status == 408:
            raise ProviderTimeout(
                "provider timed out the request", model=model, status_code=status, detail=detail
            )
        if status >= 500:
            raise ProviderUnavailable(
                "provider unavailable", model=model, status_code=status, detail=detail
            )
        raise ProviderBadResponse(
            "provider refused the request", model=model, status_code=status, detail=detail
        )

    def _parse(self, data: dict[str, Any], model: str, latency_ms: float) -> ChatResult:
        def bad(why: str) -> ProviderBadResponse:
            return ProviderBadResponse(
                f"malformed chat completion: {why}",
                model=model,
                detail=self._redact(orjson.dumps(data).decode()),
            )

        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise bad("no choices")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise bad("choice without a message")
        text = _content_text(message.get("content"))
        if text is False:
            raise bad("message content is neither text nor text parts")

        raw_calls = message.get("tool_calls") or []
        if not isinstance(raw_calls, list):
            raise bad("tool_calls is not a list")
        tool_calls = [_tool_call(c, i) for i, c in enumerate(raw_calls)]
        if any(tc is None for tc in tool_calls):
            raise bad("tool call without a function name")

        raw_usage = data.get("usage")
        usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
        input_tokens = _int(usage.get("prompt_tokens"))
        output_tokens = _int(usage.get("completion_tokens"))
        raw_model = data.get("model")
        answered_by = raw_model if isinstance(raw_model, str) and raw_model else model
        cost = reported_cost(usage)
        if cost is None:
            cost = self.price_table.cost(model, input_tokens, output_tokens)
            if cost is None and answered_by != model:
                cost = self.price_table.cost(answered_by, input_tokens, output_tokens)

        assistant: dict[str, Any] = {"role": "assistant", "content": text}
        if raw_calls:
            assistant["tool_calls"] = raw_calls
        if message.get("reasoning_details"):
            # OpenRouter: passing reasoning back keeps multi-turn reasoning coherent.
            assistant["reasoning_details"] = message["reasoning_details"]
        finish = choice.get("finish_reason")
        return ChatResult(
            text=text,  # type: ignore[arg-type]
            tool_calls=[tc for tc in tool_calls if tc is not None],
            cost_usd=cost,
            latency_ms=latency_ms,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=answered_by,
            finish_reason=finish if isinstance(finish, str) else None,
            assistant_message=assistant,
        )


class _StopAtDeadline(stop_base):
    """Stop when the upcoming backoff would end past the caller's deadline: give up with
    the last error instead of sleeping through the budget (tenacity computes the upcoming
    sleep before it asks the stop condition)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return time.monotonic() + (retry_state.upcoming_sleep or 0.0) >= self.deadline


def _content_text(content: Any) -> str | bool | None:
    """Message content as text; False when it is neither text nor a list of text parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "".join(p for p in parts if isinstance(p, str))
    return False


def _tool_call(raw: Any, index: int) -> ToolCall | None:
    if not isinstance(raw, dict):
        return None
    fn = raw.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        return None
    call_id = raw.get("id") if isinstance(raw.get("id"), str) else f"call_{index}"
    args = fn.get("arguments")
    if isinstance(args, dict):
        return ToolCall(id=call_id, name=fn["name"], arguments=args)
    if args is None or (isinstance(args, str) and not args.strip()):
        return ToolCall(id=call_id, name=fn["name"], arguments={})
    if isinstance(args, str):
        try:
            parsed = orjson.loads(args)
        except orjson.JSONDecodeError as e:
            return ToolCall(id=call_id, name=fn["name"], arguments_error=f"invalid JSON: {e}")
        if isinstance(parsed, dict):
            return ToolCall(id=call_id, name=fn["name"], arguments=parsed)
        return ToolCall(id=call_id, name=fn["name"], arguments_error="arguments are not an object")
    return ToolCall(id=call_id, name=fn["name"], arguments_error="arguments are not a JSON string")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and math.isfinite(value):
        return max(int(value), 0)
    return 0


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: rare from LLM APIs; fall back to backoff
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
