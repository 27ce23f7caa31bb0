"""CLI: faces."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from phenosynth.cli._app import (LOCK_TIMEOUT_OPTION, WORKSPACE_OPTION, command, console, lock_workspace,
                                 next_step, progress_bar)
from phenosynth.data.workspace import Workspace
from phenosynth.faces.detectors import (
    DEFAULT_DETECTOR,
    DEFAULT_LANDMARKER,
    DETECTORS,
    LANDMARKERS,
    list_detectors,
    list_landmarkers,
)
from phenosynth.faces.facepass import run_face_pass

_MEANING = {
    "ok": "one face",
    "ok-largest-of-N": "several faces; the largest kept",
    "no-face": "no face, even after upsampling and padding; skipped downstream",
    "error": "could not be read; skipped downstream (reasons in faces.parquet)",
}


@command("faces")
def faces_command(
    ctx: typer.Context,
    workspace: Path = WORKSPACE_OPTION,
    detector: str = typer.Option(DEFAULT_DETECTOR, "--detector", help=f"{' | '.join(list_detectors())}"),
    landmarks: str = typer.Option(DEFAULT_LANDMARKER, "--landmarks", help=f"{' | '.join(list_landmarkers())}"),
    upsample: int = typer.Option(
        1, help="Detector upsampling of the first attempt (a retry adds one, then pads). Not part of the cache key."
    ),
    workers: int = typer.Option(None, help="Processes (default: every core)."),
    lock_timeout: float = LOCK_TIMEOUT_OPTION,
) -> None:
    """Detect the face and its landmarks in every manifest image (real and synthetic) -> faces.parquet.

    Only images not processed before with the same settings are computed.

    Example: [bold]phenosynth faces -w ws --detector dlib-hog --landmarks dlib68[/]
    """
    DETECTORS.get(detector), LANDMARKERS.get(landmarks)  # fail on a typo before the progress bar starts
    ws = Workspace.open(workspace, need_manifest=True)
    lock_workspace(ctx, ws, lock_timeout)
    with progress_bar("Finding faces") as on_progress:
        s = run_face_pass(
            ws, detector=detector, landmarker=landmarks, upsample=upsample, workers=workers, on_progress=on_progress
        )
    table = Table(title=f"Faces ({s.detector} + {s.landmarker})", show_header=True)
    table.add_column("status")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    table.add_column("meaning")
    for status, n in sorted(s.by_status.items(), key=lambda kv: (not kv[0].startswith("ok"), kv[0])):
        table.add_row(status, str(n), f"{n / max(s.images, 1):.1%}", _MEANING.get(status, ""))
    console.print(table)
    rate = s.computed / s.seconds if s.seconds > 0 else 0.0
    computed = (
        f"computed {s.computed} ({rate:.1f} images/s on {s.workers} process(es))" if s.computed else "nothing new"
    )
    console.print(
        f"{s.images} images: {s.found} with a face ({s.found / max(s.images, 1):.1%}); {computed}, "
        f"{s.cached} from cache"
        + (f" ({s.resumed} saved by an interrupted run)" if s.resumed else "")
        + f". Written to {s.faces_path}."
    )
    next_step(f"phenosynth generate -w {workspace}   (synthetic faces), or train on the real photos: "
              f"phenosynth train -w {workspace}")
