"""The one chat-provider interface the services call (the real client and test doubles)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class ToolCallView(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def arguments(self) -> Mapping[str, Any]: ...


class ChatReply(Protocol):
    @property
    def text(self) -> str | None: ...
    @property
    def tool_calls(self) -> Sequence[ToolCallView]: ...
    @property
    def cost_usd(self) -> float | None: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def assistant_message(self) -> dict[str, Any]:
        """The OpenAI-format assistant message to append to the conversation."""
        ...


class ChatProvider(Protocol):
    """A chat-completion provider: `ProviderClient`, or a scripted double in tests.

    The decide classifier passes `model`, `messages` and `timeout_s` only; the decider
    harness also passes tools, reasoning effort and a seed."""

    async def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        reasoning_effort: str | None = None,
        timeout_s: float | None = None,
        seed: int | None = None,
    ) -> ChatReply: ...
