"""CLI: study, report, demo."""

from __future__ import annotations

from pathlib import Path

import typer

from phenosynth.cli._app import (LOCK_TIMEOUT_OPTION, WORKSPACE_OPTION, command, console, lock_workspace,
                                 next_step, progress_bar)


def _print_table(run_dir: Path) -> None:
    """Table 1 from table.csv; best synthetic-only results in bold."""
    import pandas as pd
    from rich import box
    from rich.table import Table

    path = run_dir / "table.csv"
    if not path.exists():
        return
    df = pd.read_csv(path, keep_default_na=False)
    metrics = [c for c in ("Top-1", "Top-5", "Top-10", "Top-30") if c in df.columns]
    table = Table(title="Top-k accuracy (%) on the held-out real test set, mean (SD) over folds",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Backbone")
    table.add_column("Training data")
    for m in metrics:
        table.add_column(m, justify="right", no_wrap=True)
    prev = None
    for _, row in df.iterrows():
        cells = [row["Backbone"] if row["Backbone"] != prev else "", row["Training data"]]
        prev = row["Backbone"]
        for m in metrics:
            best = str(row.get(f"best_top{m[4:]}", "")).lower() == "true"
            cells.append(f"[bold]{row[m]}[/]" if best else str(row[m]))
        table.add_row(*cells, end_section=False)
    console.print(table)


@command("study")
def study(
    ctx: typer.Context,
    spec: str = typer.Argument(..., help="Study spec YAML, or a shipped spec's name: paper, demo."),
    workspace: Path = WORKSPACE_OPTION,
    name: str = typer.Option(None, "--name", help="Run name (folder under WS/runs/); default: the spec's file name."),
    resume: bool = typer.Option(False, "--resume", help="Finish an interrupted run with the same spec."),
    executor: str = typer.Option("local", "--executor", help="local (one process per core) | ray | serial."),
    address: str = typer.Option(None, "--address", help="Ray cluster to join (e.g. auto); default: a local Ray."),
    workers: int = typer.Option(None, "--workers", help="Parallel cells (default: the number of cores)."),
    lock_timeout: float = LOCK_TIMEOUT_OPTION,
    detector: str = typer.Option(None, "--detector", help="Face setting to use when faces.parquet holds several "
                                 "(overrides the spec's detector:)."),
    landmarker: str = typer.Option(None, "--landmarker", "--landmarks",
                                   help="Landmarker of that face setting (overrides the spec's landmarker:)."),
) -> None:
    """Run a whole study grid (backbones x regimes x n x folds) and write Table 1, Figure 1 and report.html.

    Example: phenosynth study paper -w ws --name paper   (after ingest, split, faces and generate/ingest --synthetic)
    """
    from phenosynth.data.workspace import Workspace
    from phenosynth.study.runner import run_study
    from phenosynth.study.spec import load_spec

    study_spec = load_spec(spec)
    chosen = {k: v for k, v in (("detector", detector), ("landmarker", landmarker)) if v is not None}
    if chosen:  # recorded in the run's config.yaml, so a re-run from it uses the same faces
        study_spec = study_spec.model_copy(update=chosen)
    ws = Workspace.open(workspace, need_manifest=True)
    lock_workspace(ctx, ws, lock_timeout)
    run_name = name or Path(spec).stem
    with progress_bar("features (per backbone), then cells") as update:
        result = run_study(ws, study_spec, run_name, resume=resume, executor=executor, address=address,
                           workers=workers, on_prepare=update, on_progress=update)
    _print_table(result.run_dir)
    console.print(
        f"Study [bold]{run_name}[/]: {result.n_cells} cells ({result.n_ran} trained now, {result.n_resumed} resumed) "
        f"in {result.seconds:.1f} s (preparation {result.prepare_seconds:.1f} s).\n"
        f"Results: {result.run_dir / 'results.csv'}\nReport:  {result.run_dir / 'report.html'}",
        soft_wrap=True,
    )
    next_step(f"open {result.run_dir / 'report.html'}; after changing results.csv or the report code: "
              f"phenosynth report {result.run_dir}")


@command("report")
def report(
    run_dir: Path = typer.Argument(..., help="A study's run folder, WS/runs/NAME."),
) -> None:
    """Rebuild a study's tables, figures and report.html from its results.csv.

    Example: phenosynth report ws/runs/paper
    """
    from phenosynth.study.report import build_report

    rep = build_report(run_dir)
    _print_table(rep.run_dir)
    for w in rep.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    for metric, why in rep.figures_left_out.items():
        console.print(f"No {metric} figure: trivially 100 % ({why}).", highlight=False)
    console.print(f"Wrote {len(rep.files)} files in {rep.run_dir}; open {rep.run_dir / 'report.html'}", soft_wrap=True)


@command("demo")
def demo(
    out: Path = typer.Option(Path("phenosynth-demo"), "--out", help="Folder for the demo dataset and workspace."),
    name: str = typer.Option(None, "--name", help="Run name; default: demo (demo-2, demo-3, ... if taken)."),
    resume: bool = typer.Option(False, "--resume", help="Finish an interrupted demo run of that name."),
) -> None:
    """Build the embedded demo dataset (simulated conditions on shipped ORL faces, and donor faces of other people)
    and run the whole pipeline on it: ingest (the donors with --donors), split, faces, generate (the demo spec's
    generator: phenotype-transfer onto the donors' faces), audit (dlib_resnet128), rank, and a study over shape68,
    dlib_resnet128 and mobilenet_v2 whose report shows the audit (offline, a few minutes on 2 cores).

    Example: phenosynth demo --out /tmp/phenosynth-demo
    """
    from phenosynth.demo.run import run_demo

    with progress_bar("demo") as update:
        result = run_demo(out, name=name, resume=resume, on_progress=update)
    for stage, seconds in result.timings.items():
        console.print(f"  {stage:<10} {seconds:7.1f} s")
    console.print(f"  (study: features {result.study.prepare_seconds:.1f} s, "
                  f"{result.study.n_cells} cells {result.study.seconds - result.study.prepare_seconds:.1f} s)")
    _print_table(result.run_dir)
    console.print("[bold yellow]Simulated data:[/] the demo's conditions are shape changes drawn on photos of "
                  "volunteers (ORL faces, credit: AT&T Laboratories Cambridge / Olivetti Research Laboratory); no "
                  "patient photos, and nothing here is about a real syndrome.")
    colour = "green" if result.audit.passed else "red"
    console.print(f"[bold {colour}]Privacy audit:[/] {result.audit.text}.", soft_wrap=True, highlight=False)
    console.print(
        f"Demo finished in {result.seconds:.0f} s. Workspace: {result.workspace}\n"
        f"Report: [bold]{result.run_dir / 'report.html'}[/]",
        soft_wrap=True,
    )
