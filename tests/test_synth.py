"""Synthetic data: shape model, generator interface + lineage, generate (end to end on a tiny workspace), ranking."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from phenosynth.data.manifest import SYNTHETIC, conform
from phenosynth.data.workspace import Workspace
from phenosynth.errors import LeakageError, PhenosynthError
from phenosynth.synth.generators import create_generator, list_generators
from phenosynth.data.leakage import PARENT_IN_TEST, exclude_leaked_synthetic, leakage_report
from phenosynth.faces.procrustes import apply_matrix, generalized_procrustes
from phenosynth.synth.shape_model import ShapeModel
from tests._workspaces import (ASTRONAUT_BOX, astronaut_landmarks, face_row, faces_parquet_rows, faces_table,
                               template68, write_faces_parquet)

# --- hand-made landmarks ----------------------------------------------------------------------------------------------


def similarity(points: np.ndarray, angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, -s], [s, c]]).T * scale + np.asarray(shift)


def phenotype_shapes(n_per_class: int = 4, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Two conditions: A has wide-set eyes, B a long jaw; each face randomly posed (rotation, scale, shift)."""
    rng = np.random.default_rng(seed)
    base = template68()
    a = base.copy()
    a[36:42, 0] -= 0.05
    a[42:48, 0] += 0.05
    b = base.copy()
    b[0:17, 1] += 0.08 * np.sin(np.linspace(0, np.pi, 17))
    shapes, labels = [], []
    for label, mean in (("A", a), ("B", b)):
        for _ in range(n_per_class):
            s = mean + 0.006 * rng.standard_normal(mean.shape)
            shapes.append(similarity(s, rng.uniform(-0.3, 0.3), rng.uniform(50, 150), tuple(rng.uniform(0, 200, 2))))
            labels.append(label)
    return np.stack(shapes), labels


# --- shape model ------------------------------------------------------------------------------------------------------


def test_procrustes_removes_pose() -> None:
    shape = template68()
    posed = np.stack([similarity(shape, a, s, (x, 3 * x)) for a, s, x in [(0.0, 1.0, 0), (0.7, 80, 40), (-1.2, 3, 9)]])
    aligned, mats, ref = generalized_procrustes(posed)
    assert np.abs(aligned - aligned[0]).max() < 1e-8
    assert np.allclose(apply_matrix(mats[1], posed[1]), aligned[1])
    assert abs(np.sqrt((ref**2).sum(1).mean()) - 1.0) < 1e-9  # unit RMS radius


def test_shape_model_learns_each_conditions_phenotype() -> None:
    shapes, labels = phenotype_shapes()
    model = ShapeModel().fit(shapes, labels)
    assert model.classes_ == ["A", "B"]
    mean_a, mean_b = model.mean_shape("A"), model.mean_shape("B")
    eye_gap = lambda s: s[42:48, 0].mean() - s[36:42, 0].mean()  # noqa: E731
    assert eye_gap(mean_a) > eye_gap(mean_b) * 1.1  # A: wide-set eyes
    samples = model.sample("A", 200, np.random.default_rng(0))
    assert samples.shape == (200, 68, 2)
    to_a = np.abs(samples - mean_a).mean(axis=(1, 2))
    to_b = np.abs(samples - mean_b).mean(axis=(1, 2))
    assert (to_a < to_b).mean() > 0.95
    # deterministic by seed
    assert np.array_equal(model.sample("A", 3, np.random.default_rng(5)), model.sample("A", 3, np.random.default_rng(5)))


def test_shape_model_shrinks_small_classes_toward_pooled_variation() -> None:
    shapes, labels = phenotype_shapes(n_per_class=4)
    shapes = np.concatenate([shapes, phenotype_shapes(1, seed=9)[0][:1]])
    labels = labels + ["C"]  # a singleton condition
    model = ShapeModel(shrinkage=4.0).fit(shapes, labels)
    c = model.classes_.index("C")
    assert np.allclose(model.class_covs_[c], model.pooled_cov_, rtol=1e-6, atol=1e-12)
    a = model.classes_.index("A")
    own = np.cov(model.scores_[np.array(labels) == "A"], rowvar=False)
    lam = 3 / (3 + 4.0)
    assert np.allclose(model.class_covs_[a], lam * own + (1 - lam) * model.pooled_cov_, rtol=1e-5, atol=1e-12)
    no_shrink = ShapeModel(shrinkage=0.0).fit(shapes, labels)
    assert np.allclose(no_shrink.class_covs_[a], own, rtol=1e-5, atol=1e-12)


def test_generators_are_registered() -> None:
    assert list_generators() == ["dreambooth", "dreambooth-lora", "fastgan", "phenotype-transfer", "shape-warp"]


def test_a_generator_handed_a_test_image_raises(tmp_path, make_landmark_workspace) -> None:
    ws, faces = make_landmark_workspace(tmp_path)
    m = ws.load_manifest()
    from phenosynth.data.imageio import load_rgb

    images = [load_rgb(ws.resolve(p)) for p in m["path"]]
    lms = np.stack([faces.at[i, "landmarks"] for i in m["image_id"]])
    gen = create_generator("shape-warp")
    with pytest.raises(LeakageError, match="test image"):
        gen.fit(images, lms, m["label"].tolist(), image_ids=m["image_id"].tolist(), splits=m["split"].tolist())
    with pytest.raises(PhenosynthError, match="phenosynth split"):
        gen.fit(images, lms, m["label"].tolist(), image_ids=m["image_id"].tolist(), splits=[None] * len(m))


@pytest.mark.slow
def test_generate_end_to_end(tmp_path, pool_starts, make_landmark_workspace) -> None:
    ws, faces = make_landmark_workspace(tmp_path)
    manifest = ws.load_manifest()
    train_ids = set(manifest.loc[manifest["split"] == "train", "image_id"])
    test_ids = set(manifest.loc[manifest["split"] == "test", "image_id"])

    from phenosynth.synth.generation import generate

    s = generate(ws, "shape-warp", per_class=4, seed=0, faces=faces, n_jobs=1)
    assert (s.images, s.new_images, s.classes, s.per_class) == (12, 12, 3, {"A": 4, "B": 4, "C": 4})
    assert pool_starts == [] and s.workers == 1
    m = ws.load_manifest()
    syn = m[m["source"] == SYNTHETIC]
    assert len(syn) == 12 and (syn["split"] == "train").all() and syn["fold"].isna().all()
    assert (syn["generator"] == "shape-warp").all()
    for _, row in syn.iterrows():
        path = ws.resolve(row["path"])
        assert row["path"].startswith("synthetic/shape-warp-seed0/") and path.exists()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["image_id"]
        assert Image.open(path).size == (128, 128)  # the input's size
        assert row["parents"] and set(row["parents"]) <= train_ids and not set(row["parents"]) & test_ids
        # parents are photos of the image's own condition
        assert set(manifest.set_index("image_id").loc[row["parents"], "label"]) == {row["label"]}
        params = json.loads(row["params"])
        assert params["seed"] == 0 and params["run"] == "shape-warp-seed0" and "rotation_deg" in params
    assert json.loads((ws.synthetic_dir / "shape-warp-seed0" / "run.json").read_text())["images"] == 12

    # deterministic: the same seed in two processes makes the same bytes, nothing new is added; another seed differs
    again = generate(ws, "shape-warp", per_class=4, seed=0, faces=faces, n_jobs=2, name="again")
    assert again.new_images == 0 and again.images == 12
    assert pool_starts == [2] and again.workers == 2  # through the one pool helper (phenosynth.parallel)
    other = generate(ws, "shape-warp", per_class=4, seed=1, faces=faces, n_jobs=1)
    assert other.new_images == 12
    # images are not copies of their parents
    first = syn.iloc[0]
    parent = manifest.set_index("image_id").loc[first["parents"][0], "path"]
    a = np.asarray(Image.open(ws.resolve(first["path"])), dtype=float)
    b = np.asarray(Image.open(ws.resolve(parent)).convert("RGB"), dtype=float)
    assert np.abs(a - b).mean() > 1.0


def test_generate_needs_a_split_and_faces(tmp_path, make_landmark_workspace) -> None:
    ws, faces = make_landmark_workspace(tmp_path)
    from phenosynth.synth.generation import generate

    with pytest.raises(PhenosynthError, match="phenosynth faces -w"):
        generate(ws, per_class=1, faces=faces.iloc[:0])
    m = ws.load_manifest()
    m["split"] = pd.NA
    ws.save_manifest(m)
    with pytest.raises(PhenosynthError, match="phenosynth split -w"):
        generate(ws, per_class=1, faces=faces)


# --- lineage after a re-split -----------------------------------------------------------------------------------------


def lineage_manifest() -> pd.DataFrame:
    return conform(
        pd.DataFrame(
            {
                "image_id": ["p1", "p2", "s1", "s2", "s3"],
                "label": ["A", "A", "A", "A", "A"],
                "source": ["real", "real", "synthetic", "synthetic", "synthetic"],
                "generator": [None, None, "shape-warp", "shape-warp", "shape-warp"],
                "parents": [[], [], ["p1"], ["p2"], ["p1", "p2"]],
                "split": ["train", "train", "train", "train", "train"],
            }
        )
    )


def test_a_resplit_flags_children_of_new_test_images_and_releases_them_after() -> None:
    m = lineage_manifest()
    assert exclude_leaked_synthetic(m)[1] == [] and leakage_report(m).empty
    m.loc[m["image_id"] == "p2", "split"] = "test"  # the re-split moved p2 into the test set
    flagged_m, flagged = exclude_leaked_synthetic(m)
    assert flagged == ["s2", "s3"]
    reasons = flagged_m.set_index("image_id")["exclude_reason"]
    assert reasons["s2"] == PARENT_IN_TEST and reasons["s3"] == PARENT_IN_TEST and pd.isna(reasons["s1"])
    report = leakage_report(flagged_m)
    assert report["image_id"].tolist() == ["s2", "s3"] and report["test_parents"].tolist() == ["p2", "p2"]
    # back in training: released
    flagged_m.loc[flagged_m["image_id"] == "p2", "split"] = "train"
    released, again = exclude_leaked_synthetic(flagged_m)
    assert again == [] and released["exclude_reason"].isna().all()


# --- ranking ------------------------------------------------------------------------------------------------------


def _add_synthetic(ws: Workspace, faces: pd.DataFrame) -> pd.DataFrame:
    """Two synthetic images per class with landmarks near (id *0) or far from (id *1) their class."""
    rng = np.random.default_rng(1)
    rows, extra = [], []
    for label in ["A", "B", "C"]:
        for k in range(2):
            image_id = f"syn{label}{k}"
            rows.append({"image_id": image_id, "path": f"synthetic/x/{image_id}.png", "label": label,
                         "source": "synthetic", "generator": "shape-warp", "parents": [], "split": "train"})
            lm = astronaut_landmarks(label, rng)
            if k == 1:  # a badly distorted face
                lm = lm + rng.normal(0, 4.0, lm.shape)
            extra.append(face_row(image_id, lm, ASTRONAUT_BOX))
    m = ws.load_manifest()
    ws.save_manifest(pd.concat([m, pd.DataFrame(rows)], ignore_index=True))
    return pd.concat([faces, faces_table(extra)])


def test_rank_scores_synthetic_images_against_real_training_prototypes(tmp_path, make_landmark_workspace) -> None:
    from phenosynth.synth.ranking import rank

    ws, faces = make_landmark_workspace(tmp_path)
    all_faces = _add_synthetic(ws, faces)
    with pytest.raises(PhenosynthError, match="phenosynth faces -w"):
        rank(ws, "rdface25", faces=faces)  # the synthetic images have not been through the face pass
    s = rank(ws, "shape68", faces=all_faces)
    assert s.ranked == 6 and s.not_ranked == {}
    table = pd.read_parquet(ws.root / "ranking.parquet")
    assert list(table.columns) == ["image_id", "representation", "rank_score", "own_class_rank"]
    score = table.set_index("image_id")["rank_score"]
    for label in "ABC":
        assert score[f"syn{label}0"] > score[f"syn{label}1"]  # the distorted face scores lower
    assert table.set_index("image_id").loc["synA0", "own_class_rank"] == 1
    # a second representation is stored beside the first; a face-less image is reported, not ranked
    s2 = rank(ws, "rdface25", faces=all_faces.assign(status=lambda d: np.where(d.index == "synC1", "no-face", "ok")))
    assert s2.ranked == 5 and s2.not_ranked == {"no face found": 1}
    table = pd.read_parquet(ws.root / "ranking.parquet")
    assert table.groupby("representation").size().to_dict() == {"rdface25": 5, "shape68": 6}

    # prototypes come from real *training* images only: moving the test images elsewhere changes nothing
    m = ws.load_manifest()
    far = m["split"] == "test"
    shifted = all_faces.copy()
    for i in m.loc[far, "image_id"]:
        shifted.at[i, "landmarks"] = shifted.at[i, "landmarks"] + np.random.default_rng(3).normal(0, 6, (68, 2))
    rank(ws, "shape68", faces=shifted)
    again = pd.read_parquet(ws.root / "ranking.parquet")
    again = again[again["representation"] == "shape68"].set_index("image_id")["rank_score"]
    assert np.allclose(again.sort_index(), score.sort_index())


# --- CLI (through faces.parquet in the face stage's format) -----------------------------------------------------------


def test_cli_generate_then_rank_asks_for_the_face_pass(tmp_path, make_landmark_workspace) -> None:
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws, faces = make_landmark_workspace(tmp_path)
    write_faces_parquet(ws, faces_parquet_rows(faces))
    runner = CliRunner()
    out = runner.invoke(app, ["generate", "-w", str(ws.root), "--per-class", "2", "--workers", "1"])
    assert out.exit_code == 0, out.output
    assert "6 images of 3 conditions" in out.output and "from 9 real training faces" in out.output
    assert len(list((ws.synthetic_dir / "shape-warp-seed0").rglob("*.png"))) == 6
    out = runner.invoke(app, ["rank", "-w", str(ws.root)])
    assert out.exit_code == 2 and "phenosynth faces -w" in out.output
    out = runner.invoke(app, ["generate", "-w", str(ws.root), "--generator", "shape-warpp"])
    assert out.exit_code == 2 and "Did you mean 'shape-warp'" in out.output

    # the face pass (here: hand-placed landmarks) has seen the new images: rank, then select through the workspace
    m = ws.load_manifest()
    syn = m[m["source"] == SYNTHETIC]
    rng = np.random.default_rng(7)
    extra = faces_table([face_row(i, astronaut_landmarks(lab, rng), ASTRONAUT_BOX)
                         for i, lab in zip(syn["image_id"], syn["label"])])
    write_faces_parquet(ws, faces_parquet_rows(pd.concat([faces, extra])))
    out = runner.invoke(app, ["rank", "-w", str(ws.root), "--representation", "shape68"])
    assert out.exit_code == 0, out.output
    assert "Ranked 6 synthetic images of 3 conditions by shape68" in out.output
    from phenosynth.synth import select_for_training

    for strategy in ("top-per-class", "diverse", "top-global"):
        chosen = select_for_training(ws, ws.load_manifest(), strategy=strategy, n=1, per_class=True)
        assert len(chosen) == 3 and set(chosen) <= set(syn["image_id"]), strategy


def test_a_resplit_flags_every_image_of_a_run_whose_generator_saw_a_new_test_image(
    tmp_path, make_landmark_workspace
) -> None:
    from phenosynth.data.leakage import FIT_ON_TEST, STATISTIC_IN_TEST, load_fit_sets
    from phenosynth.synth.generation import generate

    ws, faces = make_landmark_workspace(tmp_path)
    generate(ws, per_class=2, seed=0, faces=faces, n_jobs=1)
    fit_sets = load_fit_sets(ws)
    assert list(fit_sets) == ["shape-warp-seed0"] and len(fit_sets["shape-warp-seed0"]) == 9
    m = ws.load_manifest()
    flagged_m, flagged = exclude_leaked_synthetic(m, fit_sets)
    assert flagged == [] and leakage_report(flagged_m, fit_sets).empty
    syn = m[m["source"] == SYNTHETIC]
    parents_a = {p for ps in syn.loc[syn["label"] == "A", "parents"] for p in ps}
    moved = next(iter(parents_a))  # a photo of condition A that some synthetic image was warped from
    m.loc[m["image_id"] == moved, "split"] = "test"
    flagged_m, flagged = exclude_leaked_synthetic(m, fit_sets)
    assert sorted(flagged) == sorted(syn["image_id"])  # the shape model saw it: the whole run is excluded
    reasons = flagged_m.set_index("image_id").loc[syn["image_id"], "exclude_reason"]
    direct = syn["parents"].map(lambda ps: moved in ps).to_numpy()
    # shape-warp's lineage by role: the warped photo is a pixel parent, the condition's other photos statistic sources
    same_condition = (syn["label"] == "A").to_numpy() & ~direct
    assert (reasons[direct] == PARENT_IN_TEST).all() and (reasons[same_condition] == STATISTIC_IN_TEST).all()
    assert (reasons[~direct & ~same_condition] == FIT_ON_TEST).all() and same_condition.any()
    report = leakage_report(flagged_m, fit_sets)
    assert len(report) == len(syn) and set(report.loc[report["reason"] == FIT_ON_TEST, "test_fit_images"]) == {moved}
    flagged_m.loc[flagged_m["image_id"] == moved, "split"] = "train"  # moved back: released
    released, again = exclude_leaked_synthetic(flagged_m, fit_sets)
    assert again == [] and released["exclude_reason"].isna().all()


def test_rank_with_several_face_settings_refuses_to_guess_and_uses_the_chosen_one(
    tmp_path, make_landmark_workspace
) -> None:
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws, faces = make_landmark_workspace(tmp_path)
    all_faces = _add_synthetic(ws, faces)
    # dlib-hog + dlib68 has seen every image; a later mtcnn pass only the real photos
    write_faces_parquet(ws, faces_parquet_rows(all_faces), faces_parquet_rows(faces, "mtcnn", "mtcnn5"))
    runner = CliRunner()
    out = runner.invoke(app, ["rank", "-w", str(ws.root), "-r", "shape68"])
    said = " ".join(out.output.split())
    assert out.exit_code == 2, out.output
    assert "--detector dlib-hog --landmarker dlib68; --detector mtcnn --landmarker mtcnn5" in said
    assert "not been through the face pass" not in said
    out = runner.invoke(app, ["rank", "-w", str(ws.root), "-r", "shape68", "--detector", "dlib-hog",
                              "--landmarker", "dlib68"])
    assert out.exit_code == 0, out.output
    assert "Ranked 6 synthetic images of 3 conditions by shape68" in out.output
    out = runner.invoke(app, ["rank", "-w", str(ws.root), "-r", "shape68", "--detector", "mtcnn"])  # -> mtcnn5
    said = " ".join(out.output.split())
    assert out.exit_code == 2 and "6 of 6 synthetic images have not been through the face pass with --detector " \
                                  "mtcnn --landmarks mtcnn5" in said


# --- an interrupted generate (issue 9, item 8) ------------------------------------------------------------------------


def _interrupted_generate(ws: Workspace, faces: pd.DataFrame, **kw) -> None:
    """A generate that dies after its first condition (4 images on disk, none in the manifest), plus the temporary
    file a kill -9 in the middle of an image write leaves behind."""
    from phenosynth.synth.generation import generate

    def die_after_one_class(done: int, total: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(ws, "shape-warp", per_class=4, seed=0, faces=faces, n_jobs=1, on_progress=die_after_one_class, **kw)
    run_dir = ws.synthetic_dir / kw.get("name", "shape-warp-seed0")
    (run_dir / "A" / ".00004_0123456789ab.png.k1ll3d.tmp").write_bytes(b"\x89PNG half an image")


def _files_on_disk(ws: Workspace) -> set[str]:
    return {p.relative_to(ws.root).as_posix() for p in ws.synthetic_dir.rglob("*") if p.is_file()
            and p.name != "run.json"}


def test_an_interrupted_generate_is_resumed_by_the_next_call_and_leaves_no_temporary_files(
    tmp_path, make_landmark_workspace
) -> None:
    from phenosynth.synth.generation import generate

    ws, faces = make_landmark_workspace(tmp_path / "a")
    _interrupted_generate(ws, faces)
    assert len(_files_on_disk(ws)) == 5 and ws.load_manifest()["source"].eq(SYNTHETIC).sum() == 0
    s = generate(ws, "shape-warp", per_class=4, seed=0, faces=faces, n_jobs=1)
    assert (s.resumed_images, s.temp_files_removed, s.orphans_removed, s.new_images) == (4, 1, [], 12)
    syn = ws.load_manifest().query("source == 'synthetic'")
    assert _files_on_disk(ws) == set(syn["path"])  # every file listed, every listed file there, nothing else
    # the same images as a call that was never interrupted
    ws_b, _ = make_landmark_workspace(tmp_path / "b")
    generate(ws_b, "shape-warp", per_class=4, seed=0, faces=faces, n_jobs=1)
    assert list(syn["image_id"]) == list(ws_b.load_manifest().query("source == 'synthetic'")["image_id"])


def test_images_of_an_interrupted_call_that_the_next_call_does_not_make_are_removed_and_reported(
    tmp_path, caplog, make_landmark_workspace
) -> None:
    import logging

    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws, faces = make_landmark_workspace(tmp_path)
    _interrupted_generate(ws, faces, name="big")
    write_faces_parquet(ws, faces_parquet_rows(faces))
    with caplog.at_level(logging.WARNING, logger="phenosynth.synth.generation"):
        out = CliRunner().invoke(app, ["generate", "-w", str(ws.root), "--per-class", "2", "--workers", "1",
                                       "--name", "big"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert ("An earlier call of run big was interrupted: 2 of its images were taken as they were, 2 it made that "
            "this call did not were removed, and 1 temporary file(s) were removed.") in text
    assert "Removed 2 image(s) of an interrupted call of run big" in caplog.text
    assert _files_on_disk(ws) == set(ws.load_manifest().query("source == 'synthetic'")["path"])
    assert len(_files_on_disk(ws)) == 6


def test_an_unfinished_other_run_is_named_in_a_warning(tmp_path, caplog, make_landmark_workspace) -> None:
    import logging

    from phenosynth.synth.generation import generate

    ws, faces = make_landmark_workspace(tmp_path)
    _interrupted_generate(ws, faces, name="first")
    with caplog.at_level(logging.WARNING, logger="phenosynth.synth.generation"):
        generate(ws, "shape-warp", per_class=1, seed=0, faces=faces, n_jobs=1, name="second")
    assert "Run first was interrupted: 4 image(s) not in the manifest and 1 temporary file(s)" in caplog.text
    assert "generate --name first" in caplog.text


def test_the_run_record_is_written_before_the_manifest_rows_that_need_it(
    tmp_path, monkeypatch, make_landmark_workspace
) -> None:
    """A kill between the two must never leave synthetic rows whose run's fit set the lineage rule cannot see."""
    from phenosynth.synth.generation import generate
    from phenosynth.data.leakage import load_fit_sets

    ws, faces = make_landmark_workspace(tmp_path)

    def killed(self, df):
        raise KeyboardInterrupt

    monkeypatch.setattr(Workspace, "save_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
        generate(ws, "shape-warp", per_class=1, seed=0, faces=faces, n_jobs=1)
    train = ws.load_manifest().query("split == 'train'")["image_id"]
    assert load_fit_sets(ws)["shape-warp-seed0"] == sorted(train)
