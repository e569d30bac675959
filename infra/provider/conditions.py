"""What a benchmark measures under, read from the provider itself.

The simulated provider names the latency scale it serves at in a response header; a run
records it (with the endpoint and /decide's classifier deadline) on RunStarted, and
`provenroute serve` compares the winner's run with the provider it calls itself: a p95
measured at latency scale 0.1 says nothing about a provider at scale 1.0.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import httpx

from contracts.events.runs import MeasurementConditions

if TYPE_CHECKING:
    from infra.settings import Settings

log = logging.getLogger(__name__)

SIM_LATENCY_SCALE_HEADER: Final = "X-Provenroute-Sim-Latency-Scale"
"""Response header of the simulated provider: the latency scale it serves at."""


async def probe_conditions(settings: Settings, timeout_s: float = 3.0) -> MeasurementConditions:
    """The conditions a call through `settings` meets now (one GET of the model list; an
    unreachable provider or a real one leaves the latency scale unknown)."""
    base = settings.provider_base_url.rstrip("/")
    scale: float | None = None
    try:
        key = settings.provider_api_key.get_secret_value()
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            r = await client.get(f"{base}/models", headers={"Authorization": f"Bearer {key}"})
        raw = r.headers.get(SIM_LATENCY_SCALE_HEADER)
        scale = float(raw) if raw else None
    except (httpx.HTTPError, ValueError) as e:
        log.warning("could not read the provider's conditions at %s: %s", base, type(e).__name__)
    return MeasurementConditions(
        provider_base_url=base,
        simulated_latency_scale=scale,
        classifier_deadline_ms=settings.classifier_deadline_ms,
    )
