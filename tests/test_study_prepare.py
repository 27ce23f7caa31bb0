"""`prepare_study`'s generation branch: a spec with a generator, on a split workspace with faces but no synthetic
images, generates them, runs the face pass on the new images, ranks them and extracts features (tiny demo data: 2 conditions
of 4 people)."""

from __future__ import annotations

import pandas as pd

from phenosynth.data.ingest import ingest
from phenosynth.data.split import split
from phenosynth.data.workspace import Workspace
from phenosynth.demo.dataset import CONDITIONS, build_demo_dataset
from phenosynth.faces.facepass import load_faces, run_face_pass
from phenosynth.study.runner import prepare_study
from phenosynth.study.spec import StudySpec


def test_prepare_study_generates_runs_the_face_pass_and_ranks(tmp_path):
    demo = build_demo_dataset(tmp_path / "data", seed=0, n_subjects=4,
                              conditions={k: CONDITIONS[k] for k in ("sim01", "sim05")})
    ws = Workspace.open(tmp_path / "ws", create=True)
    ingest(demo.metadata_csv, ws)
    split(ws, test_size=0.25, folds=2, seed=42)
    run_face_pass(ws, workers=1)
    real_ids = set(ws.load_manifest()["image_id"])
    assert not (ws.root / "ranking.parquet").exists()
    spec = StudySpec.model_validate({
        "backbones": ["shape68"], "regimes": {"real": True, "synthetic": [2]}, "folds": 2, "allow_fewer": True,
        "selection": "top-per-class", "representation": "shape68",
        "generator": {"name": "shape-warp", "per_class": 2, "seed": 0}})
    prepare_study(ws, spec)
    m = ws.load_manifest()
    new = m[~m["image_id"].isin(real_ids)]
    assert (new["source"] == "synthetic").all() and set(new["generator"]) == {"shape-warp"}
    assert new["label"].value_counts().sort_index().to_dict() == {"sim01": 2, "sim05": 2}
    faces = load_faces(ws, ok_only=False)
    assert faces.loc[new["image_id"], "status"].tolist() == ["ok"] * 4  # the face pass took the new images
    ranking = pd.read_parquet(ws.root / "ranking.parquet")
    assert set(ranking["image_id"]) == set(new["image_id"]) and set(ranking["representation"]) == {"shape68"}
