"""The judges' pure parts: verdict parsing, matching and payload bounds."""

from __future__ import annotations

import pytest

from seawall.api.wire import ChatCompletionRequest, convert
from seawall.config import ConfigError, JudgeSettings, parse_settings
from seawall.observe.records import TraceRecord
from seawall.pipeline.context import RequestContext
from seawall.quality.rubrics import (
    JudgeItem,
    MalformedVerdict,
    NotApplicable,
    builtin_messages,
    parse_verdict,
)
from seawall.quality.sampling import (
    Matcher,
    payload,
    replay_payload,
    resampled,
    sampled,
    transcript,
)


@pytest.mark.parametrize("text,score,why", [
    ('{"score": 4, "reasoning": "ok"}', 4, "ok"),
    ('Sure!\n```json\n{"score": "5", "reasoning": "great"}\n```\nHope it helps', 5, "great"),
    ('{"note": {"x": 1}} then {"score": 2.5}', 2.5, ""),
    ('{"score": 9} no, I mean {"score": 3, "reason": "meh"}', 3, "meh"),
    ('{"score": 1, "reasoning": "two\nlines" }', 1, "two\nlines"),  # a raw newline
])
def test_a_verdict_is_found_inside_surrounding_text(text: str, score: float, why: str) -> None:
    v = parse_verdict(text, 5)
    assert (v.score, v.reasoning) == (score, why)


@pytest.mark.parametrize("text", [
    "Score: 4/5", "{score: 4}", '{"score": true}', '{"score": 7}', '{"score": "high"}',
    '{"score": NaN}', "", "{" * 10_000,
])
def test_anything_else_is_malformed(text: str) -> None:
    with pytest.raises(MalformedVerdict):
        parse_verdict(text, 5)


def test_rubric_prompts_carry_what_they_judge() -> None:
    item = JudgeItem("2+2?", "5", reference="4", sources=["Two plus two is four."])
    text = builtin_messages("correctness", item)[1]["content"]
    assert "REFERENCE ANSWER:\n4" in text and "ASSISTANT ANSWER:\n5" in text
    assert "[1] Two plus two is four." in builtin_messages("groundedness", item)[1]["content"]
    with pytest.raises(NotApplicable):
        builtin_messages("groundedness", JudgeItem("q", "a"))
    no_ref = builtin_messages("correctness", JudgeItem("q", "a"))[1]["content"]
    assert "REFERENCE" not in no_ref and "Work the problem out" in no_ref


def _ctx_rec(model: str = "m", tenant: str = "t", prompt: str | None = None,
             experiment: str | None = None, text: str = "answer",
             status: int = 200) -> tuple[RequestContext, TraceRecord]:
    raw = {"model": model, "messages": [{"role": "user", "content": "question"}]}
    ctx = RequestContext(endpoint="chat.completions")
    ctx.raw, ctx.request = raw, convert(raw, ChatCompletionRequest)
    if text:
        ctx.gatherer.add({"choices": [{"index": 0, "delta": {"content": text}}]})
    rec = TraceRecord(trace_id="t1", endpoint="chat.completions", started_at=0, tenant=tenant,
                      model=model, status=status, prompt_version=prompt, experiment=experiment)
    return ctx, rec


def _matcher(rate: float = 1.0, **match: list[str]) -> Matcher:
    return Matcher.of(JudgeSettings(name="j", judge_model="x", sample_rate=rate, match=match))


def test_matching_by_each_dimension() -> None:
    assert sampled([_matcher()], *_ctx_rec()) == ["j"]
    assert sampled([_matcher(models=["m"], tenants=["t"])], *_ctx_rec()) == ["j"]
    assert sampled([_matcher(models=["other"])], *_ctx_rec()) == []
    assert sampled([_matcher(tenants=["u"])], *_ctx_rec()) == []
    assert sampled([_matcher(prompts=["faq"])], *_ctx_rec(prompt="faq@3")) == ["j"]
    assert sampled([_matcher(prompts=["faq@2"])], *_ctx_rec(prompt="faq@3")) == []
    assert sampled([_matcher(prompts=["faq"])], *_ctx_rec()) == []
    assert sampled([_matcher(experiments=["exp=b"])], *_ctx_rec(experiment="exp=b")) == ["j"]
    assert sampled([_matcher(experiments=["exp"])], *_ctx_rec(experiment="exp=a")) == ["j"]
    assert sampled([_matcher(routes=["r"])], *_ctx_rec()) == []
    # Errors and empty answers are not judged; rate 0 never, and draws decide the rest.
    assert sampled([_matcher()], *_ctx_rec(status=502)) == []
    assert sampled([_matcher()], *_ctx_rec(text="")) == []
    assert sampled([_matcher(rate=0.0)], *_ctx_rec()) == []
    half = _matcher(rate=0.5)
    ctx, rec = _ctx_rec()
    assert sampled([half], ctx, rec) == (["j"] if half.draw("t1") < 0.5 else [])


def test_the_draw_is_fixed_by_trace_id_and_follows_the_rate() -> None:
    """Deterministic (a replayed record is sampled the same), independent per
    judge, and a rate of 0.2 samples about a fifth of the gateway's trace ids."""
    from seawall.pipeline.context import new_trace_id
    ids = [new_trace_id() for _ in range(20_000)]
    a, b = _matcher(rate=0.2), Matcher.of(JudgeSettings(name="other", judge_model="x",
                                                        sample_rate=0.2))
    picked_a = {i for i in ids if a.draw(i) < 0.2}
    picked_b = {i for i in ids if b.draw(i) < 0.2}
    assert 0.18 < len(picked_a) / len(ids) < 0.22
    assert 0.02 < len(picked_a & picked_b) / len(ids) < 0.06  # independent: ~0.04
    assert {i for i in ids if _matcher(rate=0.2).draw(i) < 0.2} == picked_a  # fixed


def test_a_replayed_record_is_sampled_as_its_answer_was() -> None:
    """The record alone gives the live decision and the payload (journal replay)."""
    ctx, rec = _ctx_rec(prompt="faq@3")
    rec.output, rec.input = "answer", [{"role": "user", "content": "question"}]
    rec.route = {"route": "r", "tier": "small"}
    for m in ([_matcher()], [_matcher(routes=["r"])], [_matcher(prompts=["faq@2"])],
              [_matcher(rate=0.5)], [_matcher(tenants=["u"])]):
        live = sampled(m, ctx, rec) if m[0].routes is None else ["j"]
        assert resampled(m, rec) == live
    p = replay_payload(rec, ["j"], 1000)
    assert (p["trace_id"], p["output"], p["route"]) == ("t1", "answer", "r")
    assert p["input"] == "user: question" and p["reference"] is None
    # Not sampled at the time, so not on replay: errors, cache hits, empty answers.
    for change in ({"status": 502}, {"cache": "hit"}, {"output": ""}, {"output": None},
                   {"endpoint": "embeddings"}):
        _, r = _ctx_rec()
        r.output, r.input = "answer", [{"role": "user", "content": "question"}]
        for k, v in change.items():
            setattr(r, k, v)
        assert resampled([_matcher()], r) == []
    # Content not stored at all: sampled, so that the caller can say it is lost.
    _, r = _ctx_rec()
    assert (r.input, r.output) == (None, None) and resampled([_matcher()], r) == ["j"]


def test_the_payload_is_bounded_whatever_the_request() -> None:
    big = "x" * 50_000
    messages = [{"role": "user", "content": big}] * 200
    text = transcript(messages, 1000)
    assert len(text) < 1200 and "cut" in text
    ctx, rec = _ctx_rec(text=big)
    p = payload(ctx, rec, ["j"], 1000)
    assert len(p["output"]) < 1100 and p["trace_id"] == "t1" and p["sources"] == []


def test_config_checks_judges() -> None:
    base = {"providers": {"f": {"type": "fake"}}, "models": {"m": {"provider": "f"}}}
    ok = parse_settings({**base, "quality": {"judges": [
        {"name": "j", "judge_model": "m", "rubrics": ["safety", {"prompt": "tone@production"}]}]}})
    assert ok.quality.judges[0].rubrics[1].rubric == "tone"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="not a chat model"):
        parse_settings({**base, "quality": {"judges": [{"name": "j", "judge_model": "nope"}]}})
    with pytest.raises(ConfigError, match="unknown rubric 'vibes'"):
        parse_settings({**base, "quality": {"judges": [
            {"name": "j", "judge_model": "m", "rubrics": ["vibes"]}]}})
    with pytest.raises(ConfigError, match="share a name"):
        parse_settings({**base, "quality": {"judges": [
            {"name": "j", "judge_model": "m"}, {"name": "j", "judge_model": "m"}]}})


def test_the_payload_takes_the_records_redacted_content_when_stored() -> None:
    ctx, rec = _ctx_rec(text="mail me at a@b.example")
    rec.input = [{"role": "user", "content": "write to [EMAIL]"}]
    rec.output = "mail me at [EMAIL]"
    p = payload(ctx, rec, ["j"], 1000)
    assert p["input"] == "user: write to [EMAIL]" and p["output"] == "mail me at [EMAIL]"
    rec.input = rec.output = None  # content not stored: the live request's
    p = payload(ctx, rec, ["j"], 1000)
    assert p["input"] == "user: question" and p["output"] == "mail me at a@b.example"
