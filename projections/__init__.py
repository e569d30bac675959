"""PostgreSQL projections folded from the event log: migrations, projector, replay, queries.

Entry points: `projections.projector.run_projector` / `project_once`,
`projections.replay.replay` / `swap_in`, `projections.migrate.migrate`, and the read models
in `projections.queries`.
"""
