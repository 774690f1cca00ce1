"""Templates to messages: Jinja2, sandboxed and strict.

Jinja2 because it is the template language people already write prompts in
(Hugging Face chat templates, most prompt tools); its ``ImmutableSandboxedEnvironment``
refuses attribute access to Python internals (``{{ ''.__class__ }}``) and
mutation of the values it is given, and ``StrictUndefined`` turns a missing
variable into an error instead of an empty string that would silently change
the prompt. Variables are values, never templates: a client cannot inject
template code through them.

Templates are parsed at push time (syntax errors and undeclared variables are
refused then) and compiled once per version, on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from seawall.prompts.errors import MissingVariables, RenderFailed, SpecError
from seawall.prompts.model import PromptSpec

__all__ = ["CompiledPrompt", "compile_spec", "environment"]


def environment() -> ImmutableSandboxedEnvironment:
    """The one template dialect: no HTML escaping (prompts are not HTML), and
    block tags eat their own line so ``{% if %}`` does not leave blank lines."""
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True, slots=True)
class CompiledPrompt:
    ref: str  # name@version, for error messages
    roles: tuple[str, ...]
    templates: tuple[Template, ...]
    required: tuple[str, ...]  # used by a template and without a default, sorted
    defaults: Mapping[str, Any]

    def render(self, variables: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The messages, rendered, without leading or trailing blank lines; a
        message that renders to nothing is left out (so a template can make
        one conditional). Variables the templates do not use are ignored."""
        missing = [n for n in self.required if n not in variables]
        if missing:
            raise MissingVariables(self.ref, missing)
        values = {**self.defaults, **variables} if self.defaults else variables
        out = []
        for role, template in zip(self.roles, self.templates, strict=True):
            try:
                text = template.render(values)
            except SecurityError as e:
                raise RenderFailed(f"Prompt {self.ref}: the template sandbox refused an "
                                   f"operation ({e}).") from None
            except UndefinedError as e:
                raise RenderFailed(f"Prompt {self.ref}: {e} (check prompt.variables).",
                                   param="prompt.variables") from None
            except Exception as e:  # a variable of the wrong type, say: the caller's to fix
                raise RenderFailed(f"Prompt {self.ref} could not be rendered with these "
                                   f"variables: {type(e).__name__}: {e}",
                                   param="prompt.variables") from None
            text = text.strip("\n")
            if text.strip():
                out.append({"role": role, "content": text})
        return out


def compile_spec(spec: PromptSpec, env: ImmutableSandboxedEnvironment,
                 ref: str = "prompt") -> CompiledPrompt:
    """Parse and compile every template. Raises :class:`SpecError` naming the
    message for a syntax error, or the variables a template uses that the
    ``variables`` section (when there is one) does not declare."""
    templates = []
    used: set[str] = set()
    for i, m in enumerate(spec.messages):
        try:
            used |= meta.find_undeclared_variables(env.parse(m.content))
            templates.append(env.from_string(m.content))
        except TemplateSyntaxError as e:
            raise SpecError(spec.field_of(i),
                            f"template syntax error on line {e.lineno}: {e.message}") from None
    if spec.declared and (undeclared := sorted(used - set(spec.variables))):
        raise SpecError("variables", f"the template uses {', '.join(undeclared)}, which "
                        "`variables` does not declare (declare every variable, or drop the "
                        "`variables` section to take them from the templates)")
    defaults = {n: v.default for n, v in spec.variables.items() if not v.required}
    return CompiledPrompt(ref=ref, roles=tuple(m.role for m in spec.messages),
                          templates=tuple(templates), required=tuple(sorted(used - set(defaults))),
                          defaults=defaults)
