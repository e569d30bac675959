"""The worker's three Faust agents, one small class each, owning its tables.

- `commands.CommandAgent`: admin commands -> decided events (+ case jobs).
- `case_jobs.CaseJobAgent`: runs case jobs, retries and dead-letters them.
- `aggregator.Aggregator`: folds each run's events, completes and publishes runs.

`streams.app` wires them onto one Faust app.
"""
