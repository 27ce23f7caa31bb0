"""Benchmark: the whole `phenosynth faces` command against a bare dlib loop, on real and simulated faces.

For each image set, a fresh workspace is made with `phenosynth ingest` (not timed), then

- ``phenosynth faces -w WS`` is run in a subprocess and timed end to end (interpreter start-up, imports, model
  loading, worker processes, writing faces.parquet: everything);
- a bare single-process script (import dlib, load the models, then for each file: read RGB, ``detector(img, 1)``,
  68-point predictor on every face) is run in a subprocess over the same files and timed the same way.

It prints images/s for both, their ratio (goal >= 0.8), the CPU seconds each used (user + system, worker processes
included: a load-independent view when other jobs share the machine), the faces-found rate, and how many found
faces have their landmarks in a sane order (eyes above the nose above the mouth, left eye left of the right).

    .venv/bin/python benchmarks/faces.py                       # ORL (../shared/data/orl-faces) + the demo dataset
    .venv/bin/python benchmarks/faces.py --orl PATH --repeats 2

The ORL faces are © AT&T Laboratories Cambridge (the Olivetti Research Laboratory database of faces).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHENOSYNTH = [str(Path(sys.executable).parent / "phenosynth")]


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run(args: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children)."""
    c0, t0 = _cpu(), time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds, cpu


BARE_LOOP = """
import sys
import dlib
import numpy as np
from PIL import Image

detector = dlib.get_frontal_face_detector()
predictor = dlib.shape_predictor(sys.argv[1])
found = 0
for f in open(sys.argv[2]).read().splitlines():
    with Image.open(f) as im:
        img = np.asarray(im.convert("RGB"))
    dets = detector(img, 1)
    found += bool(len(dets))
    for d in dets:
        predictor(img, d)
print(found)
"""


def bare_dlib_loop(files: list[Path]) -> tuple[float, float, int]:
    """Seconds for a plain single-process dlib-hog + 68-point loop, run as a script like the CLI (interpreter
    start-up, imports and model loading included), its CPU seconds, and the number of images with a face."""
    from phenosynth.faces.detectors import dlib_model_path

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(str(f) for f in files))
    try:
        model = str(dlib_model_path("shape_predictor_68_face_landmarks.dat"))
        c0, t0 = _cpu(), time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", BARE_LOOP, model, fh.name], capture_output=True, text=True)
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        raise SystemExit(f"bare loop failed: {proc.stderr}")
    return seconds, cpu, int(proc.stdout.strip())


def bench(name: str, ingest_args: list[str], repeats: int) -> dict[str, object]:
    from phenosynth.data.workspace import Workspace
    from phenosynth.faces.facepass import is_ok, load_faces
    from phenosynth.faces.landmarks import order_is_sane

    with tempfile.TemporaryDirectory(prefix=f"bench-faces-{name}-") as tmp:
        ws_path = Path(tmp) / "ws"
        _run(PHENOSYNTH + ["ingest", *ingest_args, "-w", str(ws_path)])
        ws = Workspace.open(ws_path)
        manifest = ws.load_manifest()
        files = [ws.resolve(p) for p in manifest["path"]]
        cli_runs, bare_runs = [], []
        bare_found = 0
        for _ in range(repeats):
            ws.faces_path.unlink(missing_ok=True)
            cli_runs.append(_run(PHENOSYNTH + ["faces", "-w", str(ws_path)]))
            seconds, cpu, bare_found = bare_dlib_loop(files)
            bare_runs.append((seconds, cpu))
        faces = load_faces(ws, ok_only=False)
        ok = faces[faces["status"].map(is_ok)]
        sane = sum(order_is_sane(lm) for lm in ok["landmarks"])
        retried = int((ok["attempt"] != "upsample=1").sum())
        n = len(files)
        (cli, cli_cpu), (bare, bare_cpu) = min(cli_runs), min(bare_runs)
        return {
            "set": name,
            "images": n,
            "cli_s": cli,
            "cli_ips": n / cli,
            "bare_s": bare,
            "bare_ips": n / bare,
            "ratio": bare / cli,
            "cli_cpu": cli_cpu,
            "bare_cpu": bare_cpu,
            "found": len(ok) / n,
            "found_bare": bare_found / n,
            "retried": retried,
            "sane": sane / max(len(ok), 1),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orl", type=Path, default=REPO.parent / "shared" / "data" / "orl-faces")
    ap.add_argument("--repeats", type=int, default=1, help="Runs per set; the fastest is reported.")
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()

    rows = []
    if args.orl.exists():
        rows.append(bench("ORL (real)", [str(args.orl), "--subject-regex", r"^([^/]+)/"], args.repeats))
    else:
        print(f"(ORL not found at {args.orl}; skipped)")
    if not args.skip_demo:
        from phenosynth.demo.dataset import build_demo_dataset

        with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
            demo = build_demo_dataset(Path(tmp) / "demo", seed=0)
            rows.append(bench("demo (simulated)", [str(demo.metadata_csv)], args.repeats))

    print(f"cores: {os.cpu_count()}   load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    header = (
        f"{'set':<18}{'images':>7}{'faces CLI s':>12}{'img/s':>8}{'bare loop s':>12}{'img/s':>8}"
        f"{'CLI/bare':>9}{'CPU s CLI':>10}{'CPU s bare':>11}{'found':>8}{'bare found':>11}{'retried':>8}"
        f"{'sane order':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['set']:<18}{r['images']:>7}{r['cli_s']:>12.2f}{r['cli_ips']:>8.1f}{r['bare_s']:>12.2f}"
            f"{r['bare_ips']:>8.1f}{r['ratio']:>8.2f}x{r['cli_cpu']:>10.2f}{r['bare_cpu']:>11.2f}{r['found']:>8.1%}"
            f"{r['found_bare']:>11.1%}{r['retried']:>8}"
            f"{r['sane']:>11.1%}"
        )


if __name__ == "__main__":
    main()
