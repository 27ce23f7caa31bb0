"""CLI: generate, rank."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from phenosynth.cli._app import (LOCK_TIMEOUT_OPTION, WORKSPACE_OPTION, command, console, lock_workspace,
                                 next_step, progress_bar)
from phenosynth.data.workspace import Workspace
from phenosynth.synth.generators import GENERATORS, list_generators


@command("generate")
def generate_command(
    ctx: typer.Context,
    workspace: Path = WORKSPACE_OPTION,
    generator: str = typer.Option("shape-warp", "--generator", "-g", help=" | ".join(list_generators())),
    per_class: int = typer.Option(100, "--per-class", help="Synthetic images per condition."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed and data give the same images."),
    name: str = typer.Option(None, "--name", help="Run name (folder under WS/synthetic; default GENERATOR-seedS)."),
    variation: float = typer.Option(
        None, "--variation", help="Spread of the sampled shapes (1 = as learned)."
    ),
    option: list[str] = typer.Option(
        None, "--option", "-o", help="A generator setting KEY=VALUE (repeatable), e.g. -o k=6 -o strength=1.5."
    ),
    base: str = typer.Option(None, "--base", help="dreambooth, dreambooth-lora: the Stable Diffusion 1.5 base model "
                             "(a diffusers folder, a .safetensors checkpoint, or a hub id in the local HF cache)."),
    workers: int = typer.Option(None, "--workers", help="Processes (default: every core)."),
    executor: str = typer.Option("local", "--executor", help="local | ray: with ray, a GPU generator (dreambooth, "
                                 "dreambooth-lora) trains and samples each condition as a Ray task with one GPU."),
    lock_timeout: float = LOCK_TIMEOUT_OPTION,
    detector: str = typer.Option(None, "--detector", help="Face setting whose landmarks the generator learns from, "
                                 "when faces.parquet holds several (default: the only one there)."),
    landmarker: str = typer.Option(None, "--landmarker", "--landmarks", help="Landmarker of that face setting."),
) -> None:
    """Make synthetic faces per condition from the real training faces (after `split` and `faces`).

    Images go to WS/synthetic/RUN/, and into the manifest with their parents (the training photos they were made
    from) and parameters. Test images are never a generator's input. Run `phenosynth faces -w WS` afterwards so the
    new images get landmarks, then `phenosynth rank -w WS`.

    shape-warp warps the patients' own photos (augmentation, not privacy-preserving); phenotype-transfer puts each
    condition's shape phenotype on donor faces (ingest --donors) or, without donors, on morphs of k patients.
    fastgan trains a GAN from scratch (a GPU for real use; -o mode=unconditional|conditional, -o iterations=N,
    checkpoints and resume under WS/synthetic/RUN/models/).

    dreambooth (full fine-tune, RDFace's recipe) and dreambooth-lora fine-tune Stable Diffusion per condition
    (pip install 'phenosynth\\[diffusion]'; a GPU turns hours into minutes); their models go to WS/synthetic/RUN/models.

    Example: [bold]phenosynth generate -w ws --generator phenotype-transfer --per-class 30 -o k=6[/]

    Example: [bold]phenosynth generate -w ws --generator dreambooth-lora --base ~/sd15 --per-class 100 -o rank=8[/]
    """
    from phenosynth.faces.facepass import load_faces
    from phenosynth.synth.generation import generate

    GENERATORS.get(generator)  # a typo fails before anything is loaded
    ws = Workspace.open(workspace, need_manifest=True)
    lock_workspace(ctx, ws, lock_timeout)
    options = {"variation": variation, "base": base, **generator_options(option or [])}
    faces = load_faces(ws, detector, landmarker) if ws.faces_path.exists() else None
    with progress_bar(f"Generating ({generator})") as on_progress:
        s = generate(ws, generator, per_class=per_class, seed=seed, name=name, options=options, n_jobs=workers,
                     faces=faces, on_progress=on_progress, executor=executor)
    counts = sorted(s.per_class.values())
    console.print(
        f"Run [bold]{s.run}[/]: {s.images} images of {s.classes} conditions ({counts[0]}-{counts[-1]} per condition; "
        f"{s.new_images} new in the manifest) from {s.training_images} real training faces, in {s.seconds:.1f}s "
        f"({s.images_per_second:.1f} images/s on {s.workers} process(es)). Saved under {s.out_dir}."
    )
    if s.blank_redraws:
        console.print(f"{s.blank_redraws} black or blank output(s) were drawn again with new seeds (recorded in each "
                      "image's params and in run.json).")
    if s.resumed_images or s.orphans_removed or s.temp_files_removed:
        console.print(f"An earlier call of run {s.run} was interrupted: {s.resumed_images} of its images were taken "
                      f"as they were, {len(s.orphans_removed)} it made that this call did not were removed, and "
                      f"{s.temp_files_removed} temporary file(s) were removed.")
    if s.classes_without_faces:
        shown = ", ".join(s.classes_without_faces[:5]) + (" ..." if len(s.classes_without_faces) > 5 else "")
        console.print(f"{len(s.classes_without_faces)} condition(s) have no training face and got no synthetic "
                      f"images: {shown}")
    if s.skipped_training:
        console.print(f"{len(s.skipped_training)} training image(s) without usable landmarks were not used "
                      "(reasons in run.json).")
    for note in s.notes:
        console.print(f"[yellow]{note}[/]")
    next_step(f"phenosynth faces -w {ws.root}   then   phenosynth rank -w {ws.root}")


def generator_options(pairs: list[str]) -> dict[str, object]:
    """``["k=6", "strength=1.5"]`` -> ``{"k": 6, "strength": 1.5}`` (values read as YAML scalars)."""
    import yaml

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--option")
        out[key.strip()] = yaml.safe_load(value)
    return out


@command("rank")
def rank_command(
    ctx: typer.Context,
    workspace: Path = WORKSPACE_OPTION,
    representation: str = typer.Option(
        "rdface25", "--representation", "-r", help="rdface25 | shape68 | embed:BACKBONE (e.g. embed:mobilenet_v2)."
    ),
    lock_timeout: float = LOCK_TIMEOUT_OPTION,
    detector: str = typer.Option(None, "--detector", help="Face setting to rank with when faces.parquet holds "
                                 "several (default: the only one there)."),
    landmarker: str = typer.Option(None, "--landmarker", "--landmarks", help="Landmarker of that face setting."),
) -> None:
    """Score every synthetic image by cosine similarity to its condition's prototype (mean of the real training
    images' representations) -> WS/ranking.parquet, used by `train --selection`.

    Example: [bold]phenosynth rank -w ws --representation rdface25[/]
    """
    from phenosynth.synth.ranking import check_representation, rank

    check_representation(representation)  # a typo fails before the progress bar starts
    ws = Workspace.open(workspace, need_manifest=True)
    lock_workspace(ctx, ws, lock_timeout)
    with progress_bar(f"Ranking ({representation})") as on_progress:
        s = rank(ws, representation, detector=detector, landmarker=landmarker, on_progress=on_progress)
    if s.per_class_mean:
        ordered = sorted(s.per_class_mean.items(), key=lambda kv: kv[1])
        table = Table(title="Mean rank score per condition (lowest and highest)")
        table.add_column("condition")
        table.add_column("mean cosine", justify="right")
        shown = ordered if len(ordered) <= 6 else ordered[:3] + ordered[-3:]
        for label, v in shown:
            table.add_row(label, f"{v:.4f}")
        console.print(table)
    skipped = "; ".join(f"{n} {why}" for why, n in s.not_ranked.items()) or "none"
    console.print(
        f"Ranked {s.ranked} synthetic images of {s.classes} conditions by {s.representation}: mean cosine "
        f"{s.mean_score:.4f} (median {s.median_score:.4f}); own condition nearest for {s.own_class_top1:.1%}. "
        f"Not ranked: {skipped}. Written to {s.path}."
    )
    next_step(f"phenosynth train -w {ws.root} --regime mixed --selection top-per-class   or   "
              f"phenosynth study paper -w {ws.root}")
