"""``seawall eval run``: judge a stored dataset or a slice of past traces,
offline, with the same rubrics and judge models as the background judges
(docs/quality.md, "Judges offline")."""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import click
import orjson

from seawall.cli_common import config_option, run_on_store, settings_from
from seawall.config import BUILTIN_RUBRICS, JudgeSettings, Settings
from seawall.quality.judging import JudgeFailed, Rubric, judge_one
from seawall.quality.rubrics import JudgeItem, NotApplicable
from seawall.quality.sampling import MAX_SOURCES, cut, transcript
from seawall.quality.score_store import Score
from seawall.quality.trace_view import document

MAX_DATASET_ROWS = 100_000
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def since_time(value: str, now: float) -> float:
    """``24h``, ``7d``, ``30m``, ``90s`` ago, or a unix time."""
    m = _DURATION.match(value.strip())
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter("a duration such as 24h, 7d, 30m, or a unix time",
                                 param_hint="--since") from None


def dataset_rows(path: Path, max_chars: int) -> list[tuple[str, JudgeItem, str]]:
    """(id, item, model) per JSONL line: input, output, optional reference, sources."""
    rows: list[tuple[str, JudgeItem, str]] = []
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if len(rows) >= MAX_DATASET_ROWS:
                raise click.ClickException(f"{path}: more than {MAX_DATASET_ROWS} rows")
            try:
                d = orjson.loads(line)
                if not isinstance(d, dict):
                    raise ValueError("not an object")
                inp, out = d["input"], d["output"]
            except (ValueError, KeyError) as e:
                raise click.ClickException(f"{path}:{n}: needs a JSON object with input and "
                                           f"output ({e})") from None
            text = transcript(inp, max_chars) if isinstance(inp, list) else cut(str(inp),
                                                                              max_chars)
            sources = [cut(str(s.get("text", s) if isinstance(s, dict) else s), max_chars)
                       for s in (d.get("sources") or [])[:MAX_SOURCES]]
            ref = d.get("reference")
            rows.append((str(d.get("id", n)), JudgeItem(
                text, cut(str(out), max_chars), None if ref is None else cut(str(ref), max_chars),
                sources), str(d.get("model") or f"dataset:{path.stem}")))
    return rows


def trace_item(row: dict[str, Any], max_chars: int) -> JudgeItem | None:
    doc = document(row)
    if doc.get("status") != 200 or not doc.get("output") or doc.get("input") is None:
        return None  # failed, or content not stored (observe.traces.store_content)
    rag = doc.get("rag") or {}
    sources = [cut(str(c["text"]), max_chars) for c in (rag.get("chunks") or [])[:MAX_SOURCES]
               if isinstance(c, dict) and c.get("text")]
    return JudgeItem(transcript(doc["input"], max_chars), cut(str(doc["output"]), max_chars),
                     None, sources)


def _judge_spec(settings: Settings, name: str | None, model: str | None,
                rubrics: tuple[str, ...]) -> JudgeSettings:
    if name is not None:
        found = next((j for j in settings.quality.judges if j.name == name), None)
        if found is None:
            known = ", ".join(j.name for j in settings.quality.judges) or "none configured"
            raise click.BadParameter(f"no judge {name!r} in quality.judges ({known})",
                                     param_hint="--judge")
        spec = found
    elif model is not None:
        spec = JudgeSettings(name="eval", judge_model=model)
    elif settings.quality.judges:
        spec = settings.quality.judges[0]
    else:
        raise click.UsageError("say which judge: --judge NAME (from quality.judges) or "
                               "--judge-model MODEL")
    update: dict[str, Any] = {}
    if model is not None:
        update["judge_model"] = model
    if rubrics:
        update["rubrics"] = list(rubrics)
    spec = spec.model_copy(update=update)
    if spec.judge_model not in settings.models:
        raise click.BadParameter(f"{spec.judge_model!r} is not a model in the config",
                                 param_hint="--judge-model")
    return spec


@click.group("eval")
def eval_group() -> None:
    """Judge answers offline (datasets, past traces)."""


@eval_group.command("run")
@config_option
@click.option("--dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSONL, one answer a line: input (text or messages), output, optional "
                   "reference, sources, id, model.")
@click.option("--since", help="Traces instead: since a duration ago (24h, 7d) or unix time.")
@click.option("--model", "trace_model", help="Traces of this model only.")
@click.option("--limit", type=click.IntRange(1, MAX_DATASET_ROWS), default=100,
              show_default=True, help="At most this many answers.")
@click.option("--judge", "judge_name", help="A judge of quality.judges (its model, rubrics).")
@click.option("--judge-model", help="The judge model (a chat model in the config).")
@click.option("--rubric", "rubrics", multiple=True,
              type=click.Choice(BUILTIN_RUBRICS), help="Built-in rubric (repeatable).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--write", is_flag=True, help="Store the scores (traces: on their trace; "
              "dataset rows: trace id dataset:<file>:<id>).")
@click.option("--json", "as_json", is_flag=True, help="Print one verdict per line as JSON.")
def eval_run(config: str | None, dataset: Path | None, since: str | None,
             trace_model: str | None, limit: int, judge_name: str | None,
             judge_model: str | None, rubrics: tuple[str, ...], concurrency: int, write: bool,
             as_json: bool) -> None:
    """Judge a dataset (--dataset) or past traces (--since/--model/--limit)."""
    settings = settings_from(config)
    if (dataset is None) == (since is None and trace_model is None):
        raise click.UsageError("give either --dataset FILE or a trace slice (--since, --model)")
    spec = _judge_spec(settings, judge_name, judge_model, rubrics)

    async def go(stores: Any) -> list[Score]:
        from seawall.prompts.registry import PromptRegistry
        from seawall.providers.registry import ModelRegistry
        from seawall.quality.judge_call import JudgeCaller
        from seawall.routing.router import Router

        if dataset is not None:
            items = [(f"dataset:{dataset.stem}:{i}", it, m, "default")
                     for i, it, m in dataset_rows(dataset, spec.max_chars)][:limit]
        else:
            cutoff = since_time(since, time.time()) if since else 0.0
            rows = await stores.main.recent_traces(min(MAX_DATASET_ROWS, limit * 20))
            items = []
            for row in reversed(rows):  # newest first
                if row["started_at"] < cutoff or (trace_model and row["model"] != trace_model):
                    continue
                if (it := trace_item(row, spec.max_chars)) is not None:
                    items.append((row["trace_id"], it, row["model"], row["tenant"]))
                if len(items) >= limit:
                    break
        registry = ModelRegistry(settings)
        await registry.start()
        prompts = PromptRegistry(stores.prompt_store())
        await asyncio.to_thread(prompts.store.open)
        scores = stores.scores()
        await scores.open()
        caller = JudgeCaller(registry, Router(registry, settings.resilience))
        gate = asyncio.Semaphore(concurrency)
        out: list[Score] = []

        async def one(tid: str, item: JudgeItem, model: str, tenant: str,
                      rubric: Rubric) -> None:
            s = Score(trace_id=tid, judge=spec.name, rubric=rubric.name, tenant=tenant,
                      model=model, score=None, scale_max=rubric.scale_max,
                      judge_model=spec.judge_model, created_at=time.time())
            async with gate:
                for attempt in range(1, spec.max_attempts + 1):
                    s.attempts = attempt
                    try:
                        j = await judge_one(caller, prompts, spec.judge_model, rubric, item,
                                            timeout_s=spec.timeout_s,
                                            max_tokens=spec.max_tokens,
                                            json_schema=spec.json_schema)
                    except NotApplicable:
                        return
                    except JudgeFailed as e:
                        s.status, s.reasoning = "failed", str(e)[:1000]
                        s.cost_usd += e.cost_usd
                        continue
                    s.status, s.score, s.reasoning = "ok", j.score, j.reasoning
                    s.rubric_version, s.cost_usd = j.rubric_version, s.cost_usd + j.cost_usd
                    break
            if write:
                await scores.put(s)
            if as_json:
                click.echo(orjson.dumps(s.to_json()).decode())
            out.append(s)

        try:
            await asyncio.gather(*(one(tid, it, m, t, Rubric.of(r))
                                   for tid, it, m, t in items for r in spec.rubrics))
        finally:
            await registry.close()
            await scores.close()
            prompts.close()
        return out

    scored = run_on_store(go, settings, whole=True)
    _summary(scored, spec, write)


def _summary(scored: list[Score], spec: JudgeSettings, wrote: bool) -> None:
    by: dict[str, list[Score]] = defaultdict(list)
    for s in scored:
        by[s.rubric].append(s)
    click.echo(f"\njudge {spec.name} (model {spec.judge_model})"
               + ("; scores stored" if wrote else ""))
    click.echo(f"{'rubric':16} {'judged':>7} {'failed':>7} {'mean':>6} {'>=4/5':>6} "
               f"{'cost $':>10}")
    for rubric, rows in sorted(by.items()):
        ok = [s for s in rows if s.status == "ok"]
        fr = [s.fraction for s in ok if s.fraction is not None]
        mean = sum(s.score or 0 for s in ok) / len(ok) if ok else float("nan")
        good = sum(f >= 0.8 for f in fr) / len(fr) if fr else float("nan")
        click.echo(f"{rubric:16} {len(ok):7d} {len(rows) - len(ok):7d} {mean:6.2f} "
                   f"{good:6.0%} {sum(s.cost_usd for s in rows):10.6f}")
    if not scored:
        click.echo("(nothing to judge: no matching answers with stored content)")
