"""Judge one answer with one rubric: render the rubric, ask the judge model,
parse its verdict. Shared by the judge jobs, ``seawall eval run`` and the
benchmarks, so all three measure the same thing."""

from __future__ import annotations

from dataclasses import dataclass

from seawall.config import RubricRef
from seawall.prompts.registry import PromptRegistry
from seawall.quality.judge_call import JudgeCaller
from seawall.quality.rubrics import (
    BUILTIN_SCALE,
    JudgeItem,
    MalformedVerdict,
    builtin_messages,
    parse_verdict,
    template_variables,
    verdict_format,
)


@dataclass(frozen=True, slots=True)
class Rubric:
    """A rubric as configured: built-in (``prompt`` None) or a registry template."""

    name: str
    scale_max: float = BUILTIN_SCALE
    prompt: str | None = None  # "name@label" or "name@version"

    @classmethod
    def of(cls, spec: str | RubricRef) -> Rubric:
        if isinstance(spec, str):
            return cls(spec)
        return cls(spec.rubric, spec.scale_max, spec.prompt)


@dataclass(frozen=True, slots=True)
class Judged:
    score: float
    reasoning: str
    rubric_version: str
    cost_usd: float


class JudgeFailed(Exception):
    """A verdict could not be had; ``cost_usd`` is what trying cost."""

    def __init__(self, reason: str, cost_usd: float = 0.0) -> None:
        super().__init__(reason)
        self.cost_usd = cost_usd


async def judge_one(caller: JudgeCaller, prompts: PromptRegistry | None, model: str,
                    rubric: Rubric, item: JudgeItem, *, timeout_s: float,
                    max_tokens: int, json_schema: bool = False,
                    reasoning_chars: int = 200) -> Judged:
    """The verdict on ``item``; JudgeFailed (retryable) when there is none,
    NotApplicable when the rubric does not apply."""
    version = "builtin"
    if rubric.prompt is None:
        messages = builtin_messages(rubric.name, item)
    else:
        if prompts is None:
            raise JudgeFailed(f"rubric {rubric.name!r} needs the prompt registry")
        name, _, which = rubric.prompt.partition("@")
        try:
            resolved = await prompts.aresolve(
                name, None if which.isdigit() or not which else which,
                int(which) if which.isdigit() else None)
            messages = resolved.render(template_variables(item))
        except Exception as e:  # noqa: BLE001 - a missing/bad template is the rubric's failure
            raise JudgeFailed(f"rubric {rubric.name!r}: prompt {rubric.prompt!r}: "
                              f"{getattr(e, 'message', None) or e}"[:500]) from e
        version = resolved.ref
    try:
        answer = await caller.ask(
            model, messages, timeout_s=timeout_s, max_tokens=max_tokens,
            response_format=(verdict_format(rubric.scale_max, reasoning_chars) if json_schema
                             else None))
    except Exception as e:  # noqa: BLE001
        raise JudgeFailed(str(e)) from e
    try:
        verdict = parse_verdict(answer.text, rubric.scale_max)
    except MalformedVerdict as e:
        raise JudgeFailed(f"malformed verdict: {e}", answer.cost_usd) from e
    return Judged(verdict.score, verdict.reasoning, version, answer.cost_usd)
