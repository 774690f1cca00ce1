"""The request field that names a prompt: ``extra_body={"prompt": {...}}``.

Validated with the rest of the request (msgspec, one pass); removed from the
body before it goes upstream. See docs/prompts.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from seawall.prompts.model import LABEL_RE, NAME_RE

__all__ = ["PromptRef"]


class PromptRef(Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Which prompt, which version (a label, default ``production``, or a
    number), and the values of its variables."""

    name: Annotated[str, Meta(pattern=NAME_RE.pattern)]
    variables: dict[str, Any] = {}
    label: Annotated[str, Meta(pattern=LABEL_RE.pattern)] | None = None
    version: Annotated[int, Meta(ge=1)] | None = None

    def __post_init__(self) -> None:
        if self.label is not None and self.version is not None:
            raise ValueError("give `label` or `version`, not both")
