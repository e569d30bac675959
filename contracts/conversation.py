"""A conversation reduced to what classification reads: role, optional name, text, tool calls.

Accepts our `ChatMessage` or OpenAI-style mappings (string, null or list-of-parts content,
`tool_calls` on assistant turns), because /decide receives whatever the gateway forwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.cases import ChatMessage

MessageLike = ChatMessage | Mapping[str, Any]
"""One chat message: our model or an OpenAI-style dict."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One message, normalised."""

    role: str
    """system, user, assistant, tool (or whatever role the caller sent)."""
    name: str | None
    """Tool or participant name, if any."""
    text: str
    """Text content; non-text parts appear as `[image_url part]` placeholders."""
    tool_calls: tuple[str, ...]
    """Names of tools an assistant turn called."""

    @property
    def uses_tools(self) -> bool:
        """True for tool results and for assistant turns that call tools."""
        return self.role == "tool" or bool(self.tool_calls)


def turns_of(messages: Sequence[MessageLike]) -> list[Turn]:
    """Normalise messages in order; never raises on odd shapes (they become text)."""
    return [_turn(m) for m in messages]


def _turn(message: MessageLike) -> Turn:
    if isinstance(message, ChatMessage):
        return Turn(message.role, message.name, message.content, ())
    role = message.get("role")
    name = message.get("name")
    return Turn(
        role=role if isinstance(role, str) and role else "user",
        name=name if isinstance(name, str) and name else None,
        text=_text_of(message.get("content")),
        tool_calls=_tool_call_names(message.get("tool_calls")),
    )


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, Mapping):
                if isinstance(part.get("text"), str):
                    pieces.append(part["text"])
                else:
                    pieces.append(f"[{part.get('type', 'unknown')} part]")
            elif isinstance(part, str):
                pieces.append(part)
        return "\n".join(pieces)
    return str(content)


def _tool_call_names(calls: Any) -> tuple[str, ...]:
    if not isinstance(calls, list):
        return ()
    names = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        name = function.get("name") if isinstance(function, Mapping) else None
        names.append(name if isinstance(name, str) and name else "unknown")
    return tuple(names)
