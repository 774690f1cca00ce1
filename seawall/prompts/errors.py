"""The registry's errors, as values with the gateway's error shape.

Request-time errors subclass the gateway's own (``seawall.errors``) so a chat
request gets an OpenAI envelope with a stable code; push-time errors are plain
``ValueError``s that name the field, since they only ever reach an operator.
"""

from __future__ import annotations

from collections.abc import Sequence

from seawall.errors import InvalidRequest, NotFound


class PromptNotFound(NotFound):
    """No such prompt, label or version: 404 ``prompt_not_found``."""

    code = "prompt_not_found"


class MissingVariables(InvalidRequest):
    """A required variable was not sent: 400 naming every missing one."""

    code = "prompt_variable_missing"

    def __init__(self, prompt: str, names: Sequence[str]) -> None:
        listed = ", ".join(names)
        super().__init__(
            f"Prompt {prompt} needs the variable{'s' if len(names) > 1 else ''} {listed}: "
            f"send {'them' if len(names) > 1 else 'it'} in prompt.variables.",
            param=f"prompt.variables.{names[0]}")
        self.names = list(names)


class RenderFailed(InvalidRequest):
    """The template could not be rendered with the variables sent (a missing
    attribute of a variable, a refused access in the sandbox)."""

    code = "prompt_render_failed"


class SpecError(ValueError):
    """A prompt definition is invalid; ``field`` is where (``messages[1].content``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class LabelError(ValueError):
    """A label cannot be set or rolled back (bad name, nothing to roll back to)."""
