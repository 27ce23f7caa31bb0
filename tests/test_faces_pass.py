"""The face pass (faces.parquet), its cache, statuses, alignment crops and the `phenosynth faces` command."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from phenosynth.errors import WorkspaceError
from phenosynth.faces.align import alignment_matrix, ensure_aligned_crops
from phenosynth.faces.facepass import face_exclusions, load_faces, run_face_pass
from phenosynth.faces.landmarks import alignment_template, order_is_sane
from phenosynth.faces.procrustes import apply_matrix
from tests._faces_data import face_image, two_faces


def _gray(im: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(im).convert("L"))


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory, make_photo_workspace):
    root = tmp_path_factory.mktemp("facepass")
    images = {
        "face": face_image(160),
        "gray": _gray(face_image(180)),
        "two": two_faces(),
        "blank": np.full((120, 120, 3), 127, np.uint8),
        "broken": b"\x89PNG\r\n\x1a\n this is not really a png",
    }
    ws, ids = make_photo_workspace(root, images)
    summary = run_face_pass(ws, workers=2)
    return ws, ids, summary


def test_statuses_of_face_grayscale_multi_face_blank_and_broken(processed) -> None:
    ws, ids, summary = processed
    faces = load_faces(ws, ok_only=False)
    status = {name: faces.at[i, "status"] for name, i in ids.items()}
    assert status["face"] == "ok"
    assert status["gray"] == "ok"
    assert status["two"] == "ok-largest-of-2"
    assert status["blank"] == "no-face"
    assert status["broken"].startswith("error: ")
    assert summary.by_status == {"error": 1, "no-face": 1, "ok": 2, "ok-largest-of-N": 1}
    assert summary.computed == 5 and summary.cached == 0 and summary.workers == 2


def test_multi_face_keeps_the_largest_face(processed) -> None:
    ws, ids, _ = processed
    row = load_faces(ws).loc[ids["two"]]
    assert row["n_faces"] == 2
    assert row["box_x1"] < 210  # the 200 px copy on the left, not the 140 px one on the right
    assert row["box_x1"] - row["box_x0"] > 60


def test_rows_hold_box_score_and_sane_landmarks(processed) -> None:
    ws, ids, _ = processed
    faces = load_faces(ws)
    assert sorted(faces.index) == sorted([ids["face"], ids["gray"], ids["two"]])
    for _, row in faces.iterrows():
        assert row["landmarks"].shape == (68, 2) and row["landmarks5"].shape == (5, 2)
        assert order_is_sane(row["landmarks"])
        assert row["box_x0"] < row["landmarks5"][0, 0] < row["box_x1"]
        assert np.isfinite(row["score"]) and row["detector"] == "dlib-hog" and row["landmarker"] == "dlib68"


def test_no_face_images_stay_in_the_manifest_with_a_reason(processed) -> None:
    ws, ids, _ = processed
    assert set(ws.load_manifest()["image_id"]) == set(ids.values())
    reasons = face_exclusions(ws)
    assert reasons[ids["blank"]] == "no-face"
    assert reasons[ids["broken"]].startswith("error: ")
    assert set(reasons.index) == {ids["blank"], ids["broken"]}


def test_second_run_computes_only_new_images(processed, tmp_path: Path) -> None:
    ws, ids, _ = processed
    again = run_face_pass(ws)
    assert again.computed == 0 and again.cached == 5
    manifest = ws.load_manifest()
    new_path = tmp_path / "new.png"
    Image.fromarray(face_image(200)).save(new_path)
    import hashlib

    new_id = hashlib.sha256(new_path.read_bytes()).hexdigest()
    extra = manifest.iloc[:1].assign(image_id=new_id, path=str(new_path))
    ws.save_manifest(pd.concat([manifest, extra], ignore_index=True))
    try:
        third = run_face_pass(ws)
        assert third.computed == 1 and third.cached == 5
        assert load_faces(ws).at[new_id, "status"] == "ok"
    finally:
        ws.save_manifest(manifest)


def test_aligned_crops_at_224_and_160(processed) -> None:
    ws, ids, _ = processed
    for size in (224, 160):
        crops = ensure_aligned_crops(ws, list(ids.values()), size=size)
        assert set(crops) == {ids["face"], ids["gray"], ids["two"]}  # no face, no crop
        for image_id, path in crops.items():
            assert path.parent == ws.cache_dir / "crops" / "dlib-hog+dlib68" / str(size)
            with Image.open(path) as im:
                assert im.size == (size, size) and im.mode == "RGB"
            lm5 = load_faces(ws).at[image_id, "landmarks5"]
            moved = apply_matrix(alignment_matrix(lm5, size), lm5)
            assert np.abs(moved - alignment_template(size)).max() < 0.08 * size  # features land on the template
    mtime = crops[ids["face"]].stat().st_mtime_ns
    assert ensure_aligned_crops(ws, [ids["face"]], size=160)[ids["face"]].stat().st_mtime_ns == mtime  # cached


def test_load_faces_before_the_pass_says_what_to_run(tmp_path: Path, make_photo_workspace) -> None:
    ws, _ = make_photo_workspace(tmp_path, {"face": face_image(120)})
    with pytest.raises(WorkspaceError, match="Run first: phenosynth faces -w"):
        load_faces(ws)
    run_face_pass(ws)
    with pytest.raises(WorkspaceError, match="no rows for --detector mtcnn --landmarks mtcnn5.*dlib-hog \\+ dlib68"):
        load_faces(ws, "mtcnn", "mtcnn5")


def test_cli_faces_prints_a_summary_by_status(processed) -> None:
    from phenosynth.cli import app

    ws, _, _ = processed
    result = CliRunner().invoke(app, ["faces", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    for text in ("ok-largest-of-N", "no-face", "error", "5 images: 3 with a face (60.0%)", "5 from cache"):
        assert text in " ".join(result.output.split())
    bad = CliRunner().invoke(app, ["faces", "-w", str(ws.root), "--detector", "hog"])
    assert bad.exit_code == 2 and "Did you mean 'dlib-hog'" in bad.output


@pytest.mark.parametrize(
    ("detector", "landmarker"), [pytest.param("mtcnn", "mtcnn5", marks=pytest.mark.slow), ("dlib-hog", "dlib5")]
)
def test_other_settings_sit_beside_the_default_in_faces_parquet(tmp_path: Path, detector: str, landmarker: str,
                                                                 make_photo_workspace) -> None:
    images = {"face": face_image(160), "gray": _gray(face_image(170)), "two": two_faces(), "face2": face_image(200)}
    ws, ids = make_photo_workspace(tmp_path, images)
    run_face_pass(ws, workers=1)
    summary = run_face_pass(ws, detector=detector, landmarker=landmarker, workers=2)
    assert summary.by_status == {"ok": 3, "ok-largest-of-N": 1} and summary.computed == 4
    faces = load_faces(ws, detector, landmarker)
    assert faces.at[ids["two"], "status"] == "ok-largest-of-2"
    for lm5 in faces["landmarks5"]:
        assert lm5.shape == (5, 2) and order_is_sane(lm5)
    assert faces["landmarks"].iloc[0].shape == (5, 2)
    both = pd.read_parquet(ws.faces_path)
    assert len(both) == 8 and set(both["detector"]) == {"dlib-hog", detector}
    assert load_faces(ws, "dlib-hog", "dlib68")["landmarks"].iloc[0].shape == (68, 2)
    from phenosynth.faces.facepass import FaceSettingsError

    with pytest.raises(FaceSettingsError, match=f"--detector {detector} --landmarker {landmarker}"):
        load_faces(ws)  # several settings: never a guess


# --- interrupted passes resume (issue 9, item 8) ----------------------------------------------------------------------
@pytest.fixture
def many_faces(make_photo_workspace):
    """``(root, n) -> (ws, ids)``: ``n`` distinct small face images (the astronaut at n sizes)."""
    return lambda root, n=40: make_photo_workspace(root, {f"f{k:02d}": face_image(96 + 2 * k) for k in range(n)})


def test_an_interrupted_pass_resumes_from_its_saved_parts(tmp_path: Path, pool_starts: list[int], many_faces) -> None:
    from phenosynth.faces.facepass import face_parts_dir

    ws, ids = many_faces(tmp_path / "a", 24)

    def stop_after_ten(done: int, total: int) -> None:
        if done >= 10:
            raise KeyboardInterrupt  # what Ctrl-C does mid-pass

    with pytest.raises(KeyboardInterrupt):  # in worker processes: the pool is stopped, the finished rows kept
        run_face_pass(ws, workers=2, checkpoint_every=3, on_progress=stop_after_ten)
    assert pool_starts == [2]  # through the one pool helper (phenosynth.parallel)
    assert not ws.faces_path.exists()  # nothing half-written where readers look
    assert len(list(face_parts_dir(ws, "dlib-hog", "dlib68").glob("part-*.parquet"))) == 4  # 3 + 3 + 3 + 1
    progress: list[tuple[int, int]] = []
    resumed = run_face_pass(ws, workers=1, on_progress=lambda d, t: progress.append((d, t)))
    assert (resumed.resumed, resumed.computed, resumed.cached) == (10, 14, 10)
    assert progress[0] == (10, 24) and progress[-1] == (24, 24)
    assert not face_parts_dir(ws, "dlib-hog", "dlib68").exists()  # folded into faces.parquet
    # the same bytes as a pass that was never interrupted
    ws_b, _ = many_faces(tmp_path / "b", 24)
    straight = run_face_pass(ws_b, workers=1)
    assert (straight.computed, straight.resumed) == (24, 0)
    assert ws.faces_path.read_bytes() == ws_b.faces_path.read_bytes()  # rows of 2 processes == rows of 1
    assert pool_starts == [2]  # workers=1: no pool


_KILLED_PASS = """
import sys, time
from phenosynth.data.workspace import Workspace
from phenosynth.faces.facepass import run_face_pass
# 50 ms per image on top of the detection: the test has time to kill it half-way
run_face_pass(Workspace.open(sys.argv[1]), workers=1, checkpoint_every=2, on_progress=lambda d, t: time.sleep(0.05))
"""


def test_kill_9_half_way_then_the_rerun_takes_most_images_from_cache(tmp_path: Path, many_faces) -> None:
    import os
    import signal
    import subprocess
    import time

    import phenosynth
    from phenosynth.faces.facepass import face_parts_dir

    ws, ids = many_faces(tmp_path / "a", 40)
    script = tmp_path / "pass.py"
    script.write_text(_KILLED_PASS)
    env = {**os.environ, "PYTHONPATH": str(Path(phenosynth.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, str(script), str(ws.root)], env=env)
    parts = face_parts_dir(ws, "dlib-hog", "dlib68")
    deadline = time.monotonic() + 120
    try:
        while len(list(parts.glob("part-*.parquet"))) < 10:  # 20 of 40 images saved
            assert proc.poll() is None, "the face pass ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not ws.faces_path.exists()
    again = run_face_pass(ws, workers=1)
    assert again.resumed >= 12 and again.computed > 0 and again.resumed + again.computed == 40
    assert again.cached == again.resumed
    ws_b, _ = many_faces(tmp_path / "b", 40)
    run_face_pass(ws_b, workers=1)
    assert ws.faces_path.read_bytes() == ws_b.faces_path.read_bytes()


def test_cli_says_how_many_images_an_interrupted_pass_saved(tmp_path: Path, many_faces) -> None:
    from phenosynth.cli import app

    ws, ids = many_faces(tmp_path, 8)

    def stop_after_five(done: int, total: int) -> None:
        if done >= 5:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        run_face_pass(ws, workers=1, checkpoint_every=100, on_progress=stop_after_five)
    result = CliRunner().invoke(app, ["faces", "-w", str(ws.root), "--workers", "1"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "computed 3 (" in out and "5 from cache (5 saved by an interrupted run)" in out
