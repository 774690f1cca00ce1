"""``seawall router ...``: train a learned router from JSONL and inspect one.

Register with ``main.add_command(router)`` in seawall/cli.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from seawall.routing.complexity.model import RouterModel, RouterModelError
from seawall.routing.complexity.train import (
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
@click.argument("data", nargs=-1, required=True,
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
def train_command(data: tuple[Path, ...], out: Path, kind: str, margin: float,
                  l2: float | None, holdout: float, balance_sources: bool, ood_centroids: int,
                  ood_quantile: float, seed: int) -> None:
    """Train a router on one or more DATA.jsonl files ({"prompt"|"messages",
    "cheap_ok"|"scores"}); each file is one source."""
    try:
        examples = [e for path in data for e in load_examples(path, margin=margin)]
    except ExampleError as e:
        raise click.ClickException(str(e)) from None
    options: dict[str, object] = {"kind": kind, "holdout": holdout, "seed": seed,
                                  "balance_sources": balance_sources,
                                  "ood_centroids": ood_centroids, "ood_quantile": ood_quantile}
    if l2 is not None:
        options["l2"] = l2
    settings = TrainSettings.model_validate(options)
    started = time.perf_counter()
    model = train_router(examples, settings, data_name=", ".join(p.name for p in data))
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
    click.echo(f"wrote {out} (version {version[:12]})")


@router.command("inspect")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def inspect_command(path: Path) -> None:
    """Show a router file's metadata and training summary (not its weights)."""
    try:
        model = RouterModel.load(path)
    except RouterModelError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(model.describe(), indent=2))
