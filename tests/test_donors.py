"""Donor faces (issue 12): non-patients who lend identities. They enter the manifest as ``source=donor`` and never a
label, a split, a fold, a class, a selection, a training set or a study cell; a donor that is a patient photo (the
same file, or a near-duplicate) is refused or excluded; the face pass does process them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from phenosynth.cli import app
from phenosynth.data import manifest as mf
from phenosynth.data.ingest import LayoutOptions, NothingIngestedError, ingest
from phenosynth.data.leakage import (DONOR_IS_PATIENT, DONOR_NEAR_PATIENT_KIND, assert_no_leakage,
                                     exclude_patient_donors)
from phenosynth.data.split import split
from phenosynth.data.workspace import Workspace
from phenosynth.errors import LeakageError, PhenosynthError
from tests._workspaces import pattern_person, pattern_photo, save_image

runner = CliRunner()


def flat(text: str) -> str:
    """``text`` without whitespace: rich wraps long lines at the terminal's width."""
    return "".join(text.split())


def _patients(root: Path, rng: np.random.Generator, *, classes: str = "AB", subjects: int = 4) -> Path:
    """A folder layout of patient photos: one sub-folder per condition, 2 photos per subject ``<cls><s>_<k>.png``."""
    src = root / "patients"
    for label in classes:
        for s in range(subjects):
            person = pattern_person(rng)
            for k in range(2):
                save_image(src / label / f"{label}{s}_{k}.png", pattern_photo(person, rng))
    return src


def _donors(root: Path, rng: np.random.Generator, *, people: int = 2, flat_files: int = 1) -> Path:
    """Donor faces: ``people`` sub-folders ``p0/``, ``p1/`` (2 photos each, one person each) and loose files."""
    src = root / "donors"
    for p in range(people):
        person = pattern_person(rng)
        for k in range(2):
            save_image(src / f"p{p}" / f"{k}.png", pattern_photo(person, rng))
    for f in range(flat_files):
        save_image(src / f"loose{f}.png", pattern_photo(pattern_person(rng), rng))
    return src


def _resized_jpeg(path: Path, out: Path) -> None:
    """A re-encoded, resized copy of ``path`` (80 %, JPEG q90): a near-duplicate with other bytes."""
    im = Image.open(path).convert("RGB")
    out.parent.mkdir(parents=True, exist_ok=True)
    im.resize((int(im.width * 0.8), int(im.height * 0.8)), Image.LANCZOS).save(out, format="JPEG", quality=90)


def _ws(root: Path) -> Workspace:
    return Workspace.open(root / "ws", create=True)


# --- ingest --------------------------------------------------------------------------------------------------------


def test_cli_ingest_donors_end_to_end_no_label_no_split_subjects_from_folders(tmp_path, rng):
    patients, donors = _patients(tmp_path, rng), _donors(tmp_path, rng)
    ws_dir = tmp_path / "ws"
    assert runner.invoke(app, ["ingest", str(patients), "-w", str(ws_dir)]).exit_code == 0
    res = runner.invoke(app, ["ingest", str(donors), "-w", str(ws_dir), "--donors"])
    assert res.exit_code == 0, res.output
    assert flat("The manifest now holds 21 images (16 real, 0 synthetic) in 2 classes, and 5 donor faces "
                "(no class, never split).") in flat(res.output)
    df = Workspace.open(ws_dir).load_manifest()
    donor_rows = df[df["source"] == mf.DONOR].sort_values("path")
    assert len(donor_rows) == 5 and donor_rows["label"].isna().all() and donor_rows["split"].isna().all()
    # a sub-folder is one donor person (never a label); a loose file is its own subject
    subject = dict(zip(donor_rows["path"].map(lambda p: Path(p).relative_to(donors).as_posix()),
                       donor_rows["subject_id"]))
    loose_id = donor_rows.loc[donor_rows["path"].str.endswith("loose0.png"), "image_id"].iloc[0]
    assert subject == {"loose0.png": loose_id, "p0/0.png": "p0", "p0/1.png": "p0", "p1/0.png": "p1",
                       "p1/1.png": "p1"}
    assert mf.real_classes(df) == ["A", "B"]  # the N-way label space: no "p0", no "p1"
    assert len(mf.donors(df)) == 5
    # the same ingest again changes nothing
    again = runner.invoke(app, ["ingest", str(donors), "-w", str(ws_dir), "--donors"])
    assert again.exit_code == 0 and Workspace.open(ws_dir).load_manifest().equals(df)

    shown = runner.invoke(app, ["manifest", "-w", str(ws_dir)])
    assert shown.exit_code == 0
    rows = {c[0]: c[1] for c in ([x.strip() for x in line.split("│")[1:-1]] for line in shown.output.splitlines()
                                 if line.count("│") == 3)}
    assert (rows["real"], rows["donor faces"], rows["donor faces usable"], rows["classes"], rows["subjects"]) == (
        "16", "5", "5", "2", "16")  # subjects: patients only (each photo its own here)


def test_summary_counts_donors_apart_from_real_classes_and_subjects():
    df = mf.conform(pd.DataFrame([
        {"image_id": "a", "path": "a.png", "label": "A", "subject_id": "s1", "source": "real"},
        {"image_id": "b", "path": "b.png", "label": "B", "subject_id": "s2", "source": "real"},
        {"image_id": "d1", "path": "d1.png", "subject_id": "p0", "source": "donor"},
        {"image_id": "d2", "path": "d2.png", "subject_id": "p1", "source": "donor", "exclude_reason": DONOR_IS_PATIENT},
    ]))
    s = mf.summarize(df)
    assert (s["real"], s["donors"], s["donors_usable"], s["classes"], s["subjects"]) == (2, 2, 1, 2, 2)
    assert s["by_split"] == {"unsplit": 2}


def test_donors_with_synthetic_is_a_one_line_error(tmp_path, rng):
    donors = _donors(tmp_path, rng)
    res = runner.invoke(app, ["ingest", str(donors), "-w", str(tmp_path / "ws"), "--donors", "--synthetic",
                              "--generator", "x"])
    assert res.exit_code == 2
    assert flat("--donors and --synthetic exclude each other") in flat(res.output)
    assert "Traceback" not in res.output and not (tmp_path / "ws").exists()


def test_a_patient_photo_brought_as_a_donor_and_back_is_refused_with_a_reason(tmp_path, rng):
    patients = _patients(tmp_path, rng)
    ws = _ws(tmp_path)
    ingest(patients, ws)
    mixed = tmp_path / "mixed"
    (mixed / "p9").mkdir(parents=True)
    (mixed / "p9" / "copy.png").write_bytes((patients / "A" / "A0_0.png").read_bytes())
    save_image(mixed / "new.png", pattern_photo(pattern_person(rng), rng))
    r = ingest(mixed, ws, donors=True)
    assert (r.added, r.skipped["identical-to-real"]) == (1, 1)
    report = pd.read_csv(ws.ingest_report_path, dtype=str, keep_default_na=False)
    row = report[report["path"] == "p9/copy.png"].iloc[0]
    assert row["reason"] == "identical-to-real" and "cannot be both a donor face" in row["detail"]
    df = ws.load_manifest()
    assert (df["source"] == mf.DONOR).sum() == 1 and df["image_id"].is_unique

    # only patient photos in a donor folder: nothing taken, a clear error naming the reason
    only = tmp_path / "only"
    (only / "x").mkdir(parents=True)
    (only / "x" / "a.png").write_bytes((patients / "B" / "B1_1.png").read_bytes())
    res = runner.invoke(app, ["ingest", str(only), "-w", str(ws.root), "--donors"])
    assert res.exit_code == 2 and "identical-to-real: 1" in res.output

    # and the other way: a donor face brought as a patient photo
    cls = tmp_path / "as_patient"
    (cls / "A").mkdir(parents=True)
    (cls / "A" / "n.png").write_bytes((mixed / "new.png").read_bytes())
    with pytest.raises(NothingIngestedError, match="identical-to-donor"):
        ingest(cls, ws)
    report = pd.read_csv(ws.ingest_report_path, dtype=str, keep_default_na=False)
    assert "cannot be both a donor face" in report.loc[report["path"] == "A/n.png", "detail"].iloc[0]
    assert ws.load_manifest().equals(df)


def test_a_donor_table_with_labels_is_refused_one_without_is_taken(tmp_path, rng):
    donors = _donors(tmp_path, rng, people=0, flat_files=2)
    ws = _ws(tmp_path)
    (donors / "t.csv").write_text("path,label\nloose0.png,Kabuki\nloose1.png,\n")
    with pytest.raises(PhenosynthError, match="donor faces carry no condition label"):
        ingest(donors / "t.csv", ws, donors=True)
    (donors / "t.csv").write_text("path,subject_id,consent\nloose0.png,v1,2024-01\nloose1.png,v2,2024-02\n")
    r = ingest(donors / "t.csv", ws, donors=True)
    assert r.added == 2
    df = ws.load_manifest()
    assert df["label"].isna().all() and sorted(df["subject_id"]) == ["v1", "v2"]
    assert sorted(df["consent"]) == ["2024-01", "2024-02"] and set(df["source"]) == {mf.DONOR}


def test_ingest_with_layout_options_keeps_folder_names_out_of_labels(tmp_path, rng):
    donors = _donors(tmp_path, rng, people=2, flat_files=0)
    ws = _ws(tmp_path)
    ingest(donors, ws, donors=True, options=LayoutOptions(subject_regex=r"p(\d)/"))
    df = ws.load_manifest()
    assert df["label"].isna().all() and sorted(df["subject_id"].unique()) == ["0", "1"]


# --- split and leakage ---------------------------------------------------------------------------------------------


def _split_columns(ws: Workspace) -> pd.DataFrame:
    df = ws.load_manifest()
    real = df[df["source"] == mf.REAL]
    return real.set_index(real["image_id"])[["split", "fold"]].sort_index()


def test_split_never_splits_or_folds_donors_and_gives_the_real_images_the_same_split(tmp_path, rng):
    patients = _patients(tmp_path, rng, classes="ABC")
    donors = _donors(tmp_path, rng, people=3)
    plain, with_donors = Workspace.open(tmp_path / "plain", create=True), _ws(tmp_path)
    ingest(patients, plain)
    ingest(patients, with_donors)
    ingest(donors, with_donors, donors=True)
    a = split(plain, test_size=0.25, folds=3, seed=1)
    b = split(with_donors, test_size=0.25, folds=3, seed=1)
    pd.testing.assert_frame_equal(_split_columns(plain), _split_columns(with_donors))
    assert (a.n_train, a.n_test, a.classes, a.images_per_fold) == (b.n_train, b.n_test, b.classes, b.images_per_fold)
    assert (b.n_donors, b.flagged_donors) == (7, [])
    df = with_donors.load_manifest()
    d = df[df["source"] == mf.DONOR]
    assert d["split"].isna().all() and d["fold"].isna().all() and d["label"].isna().all()
    assert_no_leakage(with_donors)  # clean


def test_a_donor_that_is_a_near_duplicate_of_a_patient_photo_is_excluded_with_a_reason(tmp_path, rng):
    patients = _patients(tmp_path, rng)
    donors = _donors(tmp_path, rng, people=1, flat_files=1)
    _resized_jpeg(patients / "A" / "A1_0.png", donors / "p7" / "resized.jpg")  # a patient, filed as a donor
    ws = _ws(tmp_path)
    ingest(patients, ws)
    r = ingest(donors, ws, donors=True)
    assert r.added == 4 and len(r.donors_like_patients) == 1
    df = ws.load_manifest()
    bad = df[df["path"].str.endswith("resized.jpg")].iloc[0]
    assert bad["exclude_reason"] == DONOR_IS_PATIENT and bad["image_id"] == r.donors_like_patients[0]
    assert len(mf.donors(df)) == 3 and bad["image_id"] not in set(mf.donors(df)["image_id"])

    res = runner.invoke(app, ["split", "-w", str(ws.root), "--folds", "2"])
    assert res.exit_code == 0, res.output
    assert flat("1 donor face(s) excluded") in flat(res.output)
    assert flat("3 donor faces are never split or folded") in flat(res.output)
    report = pd.read_csv(ws.split_report_path, dtype=str, keep_default_na=False)
    row = report[report["kind"] == DONOR_NEAR_PATIENT_KIND].iloc[0]
    assert row["image_id"] == bad["image_id"] and row["other_path"].endswith("A1_0.png")
    assert "a donor must never be a patient" in row["detail"]
    assert ws.load_manifest().set_index("image_id").at[bad["image_id"], "exclude_reason"] == DONOR_IS_PATIENT


def test_a_donor_released_when_no_patient_photo_is_near_any_more():
    df = mf.conform(pd.DataFrame([
        {"image_id": "d1", "path": "d1.png", "source": "donor", "exclude_reason": DONOR_IS_PATIENT},
        {"image_id": "d2", "path": "d2.png", "source": "donor", "exclude_reason": "no-face"},
        {"image_id": "r1", "path": "r1.png", "label": "A", "source": "real"},
    ]))
    out, flagged = exclude_patient_donors(None, df, pairs=[])
    assert flagged == [] and pd.isna(out.at[0, "exclude_reason"]) and out.at[1, "exclude_reason"] == "no-face"
    again, flagged = exclude_patient_donors(None, out, pairs=[("d1", "r1", 2), ("d2", "r1", 3)])
    assert flagged == ["d1", "d2"]
    assert again["exclude_reason"].tolist()[:2] == [DONOR_IS_PATIENT, "no-face"]  # another reason is kept


@pytest.mark.parametrize("field,value,what", [("split", "train", "a split"), ("fold", 1, "a validation fold"),
                                              ("label", "A", "a label"), ("split", "test", "a split")])
def test_assert_no_leakage_flags_a_donor_with_a_split_fold_or_label(field, value, what):
    rows = [
        {"image_id": f"{c}{i}", "path": f"{c}{i}.png", "label": c, "subject_id": f"{c}{i}", "source": "real",
         "split": "test" if i == 0 else "train", "fold": None if i == 0 else i % 2}
        for c in "AB" for i in range(3)
    ] + [{"image_id": "d1", "path": "donors/d1.png", "subject_id": "p0", "source": "donor"}]
    clean = mf.conform(pd.DataFrame(rows))
    assert_no_leakage(clean)
    rows[-1][field] = value
    with pytest.raises(LeakageError, match=f"1 donor face\\(s\\) with {what} \\(donors/d1.png\\)"):
        assert_no_leakage(mf.conform(pd.DataFrame(rows)))
    rows[-1]["exclude_reason"] = "no-face"  # excluded or not: a donor never carries one
    with pytest.raises(LeakageError, match="donor face"):
        assert_no_leakage(mf.conform(pd.DataFrame(rows)))


# --- downstream: selection, training, study, face pass -------------------------------------------------------------


def _add_donor_rows(ws: Workspace, n: int = 4) -> list[str]:
    """Donor rows (no files needed downstream: nothing may read them) appended to the manifest; their ids."""
    df = ws.load_manifest()
    ids = [f"donor{i}" for i in range(n)]
    new = pd.DataFrame({"image_id": ids, "path": [f"donors/{i}.png" for i in ids], "subject_id": ids,
                        "source": mf.DONOR})
    ws.save_manifest(mf.append_rows(df, new))
    return ids


def test_selection_candidates_and_class_counts_ignore_donors(tmp_path, make_feature_workspace):
    from phenosynth.synth.selection import candidate_counts, select_for_training, selection_candidates

    ws = make_feature_workspace(tmp_path, n_classes=3, per_class_syn=4, dims=(("shape68", 4),))
    before = ws.load_manifest()
    picked = select_for_training(ws, before, strategy="random", n=6, seed=3)
    donor_ids = _add_donor_rows(ws)
    after = ws.load_manifest()
    cand = selection_candidates(ws, after, strategy="top-per-class")
    assert not set(cand["image_id"]) & set(donor_ids)
    assert candidate_counts(after, cand) == {"c0": 4, "c1": 4, "c2": 4}
    assert select_for_training(ws, after, strategy="random", n=6, seed=3) == picked


def test_a_study_on_a_workspace_with_donors_gives_the_same_results_csv(tmp_path, make_feature_workspace):
    from phenosynth.study.runner import load_feature_file, run_study, save_feature_file, study_image_ids

    ws = make_feature_workspace(tmp_path, n_classes=3, per_class_syn=6, dims=(("shape68", 8),))
    spec = {"backbones": ["shape68"], "regimes": {"real": True, "synthetic": [6], "mixed": [6]}, "folds": 2,
            "trainer": {"mode": "probe", "hparams": {"C": [0.1, 1.0]}}, "features_from": str(ws.root / "features")}
    run_study(ws, spec, "plain", executor="serial", build_report=False)
    donor_ids = _add_donor_rows(ws)
    # donors even have features (as a feature pass over the whole manifest would give): still never used
    ids, X = load_feature_file(ws.root / "features", "shape68")
    rng = np.random.default_rng(5)
    save_feature_file(ws.root / "features", "shape68", list(ids) + donor_ids,
                      np.vstack([X, rng.normal(0, 50, (len(donor_ids), X.shape[1]))]))
    assert not set(study_image_ids(ws)) & set(donor_ids)
    res = run_study(ws, spec, "with-donors", executor="serial", build_report=False)
    plain = (ws.runs_dir / "plain" / "results.csv").read_bytes()
    assert (res.run_dir / "results.csv").read_bytes() == plain


def test_training_on_a_workspace_with_ingested_donors_gives_the_same_results_csv(tmp_path, rng, monkeypatch,
                                                                                 make_colour_workspace):
    import torch
    from torch import nn

    from phenosynth.models import backbones as B
    from phenosynth.training import TrainConfig, train

    ws, paths = make_colour_workspace(tmp_path, n_classes=3, per_class=6, folds=2, synthetic_per_class=3)
    asked: list[str] = []

    def fake_crops(ws_, image_ids, size=224, on_progress=None, **kw):
        asked.extend(image_ids)
        return {i: paths[i] for i in image_ids}

    monkeypatch.setattr("phenosynth.faces.align.ensure_aligned_crops", fake_crops)

    def tiny(spec, path):
        torch.manual_seed(0)
        return B.TorchBackbone(spec, nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                                   nn.Flatten()))

    cfg = TrainConfig(backbone="donor-tiny", weights="none", preprocessing="native", regime="mixed", n_synthetic=4,
                      selection="random", folds=2, seeds=[0], hparams={"C": [1.0]})
    with B.registered_backbone(B.BackboneSpec(name="donor-tiny", embed_dim=4, native_input_size=32), tiny):
        train(ws, cfg, "plain")
        donors = _donors(tmp_path, rng, people=2)
        ingest(donors, ws, donors=True)
        donor_ids = set(mf.donors(ws.load_manifest())["image_id"])
        assert len(donor_ids) == 5
        train(ws, cfg, "with-donors")  # (features of the training images come from the cache; a donor's would not)
    assert asked and not set(asked) & donor_ids  # no donor face is even cropped
    plain = (ws.runs_dir / "plain" / "results.csv").read_bytes()
    assert (ws.runs_dir / "with-donors" / "results.csv").read_bytes() == plain
    assert pd.read_csv(ws.runs_dir / "with-donors" / "results.csv")["n_classes"].eq(3).all()


def test_the_face_pass_processes_donor_faces(tmp_path, make_photo_workspace):
    from phenosynth.faces.facepass import load_faces, run_face_pass
    from tests._faces_data import face_image

    ws, ids = make_photo_workspace(tmp_path, {"patient": face_image(160)})
    donor_path = tmp_path / "donors" / "d.png"
    donor_id = save_image(donor_path, face_image(180))
    ws.save_manifest(mf.append_rows(ws.load_manifest(), pd.DataFrame(
        [{"image_id": donor_id, "path": str(donor_path), "subject_id": "p0", "source": mf.DONOR}])))
    summary = run_face_pass(ws, workers=1)
    assert summary.computed == 2
    faces = load_faces(ws)
    assert donor_id in faces.index and faces.at[donor_id, "status"] == "ok"
    assert np.asarray(faces.at[donor_id, "landmarks"]).shape == (68, 2)


def test_the_manifest_export_shows_donors_without_label_or_split(tmp_path, rng):
    """The manifest's CSV export (what a user hands on) shows donors with source donor, an empty label and split."""
    donors = _donors(tmp_path, rng, people=1, flat_files=0)
    ws = _ws(tmp_path)
    ingest(donors, ws, donors=True)
    out = tmp_path / "m.csv"
    ws.export_manifest_csv(out)
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert set(table["source"]) == {"donor"} and set(table["label"]) == {""} and set(table["split"]) == {""}
    assert sorted(table["subject_id"]) == ["p0", "p0"]


def test_ranking_ignores_donor_faces(tmp_path, rng, make_landmark_workspace):
    from phenosynth.synth.ranking import rank
    from tests._workspaces import ASTRONAUT_BOX, astronaut_landmarks, face_row, faces_table

    ws, faces = make_landmark_workspace(tmp_path)
    syn = [{"image_id": f"syn{c}", "path": f"synthetic/x/syn{c}.png", "label": c, "source": "synthetic",
            "generator": "shape-warp", "split": "train"} for c in "ABC"]
    ws.save_manifest(mf.append_rows(ws.load_manifest(), pd.DataFrame(syn)))
    faces = pd.concat([faces, faces_table([face_row(r["image_id"], astronaut_landmarks(r["label"], rng),
                                                    ASTRONAUT_BOX) for r in syn])])
    rank(ws, "shape68", faces=faces)
    before = pd.read_parquet(ws.root / "ranking.parquet")
    donor_ids = _add_donor_rows(ws, 3)
    # donors with (odd) faces: were they taken as real training faces, the class prototypes would move
    with_donors = pd.concat([faces, faces_table([face_row(i, astronaut_landmarks("A", rng) * 1.3, ASTRONAUT_BOX)
                                                 for i in donor_ids])])
    s = rank(ws, "shape68", faces=with_donors)
    assert s.ranked == 3
    pd.testing.assert_frame_equal(pd.read_parquet(ws.root / "ranking.parquet"), before)


def test_the_report_lists_donor_faces_apart():
    from phenosynth.study.report.context import WorkspaceStats
    from phenosynth.study.report.page import dataset_items

    df = mf.conform(pd.DataFrame([
        {"image_id": "a", "path": "a.png", "label": "A", "subject_id": "s1", "source": "real", "split": "train"},
        {"image_id": "b", "path": "b.png", "label": "B", "subject_id": "s2", "source": "real", "split": "test"},
        {"image_id": "d1", "path": "d1.png", "subject_id": "p0", "source": "donor"},
    ]))
    items = dataset_items(WorkspaceStats(manifest=mf.summarize(df)))
    assert items["donor faces (identities, never a class or a split)"] == 1
    assert (items["real"], items["classes"], items["subjects"]) == (2, 2, 2)
    no_donors = dataset_items(WorkspaceStats(manifest=mf.summarize(df.iloc[:2])))
    assert not any(k.startswith("donor") for k in no_donors)


def test_a_study_resumes_after_donors_were_ingested(tmp_path, make_feature_workspace):
    from phenosynth.study.runner import manifest_digest, run_study

    ws = make_feature_workspace(tmp_path, n_classes=3, per_class_syn=4, dims=(("shape68", 4),))
    before = manifest_digest(ws.load_manifest())
    spec = {"backbones": ["shape68"], "regimes": {"real": True}, "folds": 2,
            "trainer": {"mode": "probe", "hparams": {"C": [1.0]}}, "features_from": str(ws.root / "features")}
    run_study(ws, spec, "r", executor="serial", build_report=False)
    _add_donor_rows(ws)
    assert manifest_digest(ws.load_manifest()) == before
    res = run_study(ws, spec, "r", resume=True, executor="serial", build_report=False)
    assert (res.n_resumed, res.n_ran) == (2, 0)
