"""The running service: models, learner thread, reward windows, and the async API over them."""
