"""Model providers: the OpenAI-compatible client, its typed errors and the price table."""

from api.provider.client import ChatResult, ProviderClient, ToolCall
from api.provider.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from api.provider.pricing import ModelPrice, PriceTable

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
