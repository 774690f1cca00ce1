"""The versioned prompt registry (docs/prompts.md).

model (what a version is) → render (Jinja2, sandboxed) → store (SQLite) →
registry (the service) ← files (prompts in git), cli, stage (the pipeline),
wire (the request field).

Nothing is imported here on purpose: ``seawall.api.wire`` imports
``seawall.prompts.wire``, and the stage imports ``seawall.api.wire``.
"""
