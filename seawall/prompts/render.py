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

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from seawall.prompts.errors import MissingVariables, RenderFailed, SpecError
from seawall.prompts.model import PromptSpec

__all__ = ["CompiledPrompt", "compile_spec", "environment"]


# Bounds on what one render may build: the sandbox stops Python internals but
# not ``{{ 'a' * 10**9 }}``, ``{{ x|center(10**9) }}`` or ``9**9**9**9``, any of
# which held the event loop and memory for as long as it took.
MAX_RENDER_CHARS = 1_000_000  # one message, rendered
MAX_ARG = 100_000  # a number given to a filter (width, count, length)
_FORMAT_WIDTH = re.compile(r"%[-+ #0]*(\d{6,}|\*)|%[-+ #0]*\d*\.(\d{6,}|\*)")


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, list, tuple)) else None


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with size bounds on ``*``, ``**`` and the
    filters' numeric arguments: an oversized one is a SecurityError (a 400)."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and (
                    right > MAX_ARG or abs(left).bit_length() * right > MAX_ARG * 4):
                raise SecurityError("the power is too large for a prompt template")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                size = _sized(seq)
                if size is not None and isinstance(n, int) and size * n > MAX_RENDER_CHARS:
                    raise SecurityError("the repeated text or list is too large "
                                        f"(over {MAX_RENDER_CHARS:,} items)")
        return super().call_binop(context, operator, left, right)


def _bounded(f: Any, name: str) -> Any:
    def filter_(*args: Any, **kwargs: Any) -> Any:
        for a in (*args[1:], *kwargs.values()):
            if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_ARG:
                raise SecurityError(f"the {name} filter's argument {a} is over {MAX_ARG:,}")
        if name == "format" and args and isinstance(args[0], str) and \
                _FORMAT_WIDTH.search(args[0]):
            raise SecurityError("the format filter's width or precision is too large")
        return f(*args, **kwargs)
    for attr in ("jinja_pass_arg",):  # pass_context / pass_environment markers
        if hasattr(f, attr):
            setattr(filter_, attr, getattr(f, attr))
    return filter_


def environment() -> ImmutableSandboxedEnvironment:
    """The one template dialect: no HTML escaping (prompts are not HTML), and
    block tags eat their own line so ``{% if %}`` does not leave blank lines;
    bounded as :class:`BoundedSandbox` says, and ``lipsum`` to MAX_ARG words."""
    env = BoundedSandbox(
        undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)
    lipsum: Any = env.globals["lipsum"]

    def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:
        if n * max > MAX_ARG:
            raise SecurityError(f"lipsum of {n} paragraphs of up to {max} words is too long")
        return lipsum(n, html, min, max)
    env.globals["lipsum"] = bounded_lipsum
    env.filters = {name: _bounded(f, name) for name, f in env.filters.items()}
    return env


def _render(template: Template, values: Mapping[str, Any]) -> str:
    """The rendered text, refused once it passes MAX_RENDER_CHARS (a loop that
    writes without end stops there, not when memory runs out)."""
    out: list[str] = []
    size = 0
    for piece in template.generate(values):
        size += len(piece)
        if size > MAX_RENDER_CHARS:
            raise SecurityError(f"the rendered message is over {MAX_RENDER_CHARS:,} characters")
        out.append(piece)
    return "".join(out)


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
                text = _render(template, values)
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
