"""Deployment choice and resilience: balancing, circuit breakers, retries,
timeouts, fallback chains, hedging and degraded answers (docs/resilience.md)."""
