"""Model providers: the OpenAI-compatible client, its typed errors and the price table."""

from infra.provider.client import ChatResult, ProviderClient, ToolCall
from infra.provider.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from infra.provider.pricing import ModelPrice, PriceTable

__all__ = [
    "ChatResult",
    "ModelPrice",
    "PriceTable",
    "ProviderAuthError",
    "ProviderBadResponse",
    "ProviderClient",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderTimeout",
    "ProviderUnavailable",
    "ToolCall",
]
