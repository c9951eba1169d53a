"""Self-hosted contextual-bandit service: gRPC ranking, VW learning, an auditable decision log."""
