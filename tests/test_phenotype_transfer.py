"""The identity-free generator ``phenotype-transfer`` and lineage by role (issue 12, items 2 and 4): morph identities
of k subjects from one fold, donors, determinism, refusal of test photos in every role, and the leakage rules per
role (test rule: pixel and statistic parents; fold rule: pixel parents only)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from phenosynth.data.imageio import load_rgb
from phenosynth.data.leakage import (
    FIT_ON_VALIDATION, PARENT_IN_TEST, PARENT_IN_VALIDATION, STATISTIC_IN_TEST, assert_no_leakage,
    exclude_leaked_synthetic, exclude_validation_children, load_fit_sets, load_pixel_fit_sets,
)
from phenosynth.errors import LeakageError, PhenosynthError
from phenosynth.synth.generators import Identities, create_generator
from tests._workspaces import (
    PATTERN_BOX, faces_parquet_rows, in_box, pattern_person, pattern_photo, template68, write_faces_parquet,
)


def _fit_inputs(ws, faces, rows):
    return dict(
        images=[load_rgb(ws.resolve(p)) for p in rows["path"]],
        landmarks=np.stack([faces.at[i, "landmarks"] for i in rows["image_id"]]),
        labels=rows["label"].tolist(), image_ids=rows["image_id"].tolist(), splits=rows["split"].tolist(),
        sources=rows["source"].tolist(), folds=rows["fold"].tolist(), subjects=rows["subject_id"].tolist(),
    )


def _with_phenotype(faces: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """Condition A's faces get wide-set eyes (a shape phenotype the fit can learn)."""
    out = faces.copy()
    label = manifest.set_index("image_id")["label"]
    t = template68()
    wide = t.copy()
    wide[36:42, 0] -= 0.05
    wide[42:48, 0] += 0.05
    out["landmarks"] = [in_box(wide if label[i] == "A" else t, PATTERN_BOX) for i in out.index]
    return out


@pytest.fixture
def patients(tmp_path, make_patient_workspace):
    """3 conditions x 4 patients x 2 photos; patient 3 of each condition is held out (test); folds 0-2 by patient."""
    ws, _, faces = make_patient_workspace(tmp_path)
    m = ws.load_manifest()
    return ws, m, _with_phenotype(faces, m)


def _train(m: pd.DataFrame) -> pd.DataFrame:
    return m[(m["source"] == "real") & (m["split"] == "train")]


def test_a_morph_identity_blends_k_subjects_of_one_fold_spread_over_conditions(patients) -> None:
    ws, m, faces = patients
    train = _train(m)
    gen = create_generator("phenotype-transfer", k=3).fit(**_fit_inputs(ws, faces, train))
    assert gen.uses_patient_pixels is True  # morphs: patients' pixels, blended
    subject, fold = train.set_index("image_id")["subject_id"], train.set_index("image_id")["fold"]
    label = train.set_index("image_id")["label"]
    for s in gen.sample(6, seed=0):
        assert len(s.parents) == 3 and subject[s.parents].nunique() == 3  # >= k distinct subjects in its lineage
        assert fold[s.parents].nunique() == 1 and int(fold[s.parents].iloc[0]) == s.params["morph_fold"]
        assert label[s.parents].nunique() == 3 == s.params["morph_conditions"]  # one per condition of the fold
        own = set(train.loc[train["label"] == s.label, "image_id"])
        assert set(s.statistic_parents) == own - set(s.parents)  # the phenotype's photos, roles disjoint
        assert s.params["identity"] == "morph" and s.image.dtype == np.uint8
    # a new k-subset for each image
    assert len({tuple(sorted(s.parents)) for s in gen.sample(8, seed=0, labels=["A"])}) > 1
    # the default k (6) needs 6 subjects in one fold; this workspace has 3 per fold: a clear error, not a smaller k
    with pytest.raises(PhenosynthError, match="k=6 subjects of one validation fold.*largest fold has 3"):
        create_generator("phenotype-transfer").fit(**_fit_inputs(ws, faces, train))


def test_the_condition_phenotype_moves_the_landmarks_and_same_seed_is_bit_identical(patients) -> None:
    ws, m, faces = patients
    inputs = _fit_inputs(ws, faces, _train(m))
    a = create_generator("phenotype-transfer", k=3, max_rotation=0.0, max_scale=0.0, max_shift=0.0).fit(**inputs)
    b = create_generator("phenotype-transfer", k=3, max_rotation=0.0, max_scale=0.0, max_shift=0.0).fit(**inputs)
    for label in ("A", "B"):
        one, two = a.sample_one(label, 3, seed=5), b.sample_one(label, 3, seed=5)
        assert np.array_equal(one.image, two.image) and one.parents == two.parents and one.params == two.params
    assert not np.array_equal(a.sample_one("A", 3, seed=5).image, a.sample_one("A", 3, seed=6).image)
    # image i does not depend on how many images are asked for
    assert np.array_equal(list(a.sample(4, seed=1, labels=["C"]))[2].image, a.sample_one("C", 2, seed=1).image)
    # the phenotype: A's offset widens the eyes of the (phenotype-free) morph; strength 0 leaves the mean shape
    model = a.shape_model_
    offset = model.offset_from_scores(model.class_means_[model.classes_.index("A")][None])[0]
    eye_gap = offset[42:48, 0].mean() - offset[36:42, 0].mean()
    assert eye_gap > 0.05  # in the model frame (unit RMS radius)


def test_test_photos_are_refused_in_every_role(patients) -> None:
    ws, m, faces = patients
    real = m[m["source"] == "real"]
    test = real[real["split"] == "test"]
    # as morph members or phenotype sources: both come from the fit set, where a test photo is refused
    with_test = pd.concat([_train(m), test.iloc[:1]])
    with pytest.raises(LeakageError, match="held-out test image"):
        create_generator("phenotype-transfer", k=3).fit(**_fit_inputs(ws, faces, with_test))
    # as identities: a test photo handed over as a donor
    inputs = _fit_inputs(ws, faces, _train(m))
    as_identity = Identities(images=[load_rgb(ws.resolve(p)) for p in test["path"]],
                             landmarks=np.stack([faces.at[i, "landmarks"] for i in test["image_id"]]),
                             image_ids=test["image_id"].tolist(), sources=test["source"].tolist(),
                             splits=test["split"].tolist())
    with pytest.raises(LeakageError, match="test image.*as identities"):
        create_generator("phenotype-transfer", k=3).fit(**inputs, identities=as_identity)
    # a patient's training photo is not a donor either
    train = _train(m).iloc[:2]
    patient = Identities(images=[load_rgb(ws.resolve(p)) for p in train["path"]],
                         landmarks=np.stack([faces.at[i, "landmarks"] for i in train["image_id"]]),
                         image_ids=train["image_id"].tolist(), sources=train["source"].tolist(),
                         splits=train["split"].tolist())
    with pytest.raises(PhenosynthError, match="not donors"):
        create_generator("phenotype-transfer", k=3).fit(**inputs, identities=patient)
    with pytest.raises(PhenosynthError, match="does not take identities"):
        create_generator("shape-warp").fit(**inputs, identities=patient)


def test_donor_identities_are_the_only_pixel_parents_and_no_patient_pixels(patients) -> None:
    ws, m, faces = patients
    rng = np.random.default_rng(3)
    donors = [pattern_photo(pattern_person(rng), rng) for _ in range(2)]
    identities = Identities(images=donors, landmarks=np.stack([in_box(template68(), PATTERN_BOX)] * 2),
                            image_ids=["donor0", "donor1"], sources=["donor", "donor"], splits=[None, None])
    gen = create_generator("phenotype-transfer", k=8, texture_strength=0.5).fit(  # k unused with donors
        **_fit_inputs(ws, faces, _train(m)), identities=identities)
    assert gen.uses_patient_pixels is False and type(gen).uses_patient_pixels is True
    for s in gen.sample(3, seed=0):
        assert s.parents in (["donor0"], ["donor1"]) and s.params["identity"] == "donor"
        assert len(s.statistic_parents) == 6  # the condition's 3 patients x 2 photos shaped its phenotype


def _lineage_manifest(m: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """``m`` plus three synthetic images of run r1: one with pixel parent P (a fold-0 photo), one with P only as a
    statistic source, one with neither. P's id is returned too."""
    train = _train(m)
    p = str(train.loc[train["fold"] == 0, "image_id"].iloc[0])
    other = str(train.loc[train["fold"] == 1, "image_id"].iloc[0])
    rows = [{"image_id": f"syn{i}", "path": f"synthetic/r1/{i}.png", "label": "A", "source": "synthetic",
             "generator": "phenotype-transfer", "split": "train", "parents": parents, "statistic_parents": stats,
             "params": json.dumps({"run": "r1"})}
            for i, (parents, stats) in enumerate([([p], [other]), ([other], [p]), ([other], [])])]
    return pd.concat([m, pd.DataFrame(rows)], ignore_index=True), p


def test_the_test_rule_covers_both_roles_the_fold_rule_pixel_parents_only(patients) -> None:
    ws, m, _ = patients
    from phenosynth.data.manifest import conform

    manifest, p = _lineage_manifest(m)
    manifest = conform(manifest)
    # fold rule: fold 0 validates on P -> the image with P's pixels is out, the one whose phenotype P shaped stays
    fold0 = exclude_validation_children(manifest, [p])
    reasons = fold0.set_index("image_id").loc[["syn0", "syn1", "syn2"], "exclude_reason"]
    assert reasons.iloc[0] == PARENT_IN_VALIDATION and reasons.iloc[1:].isna().all()
    # test rule: P moves to the test set -> excluded in either role, each with its reason
    manifest.loc[manifest["image_id"] == p, ["split", "fold"]] = ["test", pd.NA]
    flagged_m, flagged = exclude_leaked_synthetic(manifest)
    assert sorted(flagged) == ["syn0", "syn1"]
    by_id = flagged_m.set_index("image_id")["exclude_reason"]
    assert (by_id["syn0"], by_id["syn1"]) == (PARENT_IN_TEST, STATISTIC_IN_TEST) and pd.isna(by_id["syn2"])
    # the pre-training check names both (a manifest not re-split after the move)
    with pytest.raises(LeakageError, match="1 usable synthetic image.*made from a test image.*1 usable synthetic "
                                           "image.*drawn from a statistic of a test image"):
        assert_no_leakage(manifest)


def test_the_fold_rule_drops_a_pixel_source_runs_images_for_folds_in_its_fit_set(patients) -> None:
    """The gap: a run whose pixels come from its whole fit set (a learned image model) names no per-image pixel
    parents; a fold that validates on a photo of that fit set must not train on the run's images."""
    ws, m, _ = patients
    from phenosynth.data.manifest import conform
    from phenosynth.training.cell import fold_manifest

    manifest, p = _lineage_manifest(m)
    manifest = conform(manifest)
    train = _train(m)
    fit = sorted(train["image_id"])
    for run, record in {"r1": {"generator": "phenotype-transfer", "fit_set_role": "statistic"},
                        "gan": {"generator": "some-gan", "fit_set_role": "pixel"},
                        "old-sw": {"generator": "shape-warp"},  # a record from before roles: statistic
                        "old-gan": {"generator": "some-gan"}}.items():  # unknown generator, no role: pixel
        (ws.synthetic_dir / run).mkdir(parents=True)
        (ws.synthetic_dir / run / "run.json").write_text(json.dumps({"run": run, "training_images": fit, **record}))
    assert set(load_fit_sets(ws)) == {"r1", "gan", "old-sw", "old-gan"}
    pixel_runs = load_pixel_fit_sets(ws)
    assert sorted(pixel_runs) == ["gan", "old-gan"]
    gan_rows = pd.DataFrame([{"image_id": f"gan{i}", "path": f"synthetic/gan/{i}.png", "label": "B",
                              "source": "synthetic", "generator": "some-gan", "split": "train",
                              "params": json.dumps({"run": "gan"})} for i in range(2)])
    manifest = conform(pd.concat([manifest, gan_rows], ignore_index=True))
    fm = fold_manifest(manifest, 0, pixel_runs).set_index("image_id")["exclude_reason"]
    assert (fm[["gan0", "gan1"]] == FIT_ON_VALIDATION).all() and fm["syn0"] == PARENT_IN_VALIDATION
    assert fm[["syn1", "syn2"]].isna().all()
    # without the pixel-source record (main's rule) the run's images would be trained on by fold 0
    assert fold_manifest(manifest, 0).set_index("image_id").loc[["gan0", "gan1"], "exclude_reason"].isna().all()


def test_generate_cli_end_to_end_with_morphs_then_donors(patients) -> None:
    from typer.testing import CliRunner

    from phenosynth.cli import app
    from phenosynth.data.manifest import append_rows
    from tests._workspaces import face_row, faces_table, image_row

    ws, m, faces = patients
    write_faces_parquet(ws, faces_parquet_rows(faces))
    runner = CliRunner()
    args = ["generate", "-w", str(ws.root), "-g", "phenotype-transfer", "--per-class", "3", "--workers", "1"]
    out = runner.invoke(app, args + ["-o", "k=3"])
    assert out.exit_code == 0, out.output
    assert "9 images of 3 conditions" in out.output and "from 18 real training faces" in out.output
    manifest = ws.load_manifest()
    syn = manifest[manifest["source"] == "synthetic"]
    test_ids = set(manifest.loc[manifest["split"] == "test", "image_id"])
    subject = manifest.set_index("image_id")["subject_id"]
    assert len(syn) == 9 and all(subject[list(ps)].nunique() == 3 for ps in syn["parents"])
    assert not {p for col in ("parents", "statistic_parents") for ps in syn[col] for p in ps} & test_ids
    record = json.loads((ws.synthetic_dir / "phenotype-transfer-seed0" / "run.json").read_text())
    assert record["fit_set_role"] == "statistic" and record["uses_patient_pixels"] is True
    assert record["settings"]["k"] == 3 and record["donor_images"] == []
    said = " ".join(out.output.split())
    assert "made morph identities (k=3" in said and "ingest DIR -w WS --donors" in said
    out = runner.invoke(app, args + ["-o", "kk=3"])
    assert out.exit_code == 2 and "has no option(s) kk" in out.output
    out = runner.invoke(app, args + ["-o", "k3"])
    assert out.exit_code == 2 and "KEY=VALUE" in out.output

    # with donors in the workspace, they are the identities (no split, no fold, no label)
    rng = np.random.default_rng(1)
    rows = [image_row(ws, ws.root / "donors" / f"d{i}.png", pattern_photo(pattern_person(rng), rng), source="donor")
            for i in range(2)]
    ws.save_manifest(append_rows(ws.load_manifest(), pd.DataFrame(rows)))
    donor_faces = faces_table([face_row(r["image_id"], in_box(template68(), PATTERN_BOX), PATTERN_BOX) for r in rows])
    write_faces_parquet(ws, faces_parquet_rows(pd.concat([faces, donor_faces])))
    out = runner.invoke(app, args + ["--name", "donors"])
    assert out.exit_code == 0, out.output
    manifest = ws.load_manifest()
    run = manifest[manifest["params"].fillna("").str.contains('"run": "donors"')]
    assert len(run) == 9 and {p for ps in run["parents"] for p in ps} <= {r["image_id"] for r in rows}
    record = json.loads((ws.synthetic_dir / "donors" / "run.json").read_text())
    assert record["uses_patient_pixels"] is False and record["donor_images"] == sorted(r["image_id"] for r in rows)
    assert "morph" not in out.output
    # identities=morphs leaves the donors aside: patient pixels again, and run.json lists no donor
    out = runner.invoke(app, args + ["--name", "morphs", "-o", "k=3", "-o", "identities=morphs"])
    assert out.exit_code == 0, out.output
    record = json.loads((ws.synthetic_dir / "morphs" / "run.json").read_text())
    assert record["uses_patient_pixels"] is True and record["donor_images"] == []


def test_identities_option_forces_donors_or_morphs(patients) -> None:
    ws, m, faces = patients
    inputs = _fit_inputs(ws, faces, _train(m))
    with pytest.raises(PhenosynthError, match="identities=donors, but the workspace has no donor faces"):
        create_generator("phenotype-transfer", k=3, identities="donors").fit(**inputs)
    with pytest.raises(PhenosynthError, match="identities must be one of auto, donors, morphs, not 'people'"):
        create_generator("phenotype-transfer", k=3, identities="people").fit(**inputs)
    rng = np.random.default_rng(3)
    identities = Identities(images=[pattern_photo(pattern_person(rng), rng)],
                            landmarks=np.stack([in_box(template68(), PATTERN_BOX)]), image_ids=["donor0"],
                            sources=["donor"], splits=[None])
    gen = create_generator("phenotype-transfer", k=3, identities="morphs").fit(**inputs, identities=identities)
    assert gen.uses_patient_pixels is True and gen.notes() and gen.donor_ids_ == []
    assert all(s.params["identity"] == "morph" and len(s.parents) == 3 for s in gen.sample(2, seed=0))
    gen = create_generator("phenotype-transfer", identities="donors").fit(**inputs, identities=identities)
    assert gen.uses_patient_pixels is False and gen.notes() == []


def test_an_exaggerated_phenotype_is_unfolded_not_torn_and_a_mild_one_is_kept_as_asked(patients) -> None:
    ws, m, faces = patients
    inputs = _fit_inputs(ws, faces, _train(m))
    still = dict(max_rotation=0.0, max_scale=0.0, max_shift=0.0, variation=0.0)
    mild = create_generator("phenotype-transfer", k=3, strength=0.0, **still).fit(**inputs)
    wild = create_generator("phenotype-transfer", k=3, strength=12.0, clip_sd=50.0, **still).fit(**inputs)
    for i in range(4):
        p = mild.sample_one("A", i, seed=3).params
        assert (p["unfold_change"], p["unfold_scale"]) == (0.0, 1.0)  # the morph's own shape: nothing to unfold
    raw = create_generator("phenotype-transfer", k=3, strength=12.0, clip_sd=50.0, unfold=False, **still).fit(**inputs)
    cases = [(label, i) for label in ("A", "B") for i in range(3)]
    unfolded = [wild.sample_one(label, i, seed=3).params for label, i in cases]
    torn = [raw.sample_one(label, i, seed=3).params for label, i in cases]
    assert sum(p["folded_triangles"] for p in torn) > 0  # asked as it is, the exaggerated phenotype tears the face
    assert all(p["folded_triangles"] == 0 and 0.0 <= p["unfold_change"] < 1.0 for p in unfolded)
    assert max(p["unfold_change"] for p in unfolded) > 0.0
    assert all((p["unfold_change"], p["unfold_scale"]) == (0.0, 1.0) for p in torn)


def test_donor_blends_take_one_photo_each_of_several_donor_people_and_say_when_there_are_too_few(patients) -> None:
    ws, m, faces = patients
    rng = np.random.default_rng(4)
    people = [pattern_person(rng) for _ in range(3)]
    photos = [pattern_photo(person, rng) for person in people for _ in range(2)]  # 3 donor people x 2 photos
    ids = [f"donor{i}" for i in range(6)]
    identities = Identities(images=photos, landmarks=np.stack([in_box(template68(), PATTERN_BOX)] * 6),
                            image_ids=ids, sources=["donor"] * 6, splits=[None] * 6,
                            subjects=["ann", "ann", "bob", "bob", "cy", "cy"])
    inputs = _fit_inputs(ws, faces, _train(m))
    gen = create_generator("phenotype-transfer", donor_blend=2).fit(**inputs, identities=identities)
    person = dict(zip(ids, ["ann", "ann", "bob", "bob", "cy", "cy"]))
    samples = list(gen.sample(4, seed=0))
    for s in samples:
        assert len(s.parents) == 2 and len({person[p] for p in s.parents}) == 2  # two different people
        assert set(s.parents) <= set(ids) and s.params["identity"] == "donor-blend"
    assert gen.uses_patient_pixels is False
    assert len({tuple(s.parents) for s in samples}) > 1  # a new blend per image
    again = create_generator("phenotype-transfer", donor_blend=2).fit(**inputs, identities=identities)
    assert np.array_equal(again.sample_one(samples[0].label, 0, seed=0).image, samples[0].image)
    with pytest.raises(PhenosynthError, match="donor_blend=4 blends that many donor people per face, but the "
                                              "workspace has 3"):
        create_generator("phenotype-transfer", donor_blend=4).fit(**inputs, identities=identities)
