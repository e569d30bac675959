"""The built-in simulated provider: an OpenAI-compatible server over a fleet of SIMULATED
models with declared accuracy, price, latency and failure modes (offline demo and tests)."""
