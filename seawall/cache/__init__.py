"""Response cache: exact and semantic, with a false-hit guard and coalescing (docs/caching.md)."""
