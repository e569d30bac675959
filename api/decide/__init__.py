"""The decide service's logic, apart from HTTP: classifier resolution and classification,
the live routing state refreshed from Postgres, sessions replicated over Kafka, the decision
emitter, and the orchestration of one /decide answer (`service.DecideService`)."""
