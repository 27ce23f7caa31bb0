"""Benchmark: kill -9 in the middle of `phenosynth faces` and of a feature extraction, then run it again.

On ORL faces (../shared/data/orl-faces, ingested into a fresh workspace, not timed):

- **faces**: ``phenosynth faces -w WS`` is run once to the end on a copy of the workspace (time T), then on the
  workspace itself, killed with SIGKILL after ``--kill-at`` x T seconds, then run again. The table gives how many
  images the re-run took from the interrupted pass ("from cache"), how many it computed, its time, and whether the
  final faces.parquet is byte-identical to the uninterrupted run's.
- **features**: the same for ``extract_features(ws, BACKBONE, every image)`` (default ``dlib_resnet128``; the aligned
  crops are made beforehand, so only the extraction is timed), comparing the final features to the uninterrupted
  run's (largest absolute difference).

Default checkpoints are used (faces: every 200 images or 5 s; features: every 256 images or 10 s), so a run killed
sooner than its first checkpoint saves nothing: that is at most one chunk of work lost.

    .venv/bin/python benchmarks/resume.py                        # 400 ORL images, 1 worker
    .venv/bin/python benchmarks/resume.py --upsample 2 --kill-at 0.4

The ORL faces are © AT&T Laboratories Cambridge (the Olivetti Research Laboratory database of faces).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHENOSYNTH = str(Path(sys.executable).parent / "phenosynth")
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}

EXTRACT = """
import sys
from phenosynth.data.workspace import Workspace
from phenosynth.models.features import extract_features
ws = Workspace.open(sys.argv[1])
ids = ws.load_manifest()["image_id"].tolist()
first = []
kept, X = extract_features(ws, sys.argv[2], ids, on_progress=lambda d, t: first.append(d) if not first else None)
import numpy as np
np.save(sys.argv[3], X)
print("FROM_CACHE", first[0], "OF", len(ids))
"""

CROPS = """
import sys
from phenosynth.data.workspace import Workspace
from phenosynth.faces.align import ensure_aligned_crops
from phenosynth.models.features import CROP_SIZE
ws = Workspace.open(sys.argv[1])
ensure_aligned_crops(ws, ws.load_manifest()["image_id"].tolist(), size=CROP_SIZE)
"""


def _timed(args: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(args, env=ENV, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, out.stdout + out.stderr


def _killed(args: list[str], after: float) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=after)
        raise SystemExit(f"{args[:3]} ended before it was killed ({after:.1f}s); use a larger --kill-at or more images")
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return time.perf_counter() - t0


def _workspace(orl: Path, n_images: int, root: Path) -> Path:
    src = root / "src"
    for folder in sorted(orl.iterdir(), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else 0):
        if folder.is_dir():
            shutil.copytree(folder, src / folder.name)
            if sum(1 for _ in src.rglob("*.pgm")) >= n_images:
                break
    ws = root / "ws"
    subprocess.run([PHENOSYNTH, "ingest", str(src), "-w", str(ws)], env=ENV, check=True, capture_output=True)
    return ws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orl", type=Path, default=REPO.parent / "shared" / "data" / "orl-faces")
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--upsample", type=int, default=2, help="detector upsampling (2: a slower pass, ~4x the pixels)")
    ap.add_argument("--kill-at", type=float, default=0.4, help="kill after this fraction of the uninterrupted time")
    ap.add_argument("--backbone", default="dlib_resnet128")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = _workspace(a.orl, a.images, Path(tmp))
        ref = Path(tmp) / "ref"
        shutil.copytree(ws, ref)
        faces = [PHENOSYNTH, "faces", "--workers", str(a.workers), "--upsample", str(a.upsample), "-w"]
        t_full, _ = _timed(faces + [str(ref)])
        t_kill = _killed(faces + [str(ws)], a.kill_at * t_full)
        t_again, out = _timed(faces + [str(ws)])
        out = " ".join(out.split())
        m = re.search(r"(\d+) images: .*?; (?:computed (\d+)|nothing new).*?(\d+) from cache", out)
        n, computed, cached = int(m.group(1)), int(m.group(2) or 0), int(m.group(3))
        same = (ws / "faces.parquet").read_bytes() == (ref / "faces.parquet").read_bytes()
        rows.append(("faces (dlib-hog + dlib68)", n, t_full, t_kill, cached, computed, t_again,
                     "faces.parquet byte-identical" if same else "faces.parquet DIFFERS"))

        for w in (ws, ref):
            subprocess.run([sys.executable, "-c", CROPS, str(w)], env=ENV, check=True, capture_output=True)
        extract = [sys.executable, "-c", EXTRACT]
        t_full, out_ref = _timed(extract + [str(ref), a.backbone, str(Path(tmp) / "ref.npy")])
        t_kill = _killed(extract + [str(ws), a.backbone, str(Path(tmp) / "killed.npy")], a.kill_at * t_full)
        t_again, out = _timed(extract + [str(ws), a.backbone, str(Path(tmp) / "again.npy")])
        cached, n = map(int, re.search(r"FROM_CACHE (\d+) OF (\d+)", out).groups())
        import numpy as np

        X, X_ref = np.load(Path(tmp) / "again.npy"), np.load(Path(tmp) / "ref.npy")
        diff = float(np.abs(X - X_ref).max()) if X.shape == X_ref.shape else float("nan")
        rows.append((f"features ({a.backbone})", n, t_full, t_kill, cached, n - cached, t_again,
                     f"max |X - X_uninterrupted| = {diff:.1e}"))

    print(f"kill -9 after {a.kill_at:.0%} of the uninterrupted time; {a.workers} worker(s); faces --upsample "
          f"{a.upsample}; times include interpreter start-up and model loading")
    print()
    print("| stage | images | uninterrupted s | killed at s | re-run: from cache | re-run: computed | re-run s | "
          "final result |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for stage, n, t_full, t_kill, cached, computed, t_again, note in rows:
        print(f"| {stage} | {n} | {t_full:.1f} | {t_kill:.1f} | {cached} ({cached / n:.0%}) | {computed} | "
              f"{t_again:.1f} | {note} |")


if __name__ == "__main__":
    main()
