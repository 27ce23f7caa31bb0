"""CLI: train."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from phenosynth.cli._app import (LOCK_TIMEOUT_OPTION, WORKSPACE_OPTION, command, console, lock_workspace,
                                 next_step, progress_bar)
from phenosynth.data.filenames import safe_file_name
from phenosynth.data.workspace import Workspace
from phenosynth.errors import PhenosynthError
from phenosynth.evaluate.metrics import format_mean_sd, mean_sd
from phenosynth.training import TrainConfig, train


def default_run_name(ws: Workspace, config: TrainConfig) -> str:
    """``<backbone>-<regime>[-n<N>]-<mode>-<counter>``: the first counter whose run folder does not exist yet."""
    base = safe_file_name(config.backbone) + f"-{config.regime}"
    if config.regime != "real" and config.n_synthetic:
        base += f"-n{config.n_synthetic}"
    base += f"-{config.mode}"
    k = 1
    while (ws.runs_dir / f"{base}-{k}").exists():
        k += 1
    return f"{base}-{k}"


def unseen_table(df) -> Table:
    """The unseen conditions' top-k of a run's results (its ``unseen_*`` columns), with what was scored."""
    from phenosynth.study.report.unseen_section import unseen_counts

    counts = unseen_counts(df)
    table = Table(title=f"unseen conditions: {counts['conditions']} held out whole, {counts['queries']} photos matched "
                        f"by gallery (leave-one-subject-out; label space {counts['seen']} seen + "
                        f"{counts['conditions']} unseen), {counts['skipped']} skipped (no photo of another subject); "
                        f"mean (SD) over {len(df)} model(s), %")
    ks = ("top1", "top5", "top10", "top30")
    for col in ks:
        table.add_column(col, justify="right")
    table.add_row(*(format_mean_sd(*mean_sd(df[f"unseen_{c}"].tolist())) for c in ks))
    return table


@command("train")
def train_command(
    ctx: typer.Context,
    workspace: Path = WORKSPACE_OPTION,
    backbone: str = typer.Option(
        "mobilenet_v2", "--backbone",
        help="resnet152 | densenet169 | vgg16 | swin_t | clip_vit_b32 | facenet | dlib_resnet128 | mobilenet_v2 | "
             "shape68 | timm:<any timm model>; an ensemble joins names with + (dlib_resnet128+mobilenet_v2)."),
    regime: str = typer.Option("real", "--regime", help="real | synthetic | mixed"),
    n_synthetic: int = typer.Option(None, "--n-synthetic", help="Synthetic images to train on (default: all). More "
                                    "than a fold has is refused unless --allow-fewer."),
    allow_fewer: bool = typer.Option(False, "--allow-fewer",
                                     help="Train on what there is when --n-synthetic is more than a fold has "
                                          "(results.csv records the requested and the actual n)."),
    synthetic_weight: str = typer.Option(
        None, "--synthetic-weight",
        help="--regime mixed: total weight of a class's synthetic images relative to its real photos (1: as much "
             "as the real ones, whatever n is; default: plain concatenation, every image weighs 1). Several, "
             "comma-separated (none = concatenation), are chosen on the validation fold like C: none,1,0.5"),
    selection: str = typer.Option("top-per-class", "--selection",
                                  help="top-per-class | top-global | random | diverse | diverse-score"),
    mode: str = typer.Option("probe", "--mode", help="probe | se-head | finetune | gallery (GestaltMatcher-style "
                             "matching: no fitting; the --regime's training images are the gallery)."),
    nearest: int = typer.Option(None, "--nearest", help="gallery: a condition's distance is the mean of its N "
                                "nearest gallery images (default 1: the first hit)."),
    tta: str = typer.Option("", "--tta", help="Test-time augmentation: flip, gray or flip,gray (every combination "
                            "is averaged: the gallery's embeddings, the heads' probabilities)."),
    weights: str = typer.Option("default", "--weights", help="default | none | PATH to a checkpoint."),
    preprocessing: str = typer.Option("paper", "--preprocessing", help="paper (224, ImageNet stats) | native"),
    validate_on: str = typer.Option("real", "--validate-on", help="real | pool: which images validate."),
    folds: int = typer.Option(5, "--folds", help="Validation folds to run (the workspace's first N)."),
    seed: list[int] = typer.Option([42], "--seed", help="Seed (repeat for several)."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs of se-head / finetune."),
    name: str = typer.Option(None, "--name", help="Run folder under WS/runs (default: from the options + a counter)."),
    lock_timeout: float = LOCK_TIMEOUT_OPTION,
    detector: str = typer.Option(None, "--detector", help="Face setting to use when faces.parquet holds several "
                                 "(default: the only one there)."),
    landmarker: str = typer.Option(None, "--landmarker", "--landmarks",
                                   help="Landmarker of the face setting (with --detector)."),
    privacy_gate: str = typer.Option("on", "--privacy-gate", help="on: skip the non-shareable synthetic images of "
                                     "audited runs (phenosynth audit); off: train on them too (to study the ungated "
                                     "set). Recorded in config.yaml; skipped images in skipped.csv."),
) -> None:
    """Train one configuration under k-fold CV; every fold's model is scored on the held-out real test set.

    Writes WS/runs/NAME/results.csv (one row per fold and seed), config.yaml and skipped.csv. When the split holds
    unseen conditions (split --unseen-fraction), each model also matches their photos by gallery (columns unseen_*)
    and both are printed apart.

    Example: [bold]phenosynth train -w ws --backbone mobilenet_v2 --regime mixed --n-synthetic 400[/]
    """
    if epochs is not None and mode in ("probe", "gallery"):
        raise PhenosynthError(f"--epochs applies to --mode se-head and --mode finetune; {mode} has no epochs.")
    if nearest is not None and mode != "gallery":
        raise PhenosynthError("--nearest applies to --mode gallery.")
    hparams = {"epochs": epochs} if epochs is not None else {"m": nearest} if nearest is not None else {}
    if privacy_gate not in ("on", "off"):
        raise PhenosynthError(f"--privacy-gate must be on or off, not '{privacy_gate}'.")
    config = TrainConfig(
        backbone=backbone, weights=weights, preprocessing=preprocessing, regime=regime, n_synthetic=n_synthetic,
        selection=selection, mode=mode, validate_on=validate_on, folds=folds, seeds=seed,
        hparams=hparams, allow_fewer=allow_fewer, detector=detector,
        landmarker=landmarker, privacy_gate=privacy_gate == "on", tta=[t.strip() for t in tta.split(",") if t.strip()],
        synthetic_weight=None if synthetic_weight is None else [w.strip() for w in synthetic_weight.split(",")],
    )
    ws = Workspace.open(workspace, need_manifest=True)
    lock_workspace(ctx, ws, lock_timeout)
    run = name or default_run_name(ws, config)
    t0 = time.perf_counter()
    with progress_bar(f"Training {run}") as on_progress:
        df = train(ws, config, run, on_progress=on_progress)
    seconds = time.perf_counter() - t0
    trained = sorted(set(int(v) for v in df["n_synthetic"]))  # what the models trained on, not what was asked
    shown_n = str(trained[0]) if len(trained) == 1 else f"{trained[0]}-{trained[-1]}"
    asked = f" (asked {n_synthetic})" if n_synthetic is not None and trained != [n_synthetic] else ""
    unseen = "unseen_top1" in df.columns
    table = Table(title=f"{backbone} · {regime}" + (f" · n={shown_n}{asked}" if regime != "real" else "")
                  + (f" · synthetic weight {synthetic_weight}" if synthetic_weight is not None else "")
                  + f" · {mode}" + (f" · tta {'+'.join(config.tta)}" if config.tta else "")
                  + (" — seen conditions:" if unseen else " —")
                  + f" held-out real test set, mean (SD) over {len(df)} model(s), %")
    for col in ("top1", "top5", "top10", "top30", "macro_f1"):
        table.add_column(col, justify="right")
    table.add_row(*(format_mean_sd(*mean_sd(df[c].tolist())) for c in ("top1", "top5", "top10", "top30", "macro_f1")))
    console.print(table)
    if unseen:
        console.print(unseen_table(df))
    skipped = int(df["n_skipped"].max()) if len(df) else 0
    console.print(
        f"{len(df)} model(s) on {int(df['n_train'].mean())} training images (mean), {int(df['n_test'].iloc[0])} test "
        f"images, {int(df['n_classes'].iloc[0])} classes; {skipped} image(s) skipped per fold (see skipped.csv). "
        f"Chosen hyper-parameters: {', '.join(sorted(set(df['hparams'])))}. {seconds:.1f} s. "
        f"Results: {ws.runs_dir / run / 'results.csv'}"
    )
    next_step(f"phenosynth report {ws.runs_dir / run}   (tables, figures, report.html), or a whole grid: "
              f"phenosynth study paper -w {ws.root}")
