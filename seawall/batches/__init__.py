"""The OpenAI Files and Batch APIs (docs/batches.md)."""
