"""``seawall router ...``: train a learned router from JSONL and inspect one.

Register with ``main.add_command(router)`` in seawall/cli.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from seawall.cli_common import config_option, run_on_store, settings_from
from seawall.routing.complexity.from_traces import Collected, collect_examples
from seawall.routing.complexity.model import RouterModel, RouterModelError
from seawall.routing.complexity.train import (
    Example,
    ExampleError,
    TrainSettings,
    load_examples,
    train_router,
)

__all__ = ["router"]


@click.group()
def router() -> None:
    """Cost-aware routing: learned router files."""


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@router.command("train")
@click.argument("data", nargs=-1,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the router file (JSON).")
@click.option("--kind", type=click.Choice(["logistic", "mlp", "knn"]), default="mlp",
              show_default=True, help="Model kind.")
@click.option("--margin", type=float, default=0.0, show_default=True,
              help="With per-tier scores: cheap_ok = cheap >= strong - margin.")
@click.option("--l2", type=float, default=None, help="L2 penalty (default per kind).")
@click.option("--holdout", type=click.FloatRange(0.0, 0.9), default=0.2, show_default=True,
              help="Share held out for the dev metrics.")
@click.option("--balance-sources/--no-balance-sources", default=True, show_default=True,
              help="Weigh each file's cheap-ok and not-ok rows equally.")
@click.option("--ood-centroids", type=click.IntRange(0, 4096), default=512, show_default=True,
              help="Training-prompt centroids stored for `router: combined` (0: none).")
@click.option("--ood-quantile", type=click.FloatRange(0.0, 0.5), default=0.05,
              show_default=True, help="Share of held-out training prompts counted as unfamiliar.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--from-traces", "from_traces", is_flag=True,
              help="Train on the gateway's judged or rated answers of the cheap model "
                   "instead of DATA files (docs/routing.md).")
@click.option("--route", "route_name", help="--from-traces: the route whose first tier is the "
              "cheap model.")
@click.option("--cheap", help="--from-traces: the cheap model (default: --route's first tier).")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="--from-traces: answers of the last this many days.")
@click.option("--good-score", type=click.FloatRange(0.0, 1.0), default=None,
              help="--from-traces: judge scores (fraction of the scale) from this up mean the "
                   "cheap answer was good enough [default: quality.loop.cache_min_score].")
@click.option("--min-examples", type=click.IntRange(min=2), default=100, show_default=True,
              help="--from-traces: refuse to train on fewer labelled answers.")
@config_option
def train_command(data: tuple[Path, ...], out: Path, kind: str, margin: float,
                  l2: float | None, holdout: float, balance_sources: bool, ood_centroids: int,
                  ood_quantile: float, seed: int, from_traces: bool, route_name: str | None,
                  cheap: str | None, days: float, good_score: float | None,
                  min_examples: int, config: str | None) -> None:
    """Train a router on one or more DATA.jsonl files ({"prompt"|"messages",
    "cheap_ok"|"scores"}; each file is one source), or --from-traces: on the
    gateway's answers of the cheap model that a judge scored or a user rated
    (a bad one means the strong model was needed)."""
    if from_traces == bool(data):
        raise click.ClickException("give DATA files or --from-traces (one of the two)")
    if from_traces:
        examples = _examples_from_traces(config, route_name, cheap, days, good_score,
                                         min_examples)
        data_name = "traces"
    else:
        try:
            examples = [e for path in data for e in load_examples(path, margin=margin)]
        except ExampleError as e:
            raise click.ClickException(str(e)) from None
        data_name = ", ".join(p.name for p in data)
    options: dict[str, object] = {"kind": kind, "holdout": holdout, "seed": seed,
                                  "balance_sources": balance_sources,
                                  "ood_centroids": ood_centroids, "ood_quantile": ood_quantile}
    if l2 is not None:
        options["l2"] = l2
    settings = TrainSettings.model_validate(options)
    started = time.perf_counter()
    model = train_router(examples, settings, data_name=data_name)
    version = model.save(out)
    summary = model.training
    click.echo(f"trained {kind} router on {summary['n']} examples "
               f"(cheap ok {summary['cheap_ok_rate']:.1%}) in "
               f"{time.perf_counter() - started:.1f} s")
    dev = summary.get("dev") or {}
    if dev:
        click.echo("dev (held out " + str(summary["n_dev"]) + "): " + ", ".join(
            f"{k} {_fmt(v)}" for k, v in dev.items() if k != "n"))
    else:
        click.echo("dev: not measured (holdout empty or one class only)")
    if model.ood is not None:
        click.echo(f"out-of-distribution reference: {model.ood.centroids.shape[0]} centroids, "
                   f"similarity cut-off {model.ood.cutoff:.3f} "
                   f"({model.ood.quantile:.0%} of held-out prompts below it)")
    if model.kind_ref is not None:
        click.echo(f"task-kind ranges: {len(model.kind_ref.low)} features, at most "
                   f"{model.kind_ref.allowance} outside for a familiar prompt")
    if "calibrated_on" in summary:
        click.echo(f"score calibrated (Platt) on {summary['calibrated_on']} held-out examples")
    click.echo(f"wrote {out} (version {version[:12]})")


def _examples_from_traces(config: str | None, route_name: str | None, cheap: str | None,
                          days: float, good_score: float | None,
                          min_examples: int) -> list[Example]:
    settings = settings_from(config)
    if cheap is None:
        route = settings.routes.get(route_name or "")
        if route is None:
            raise click.ClickException("--from-traces needs --cheap MODEL or --route NAME (a "
                                       "route under `routes` in the configuration)")
        cheap = route.tiers[0]
    scale = settings.feedback.scale
    loop = settings.quality.loop
    negative_below = (loop.feedback_threshold if loop.feedback_threshold is not None
                      else (scale.min + scale.max) / 2)
    threshold = loop.cache_min_score if good_score is None else good_score

    async def go(stores: Any) -> Collected:
        scores, feedback = stores.scores(), stores.feedback()
        await scores.open()
        await feedback.open()
        try:
            return await collect_examples(stores.main, scores, feedback, cheap, days=days,
                                          good_score=threshold, negative_below=negative_below)
        finally:
            await scores.close()
            await feedback.close()

    got: Collected = run_on_store(go, settings, whole=True)
    n = len(got.examples)
    click.echo(f"traces: {got.scanned} records read, {got.cheap} answers of {cheap} with "
               f"their input, {got.judged} judged, {got.rated} rated", err=True)
    if n < min_examples:
        raise click.ClickException(
            f"only {n} labelled answers of {cheap} in the last {days:g} days (need "
            f"--min-examples {min_examples}): judge more of its traffic (quality judges) or "
            "collect feedback (POST /v1/feedback), or lower --min-examples")
    labels = {e.cheap_ok for e in got.examples}
    if len(labels) < 2:
        which = "good enough" if labels == {1.0} else "not good enough"
        raise click.ClickException(f"all {n} labelled answers say {cheap} was {which}: "
                                   "a router needs both kinds")
    return got.examples


@router.command("inspect")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), required=False)
def inspect_command(path: Path | None) -> None:
    """Show a router file's metadata and training summary (not its weights);
    without PATH, the router shipped with Seawall (`router: combined`'s default)."""
    from seawall.routing.complexity.shipped import SHIPPED_ROUTER

    try:
        model = RouterModel.load(path or SHIPPED_ROUTER)
    except RouterModelError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(model.describe(), indent=2))
