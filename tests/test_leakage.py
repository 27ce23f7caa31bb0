"""Planted leaks, each caught by the library alone (no CLI): the leakage rule applied by split(), near-duplicates
grouped as one subject, and assert_no_leakage refusing a workspace whose saved split leaks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from phenosynth.data.ingest import ingest
from phenosynth.data.leakage import (
    FIT_ON_TEST,
    PARENT_IN_TEST,
    assert_no_leakage,
    leakage_problems,
    load_fit_sets,
)
from phenosynth.data.manifest import conform, params_json
from phenosynth.data.split import split
from phenosynth.data.workspace import Workspace
from phenosynth.errors import LeakageError

# --- a manifest without image files (split never reads images) --------------------------------------------------------


def real_rows(n_classes: int = 6, subjects: int = 4, per_subject: int = 2) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"image_id": f"r{c}{s}{k}".ljust(64, "0"), "path": f"photos/c{c}/s{s}_{k}.png", "label": f"cond{c}",
         "subject_id": f"c{c}-s{s}", "source": "real", "phash": f"{rng.integers(0, 2**63):016x}"}
        for c in range(n_classes) for s in range(subjects) for k in range(per_subject)
    ]


def synthetic_row(i: int, label: str, parents: list[str], run: str) -> dict:
    return {"image_id": f"y{i}".ljust(64, "f"), "path": f"synthetic/{run}/{label}/{i}.png", "label": label,
            "subject_id": f"y{i}", "source": "synthetic", "generator": "shape-warp", "parents": parents,
            "split": "train", "params": params_json({"run": run, "angle": 0.1})}


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.save_manifest(conform(pd.DataFrame(real_rows())))
    return ws


def _real(m: pd.DataFrame, side: str) -> pd.DataFrame:
    return m[(m["source"] == "real") & (m["split"] == side)]


def test_a_synthetic_child_of_a_test_photo_added_after_the_split_is_refused_then_excluded_by_split(ws):
    split(ws, seed=42)
    m = ws.load_manifest()
    test_photo = _real(m, "test").iloc[0]
    train_photo = _real(m, "train").iloc[0]
    # a notebook appends two warped copies after the split: one of a test photo, one of a training photo
    child = synthetic_row(0, test_photo["label"], [test_photo["image_id"]], "notebook")
    fine = synthetic_row(1, train_photo["label"], [train_photo["image_id"]], "notebook")
    ws.save_manifest(pd.concat([m, conform(pd.DataFrame([child, fine]))], ignore_index=True))
    with pytest.raises(LeakageError) as err:
        assert_no_leakage(ws)
    msg = str(err.value)
    assert "1 usable synthetic image(s) made from a test image (synthetic/notebook/" in msg
    assert child["path"] in msg and fine["path"] not in msg
    assert f"(phenosynth split -w {ws.root} --test-size 0.25 --folds 5 --seed 42)" in msg
    split(ws, seed=42)  # the library's split applies the rule: the child is excluded, the other stays usable
    reasons = ws.load_manifest().set_index("image_id")["exclude_reason"]
    assert reasons[child["image_id"]] == PARENT_IN_TEST and pd.isna(reasons[fine["image_id"]])
    assert_no_leakage(ws)


def test_a_resplit_that_moves_a_generator_fit_photo_into_test_excludes_the_whole_run(ws):
    split(ws, seed=42)
    m = ws.load_manifest()
    train = _real(m, "train")
    # a generator run as synth.generation records it: its fit set is every real training image at the time; each image
    # warps one of those photos
    run_dir = ws.synthetic_dir / "shape-warp-seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({
        "run": "shape-warp-seed0", "generator": "shape-warp", "seed": 0, "per_class": 1,
        "training_images": sorted(train["image_id"]),
    }, indent=2))
    syn = [synthetic_row(i, r["label"], [r["image_id"]], "shape-warp-seed0")
           for i, (_, r) in enumerate(train.iterrows())]
    ws.save_manifest(pd.concat([m, conform(pd.DataFrame(syn))], ignore_index=True))
    assert set(load_fit_sets(ws)) == {"shape-warp-seed0"}

    r = split(ws, seed=7)  # a re-split: some photos of the fit set move into the test set
    out = ws.load_manifest()
    now_test = set(_real(out, "test")["image_id"])
    assert now_test & set(train["image_id"])  # premise: the generator learned from a photo that is now a test photo
    reasons = out.set_index("image_id").loc[[s["image_id"] for s in syn], "exclude_reason"]
    direct = [bool(set(s["parents"]) & now_test) for s in syn]
    assert any(direct) and not all(direct)  # premise: some were warped from test photos, some from training photos
    assert reasons.notna().all()  # ... and they are excluded all the same: the run learned from a test photo
    assert (reasons[direct] == PARENT_IN_TEST).all() and (reasons[[not d for d in direct]] == FIT_ON_TEST).all()
    assert sorted(r.flagged_synthetic) == sorted(s["image_id"] for s in syn)
    assert r.flagged_by_reason == {FIT_ON_TEST: direct.count(False), PARENT_IN_TEST: direct.count(True)}
    report = pd.read_csv(ws.split_report_path, dtype=str, keep_default_na=False)
    assert (report["kind"] == "synthetic-generator-fit-on-test").sum() == direct.count(False)
    assert_no_leakage(ws)

    split(ws, seed=42)  # back to the split the generator was fit under: released
    assert ws.load_manifest()["exclude_reason"].isna().all()


def test_a_run_record_holding_a_test_photo_with_its_images_still_usable_is_refused(ws):
    split(ws, seed=42)
    m = ws.load_manifest()
    test_photo = _real(m, "test").iloc[0]
    train_photo = _real(m, "train").iloc[0]
    (ws.synthetic_dir / "r1").mkdir(parents=True)
    (ws.synthetic_dir / "r1" / "run.json").write_text(json.dumps(
        {"run": "r1", "training_images": [train_photo["image_id"], test_photo["image_id"]]}))
    row = synthetic_row(0, train_photo["label"], [train_photo["image_id"]], "r1")
    ws.save_manifest(pd.concat([m, conform(pd.DataFrame([row]))], ignore_index=True))
    with pytest.raises(LeakageError, match=r"1 usable synthetic image\(s\) from a generator run fit on a test image "
                                           r"\(synthetic/r1/"):
        assert_no_leakage(ws)


def test_one_subject_on_both_sides_is_refused_naming_the_images(ws):
    split(ws, seed=42)
    m = ws.load_manifest()
    i_test = _real(m, "test").index[0]
    i_train = _real(m, "train").index[0]
    m.loc[i_test, "subject_id"] = m.loc[i_train, "subject_id"]  # a hand edit: one person on both sides
    ws.save_manifest(m)
    problems = leakage_problems(ws.load_manifest())
    assert len(problems) == 1 and problems[0].startswith(f"1 subject(s) on both sides of the split ({m.at[i_train, 'subject_id']};")
    with pytest.raises(LeakageError) as err:
        assert_no_leakage(ws)
    assert m.at[i_test, "path"] in str(err.value) and m.at[i_train, "path"] in str(err.value)


def test_study_refuses_a_leaking_workspace_before_writing_anything(ws):
    from phenosynth.study.runner import run_study

    split(ws, seed=42)
    m = ws.load_manifest()
    m.loc[_real(m, "test").index[0], "subject_id"] = m.loc[_real(m, "train").index[0], "subject_id"]
    ws.save_manifest(m)
    spec = {"backbones": ["shape68"], "regimes": {"real": True}, "folds": 2, "seeds": [0]}
    with pytest.raises(LeakageError, match="subject\\(s\\) on both sides"):
        run_study(ws, spec, "s1", executor="serial", cell_fn="no_such_module:never_called")
    assert not (ws.runs_dir / "s1").exists()


# --- copies of a photo under another subject, through ingest ----------------------------------------------------------


def smooth_face(rng: np.random.Generator, side: int = 96) -> Image.Image:
    """A smooth random image (an upsampled 6x6 colour grid): distinct images are far apart in perceptual hash."""
    return Image.fromarray(rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)).resize((side, side), Image.BICUBIC)


def photo_set(root: Path, copy: str) -> tuple[Path, str, str]:
    """A csv-layout photo set: 4 conditions x 4 subjects x 2 photos, plus a copy of photo c0/s0_0 filed under a
    new subject of condition 0 (``copy``: ``resized`` = 80 % size re-encoded as JPEG q80; ``pixels`` = the same
    pixels saved as PNG with other settings; ``bytes`` = the same file). Returns (table, original, copy paths)."""
    rng = np.random.default_rng(3)
    rows = []
    for c in range(4):
        for s in range(4):
            for k in range(2):
                p = root / f"c{c}" / f"s{s}_{k}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                smooth_face(rng).save(p, compress_level=6)
                rows.append({"path": p.relative_to(root).as_posix(), "label": f"cond{c}", "subject_id": f"c{c}-s{s}"})
    original = root / "c0" / "s0_0.png"
    img = Image.open(original)
    if copy == "resized":
        target = root / "c0" / "other.jpg"
        img.resize((77, 77), Image.LANCZOS).save(target, quality=80)
    elif copy == "pixels":
        target = root / "c0" / "other.png"
        img.save(target, compress_level=1)
    else:
        target = root / "c0" / "other.png"
        target.write_bytes(original.read_bytes())
    rows.append({"path": target.relative_to(root).as_posix(), "label": "cond0", "subject_id": "c0-elsewhere"})
    table = root / "photos.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table, "c0/s0_0.png", target.relative_to(root).as_posix()


@pytest.mark.parametrize("copy", ["resized", "pixels"])
def test_a_near_duplicate_under_another_subject_always_lands_on_the_same_side(tmp_path, copy):
    table, original, dup = photo_set(tmp_path / "src", copy)
    ws = Workspace.open(tmp_path / "ws", create=True)
    ingest(table, ws, workers=1)
    m = ws.load_manifest()
    by_path = m.assign(shown=m["path"].map(lambda p: Path(p).relative_to(tmp_path / "src").as_posix())).set_index("shown")
    a, b = by_path.loc[original], by_path.loc[dup]
    assert a["subject_id"] != b["subject_id"] and a["image_id"] != b["image_id"]
    bits = bin(int(a["phash"], 16) ^ int(b["phash"], 16)).count("1")
    assert bits <= (2 if copy == "resized" else 0)  # well within the default 4 bits
    for seed in range(6):  # several splits: on a subject-only split some of these put the copies on both sides
        r = split(ws, test_size=0.25, folds=2, seed=seed)
        out = ws.load_manifest().set_index("image_id")
        assert out.at[a["image_id"], "split"] == out.at[b["image_id"], "split"], seed
        assert out.at[a["image_id"], "fold"] is pd.NA or out.at[a["image_id"], "fold"] == out.at[b["image_id"], "fold"]
        assert r.near_duplicate_groups == [sorted([a["image_id"], b["image_id"]])]
        assert leakage_problems(ws.load_manifest()) == []
    report = pd.read_csv(ws.split_report_path, dtype=str)
    assert (report["kind"] == "near-duplicate-grouped").sum() == 1
    # a hand edit that moves the copy to the other side is refused before training, naming both files
    m = ws.load_manifest()
    i = m.index[m["image_id"] == b["image_id"]][0]
    m.loc[i, "split"] = "test" if m.at[i, "split"] == "train" else "train"
    m.loc[i, "fold"] = pd.NA if m.at[i, "split"] == "test" else 0
    ws.save_manifest(m)
    with pytest.raises(LeakageError, match="1 near-duplicate pair\\(s\\) on both sides of the split") as err:
        assert_no_leakage(ws)
    assert str(Path(a["path"]).name) in str(err.value) and str(Path(b["path"]).name) in str(err.value)


def test_different_photos_whose_64_bit_hashes_collide_are_not_grouped(tmp_path):
    """Photos sharing one layout (simulated faces on a template, aligned crops) can come within 4 bits of a 64-bit
    perceptual hash; the 256-bit hash of the files tells them apart, so they are not joined into one subject."""
    table, original, _ = photo_set(tmp_path / "src", "resized")
    ws = Workspace.open(tmp_path / "ws", create=True)
    ingest(table, ws, workers=1)
    m = ws.load_manifest()
    shown = m["path"].map(lambda p: Path(p).relative_to(tmp_path / "src").as_posix())
    a = m.index[shown == original][0]
    b = m.index[shown == "c1/s0_0.png"][0]  # another photo, of another condition
    m.loc[b, "phash"] = f"{int(m.at[a, 'phash'], 16) ^ 0b11:016x}"  # two bits from the original's 64-bit hash
    ws.save_manifest(m)
    r = split(ws, folds=2, seed=0)
    assert [m.at[a, "image_id"], m.at[b, "image_id"]] not in r.near_duplicate_groups
    assert len(r.near_duplicate_groups) == 1  # only the real copy


def test_byte_identical_copies_under_two_subjects_become_one_image(tmp_path):
    """Ingest keys images by the SHA-256 of their bytes: the second copy is never taken, so it cannot be split off."""
    table, original, dup = photo_set(tmp_path / "src", "bytes")
    ws = Workspace.open(tmp_path / "ws", create=True)
    res = ingest(table, ws, workers=1)
    assert res.added == 32 and res.skipped == {"duplicate": 1}
    m = ws.load_manifest()
    # the first path in sorted order is kept (c0/other.png), the other copy is reported, never taken
    assert m["path"].str.endswith(dup).sum() == 1 and not m["path"].str.endswith(original).any()
    report = pd.read_csv(ws.ingest_report_path, dtype=str)
    assert report.loc[report["path"] == original, "detail"].tolist() == [f"identical bytes to {dup}"]
    for seed in range(3):
        split(ws, folds=2, seed=seed)
        assert leakage_problems(ws.load_manifest()) == []


def test_leakage_error_repeats_the_options_of_the_last_split_and_that_command_restores_its_test_set(ws):
    from typer.testing import CliRunner

    from phenosynth.cli import app

    split(ws, test_size=0.4, folds=3, seed=7)
    before = ws.load_manifest().set_index("image_id")["split"]
    m = ws.load_manifest()
    m.loc[_real(m, "test").index[0], "split"] = "train"  # a hand edit: a test photo's subject now on both sides
    ws.save_manifest(m)
    with pytest.raises(LeakageError) as err:
        assert_no_leakage(ws)
    command = f"phenosynth split -w {ws.root} --test-size 0.4 --folds 3 --seed 7"
    assert f"Re-run the split with the same options ({command})" in str(err.value)
    res = CliRunner().invoke(app, command.split()[1:])
    assert res.exit_code == 0, res.output
    assert ws.load_manifest().set_index("image_id")["split"].equals(before)
    assert_no_leakage(ws)


def test_leakage_error_without_a_split_record_asks_for_the_options_used_before(ws):
    split(ws, seed=42)
    (ws.root / "split.json").unlink()  # a workspace split before split.json existed
    m = ws.load_manifest()
    m.loc[_real(m, "test").index[0], "split"] = "train"
    ws.save_manifest(m)
    with pytest.raises(LeakageError, match=rf"\(phenosynth split -w {ws.root} --test-size T --folds K --seed S, "
                                           "with the options you split with\)"):
        assert_no_leakage(ws)
