"""CLI: ingest, split, manifest."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from phenosynth.cli._app import (LOCK_TIMEOUT_OPTION, WORKSPACE_OPTION, command, console, lock_workspace,
                                 next_step, progress_bar)
from phenosynth.data import manifest as mf
from phenosynth.data.imageio import DEFAULT_MAX_PIXELS
from phenosynth.data.workspace import Workspace
from phenosynth.errors import PhenosynthError


@command("ingest")
def ingest_command(
    ctx: typer.Context,
    src: Path = typer.Argument(..., help="A folder (one sub-folder per class) or a .csv/.tsv table."),
    workspace: Path = WORKSPACE_OPTION,
    layout: str = typer.Option("auto", help="auto | folder | csv | rdface-syn (a synthetic set, one folder per class)"),
    synthetic: bool = typer.Option(False, "--synthetic", help="An external synthetic set (labels matched to real classes)."),
    generator: str = typer.Option(None, help="Name of the generator that made a --synthetic set, e.g. rdface-syn."),
    donors: bool = typer.Option(
        False, "--donors",
        help="Donor faces: non-patients who lend identities (no label, never split; one sub-folder per person).",
    ),
    path_col: str = typer.Option("path", help="csv layout: column holding image paths."),
    label_col: str = typer.Option("label", help="csv layout: column holding class labels."),
    subject_col: str = typer.Option(None, help="csv layout: column holding subject ids (default: 'subject_id' if present)."),
    subject_regex: str = typer.Option(
        None, help="Regex on the path relative to SRC whose first group is the subject id, e.g. '([^/]+)_\\d+\\.png$'."
    ),
    on_conflict: str = typer.Option("exclude", help="Identical bytes under two labels: exclude | first."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, help="Decompression-bomb limit (width x height)."),
    lock_timeout: float = LOCK_TIMEOUT_OPTION,
) -> None:
    """Bring photos into a workspace: validated, de-duplicated, every skipped file reported with a reason.

    Example: [bold]phenosynth ingest photos/ -w ws[/]   (photos/<condition>/<image>)
    Donor faces: [bold]phenosynth ingest volunteers/ -w ws --donors[/]   (volunteers/<person>/<image>, or flat)
    """
    from phenosynth.data.ingest import LayoutOptions, ingest, workspace_for_ingest

    # The lock is let go before workspace_for_ingest removes a new, still empty workspace after a failure.
    with (workspace_for_ingest(workspace) as ws, ws.lock("phenosynth ingest", timeout=lock_timeout),
          progress_bar("Decoding images") as on_progress):
        result = ingest(
            src, ws, layout=layout, synthetic=synthetic, generator=generator, donors=donors,
            options=LayoutOptions(path_col=path_col, label_col=label_col, subject_col=subject_col,
                                  subject_regex=subject_regex),
            on_conflict=on_conflict, max_pixels=max_pixels, on_progress=on_progress,
        )
    table = Table(title=f"Ingest of {result.source} (layout {result.layout})", show_header=True)
    table.add_column("outcome")
    table.add_column("files", justify="right")
    table.add_row("taken: new", str(result.added))
    table.add_row("taken: already in manifest", str(result.already_present))
    for reason, n in sorted(result.skipped.items()):
        table.add_row(f"skipped: {reason}", str(n))
    console.print(table)
    if result.unknown_labels:
        console.print(f"[yellow]Unknown labels (not among the real classes):[/] {', '.join(result.unknown_labels)}")
    if result.donors_like_patients:
        console.print(f"[yellow]{len(result.donors_like_patients)} donor face(s) excluded[/]: near-duplicates of "
                      "patient photos (a donor must never be a patient; see phenosynth manifest)")
    s = mf.summarize(ws.load_manifest())
    console.print(
        f"Looked at {result.looked_at} files: {result.taken} taken, {sum(result.skipped.values())} skipped "
        f"(each named with its reason in {result.report_path}). The manifest now holds {s['images']} images "
        f"({s['real']} real, {s['synthetic']} synthetic) in {s['classes']} classes"
        + (f", and {s['donors']} donor faces (no class, never split)." if s["donors"] else ".")
    )
    next_step(f"phenosynth split -w {workspace}")


@command("split")
def split_command(
    ctx: typer.Context,
    workspace: Path = WORKSPACE_OPTION,
    test_size: float = typer.Option(0.25, help="Fraction of the splittable real images held out as the test set."),
    folds: int = typer.Option(5, help="Validation folds over the real training images."),
    seed: int = typer.Option(42, help="Random seed (same seed, same split)."),
    unseen_fraction: float = typer.Option(
        0.0, help="Fraction of the conditions held out whole as unseen (never generated from, trained on or folded; "
                  "scored by gallery matching only)."),
    lock_timeout: float = LOCK_TIMEOUT_OPTION,
) -> None:
    """Hold out a real test set (stratified, grouped by subject) and assign k folds over the training images.

    Example: [bold]phenosynth split -w ws --test-size 0.25 --folds 5 --seed 42[/]
    """
    from phenosynth.data.leakage import FIT_ON_TEST, PARENT_IN_TEST
    from phenosynth.data.split import split

    ws = Workspace.open(workspace, need_manifest=True)
    lock_workspace(ctx, ws, lock_timeout)
    r = split(ws, test_size=test_size, folds=folds, seed=seed, unseen_fraction=unseen_fraction)
    table = Table(title="Split", show_header=True)
    for col in ("classes", "train (real)", "test (real)", "test fraction", "synthetic (train only)", "folds"):
        table.add_column(col, justify="right")
    table.add_row(str(r.classes), str(r.n_train), str(r.n_test), f"{r.test_fraction:.3f}", str(r.n_synthetic),
                  f"{r.folds} ({', '.join(map(str, r.images_per_fold))} images)")
    console.print(table)
    absent = r.classes_absent_from_test
    console.print(
        f"{len(absent)} of {r.classes} classes have no test image"
        + (f" ({len(r.singleton_classes)} with a single subject, kept in training)" if r.singleton_classes else "")
        + (f": {', '.join(absent[:10])}{' …' if len(absent) > 10 else ''}" if absent else "")
        + "."
    )
    if r.unseen_conditions:
        console.print(f"{len(r.unseen_conditions)} condition(s) held out whole as unseen ({r.n_unseen} real photos): "
                      f"{', '.join(r.unseen_conditions[:10])}{' …' if len(r.unseen_conditions) > 10 else ''}.")
    if r.near_duplicate_groups:
        console.print(f"[yellow]{len(r.near_duplicate_groups)} near-duplicate group(s) ({r.near_duplicate_images} "
                      f"images under different subjects) kept on one side[/] (listed in {ws.split_report_path})")
    if r.flagged_synthetic:
        n_parent, n_fit = r.flagged_by_reason.get(PARENT_IN_TEST, 0), r.flagged_by_reason.get(FIT_ON_TEST, 0)
        console.print(f"[yellow]{len(r.flagged_synthetic)} synthetic image(s) excluded[/]: {n_parent} made from a photo "
                      f"now in the test set, {n_fit} from a generator run fit on one (listed in {ws.split_report_path})")
    if r.flagged_donors:
        console.print(f"[yellow]{len(r.flagged_donors)} donor face(s) excluded[/]: near-duplicates of patient photos "
                      f"(a donor must never be a patient; listed in {ws.split_report_path})")
    console.print("No subject is on both sides; synthetic images are never in the test set or a fold"
                  + (f"; {r.n_donors} donor faces are never split or folded." if r.n_donors else "."))
    next_step(f"phenosynth faces -w {workspace}")


@command("manifest")
def manifest_command(
    workspace: Path = WORKSPACE_OPTION,
    csv: Path = typer.Option(None, "--csv", help="Also export the manifest to this CSV file."),
) -> None:
    """Show a summary of the workspace manifest and optionally export it as CSV.

    Example: [bold]phenosynth manifest -w ws --csv manifest.csv[/]
    """
    ws = Workspace.open(workspace, need_manifest=True)
    s = mf.summarize(ws.load_manifest())
    table = Table(title=f"Manifest of {ws.root}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("images", "real", "synthetic", "usable", "classes", "subjects"):
        table.add_row(key, str(s[key]))
    if s["donors"]:  # non-patients lending identities: no class, no split, counted apart
        table.add_row("donor faces", str(s["donors"]))
        table.add_row("donor faces usable", str(s["donors_usable"]))
    for split_name, n in s["by_split"].items():
        table.add_row(f"real {split_name}", str(n))
    for reason, n in s["excluded"].items():
        table.add_row(f"excluded: {reason}", str(n))
    console.print(table)
    if csv is not None:
        if csv.exists():
            raise PhenosynthError(f"{csv} exists; choose another file name (nothing is overwritten).")
        ws.export_manifest_csv(csv)
        console.print(f"Manifest exported to {csv}.")
