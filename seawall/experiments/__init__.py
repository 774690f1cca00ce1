"""A/B splits and canary rollouts between models, deployments and prompt
versions (docs/experiments.md)."""
