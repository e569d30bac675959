"""Request and response models of POST /decide (kept apart, as the house style asks)."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from contracts.classification import Classification
from contracts.taxonomy import ReasoningEffort, Tier

MAX_MESSAGES: Final = 2000
MAX_CONVERSATION_ID: Final = 200

NullReason = Literal[
    "no_routing_table",
    "empty_tier",
    "classifier_timeout",
    "classifier_error",
    "internal_error",
]
"""Why a decision is null; the gateway then serves its own default."""


class DecideMessage(BaseModel):
    """One chat message as the gateway forwards it (OpenAI shape; extra keys are ignored)."""

    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1, max_length=64)
    content: str | list[dict[str, Any] | str] | None = None
    """Text, a list of content parts, or null (assistant turns that only call tools)."""
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = None


class DecideHints(BaseModel):
    """Optional context from the gateway; logged with the decision, never changes the pick."""

    model_config = ConfigDict(extra="allow")

    user_id: str | None = Field(default=None, max_length=200)
    requested_model: str | None = Field(default=None, max_length=200)


class DecideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    conversationId: str = Field(
        min_length=1,
        max_length=MAX_CONVERSATION_ID,
        validation_alias=AliasChoices("conversationId", "conversation_id"),
        description="The gateway's conversation id: the stickiness and cache key.",
    )
    messages: list[DecideMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    hints: DecideHints | None = None


class DecideResponse(BaseModel):
    """A decision, or a null decision (`model` null, `nullReason` set)."""

    decisionId: str
    conversationId: str
    model: str | None
    reasoningEffort: ReasoningEffort | None
    """Serve the model at this pinned effort: the conditions the benchmark measured."""
    tier: Tier | None
    sticky: bool
    """True when the conversation's incumbent was kept over a cheaper fresh pick."""
    classification: Classification | None
    classifierModel: str | None
    classifierSource: Literal["override", "winner", "default"] | None
    classifierCostUsd: float | None
    """Cost of this request's classifier call (bill it to the user); null when cached, not
    called, or not reported (an attempt abandoned at the deadline may still be billed)."""
    classifierOutcome: Literal["ok", "fallback", "timeout", "error", "cached", "not_called"]
    """How the classifier call went; `timeout` and `error` were attempted (billable)."""
    classifierLatencyMs: float | None = None
    """Time this request's classifier call took, inside `latencyMs` (null when no call was
    made): the rest of `latencyMs` is the service's own overhead."""
    classificationCached: bool
    tableVersion: str | None
    nullReason: NullReason | None
    latencyMs: float


# ---- the hot path: the plainly valid request without pydantic ------------------------------

_REQUEST_KEYS: Final = frozenset({"conversationId", "messages", "hints"})
_MESSAGE_FIELDS: Final = ("role", "content", "name", "tool_calls")
_HINT_FIELDS: Final = ("user_id", "requested_model")

FastRequest = tuple[str, list[dict[str, Any]], dict[str, Any] | None]
"""(conversation id, messages, hints) exactly as `DecideRequest` would dump them."""


def parse_fast(data: object) -> FastRequest | None:
    """`data` (parsed JSON) checked by hand against `DecideRequest`, for the hot path.

    Returns what validating with `DecideRequest` and dumping with `exclude_none=True` gives
    (declared fields first, then extras; top-level None values dropped), or None when the
    request is invalid *or merely unusual* (the `conversation_id` alias, odd types): the
    caller then lets `DecideRequest` decide, so every 4xx keeps pydantic's exact errors.
    It accepts a subset of what the model accepts, never more (tests pin the two together).
    """
    if type(data) is not dict or not _REQUEST_KEYS.issuperset(data):
        return None
    cid = data.get("conversationId")
    if type(cid) is not str or not 0 < len(cid) <= MAX_CONVERSATION_ID:
        return None
    raw = data.get("messages")
    if type(raw) is not list or not 0 < len(raw) <= MAX_MESSAGES:
        return None
    messages: list[dict[str, Any]] = []
    for m in raw:
        if type(m) is not dict:
            return None
        role = m.get("role")
        if type(role) is not str or not 0 < len(role) <= 64:
            return None
        out: dict[str, Any] = {"role": role}
        content = m.get("content")
        if content is not None:
            if type(content) is not str and not _content_parts(content):
                return None
            out["content"] = content
        name = m.get("name")
        if name is not None:
            if type(name) is not str or len(name) > 256:
                return None
            out["name"] = name
        tool_calls = m.get("tool_calls")
        if tool_calls is not None:
            if type(tool_calls) is not list or any(type(c) is not dict for c in tool_calls):
                return None
            out["tool_calls"] = tool_calls
        if len(m) > len(out):
            for k, v in m.items():
                if v is not None and k not in _MESSAGE_FIELDS:
                    out[k] = v
        messages.append(out)
    hints = data.get("hints")
    if hints is None:
        return cid, messages, None
    if type(hints) is not dict:
        return None
    kept: dict[str, Any] = {}
    for k in _HINT_FIELDS:
        v = hints.get(k)
        if v is not None:
            if type(v) is not str or len(v) > 200:
                return None
            kept[k] = v
    for k, v in hints.items():
        if v is not None and k not in _HINT_FIELDS:
            kept[k] = v
    return cid, messages, kept


def _content_parts(content: object) -> bool:
    return type(content) is list and all(type(p) is dict or type(p) is str for p in content)
