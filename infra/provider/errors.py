"""Typed provider errors.

Callers branch on the class, never on message text. Messages carry the model, the HTTP
status and a short, redacted excerpt of the provider's answer — never a credential.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every error raised by the provider client."""

    retryable: bool = False
    """Whether the client's retry policy retries this error."""

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status_code: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.status_code = status_code
        self.detail = detail
        """A short excerpt of the provider's answer, credentials redacted."""

    def __str__(self) -> str:
        parts = [super().__str__()]
        if self.model:
            parts.append(f"model={self.model}")
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.detail:
            parts.append(f"detail={self.detail}")
        return " ".join(parts)


class ProviderTimeout(ProviderError):
    """The call did not complete within its timeout (not retried: the budget is spent)."""


class ProviderRateLimited(ProviderError):
    """HTTP 429 that persisted through every retry."""

    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s


class ProviderAuthError(ProviderError):
    """HTTP 401/403, or a credential name unknown to the settings. Never retried."""


class ProviderBadResponse(ProviderError):
    """A 4xx other than 401/403/429, or a 2xx body that is not a usable chat completion."""


class ProviderUnavailable(ProviderError):
    """HTTP 5xx or a connection failure that persisted through every retry."""

    retryable = True
