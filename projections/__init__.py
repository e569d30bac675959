"""PostgreSQL projections folded from the event log: migrations, projector, replay, reads.

Entry points: `projections.projector.run_projector` / `project_once`,
`projections.replay.replay` / `swap_in`, `projections.migrate.migrate`, the one read model
`projections.read_model` and the analyst exports in `projections.export`.
"""
