"""fastgan: a tiny FastGAN (64 px, a few channels) trained for a few iterations on the CPU: finite losses,
checkpoints that reload and resume bit-identically, DiffAugment, unconditional labelling by the nearest landmark
prototype (with a fake face pass), conditional sampling, lineage through ``generate`` and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from phenosynth.errors import LeakageError, MissingWeightsError, PhenosynthError
from tests._workspaces import (
    ASTRONAUT_BOX, astronaut_landmarks, face_row, faces_parquet_rows, faces_table, in_box, template68,
    write_faces_parquet,
)

torch = pytest.importorskip("torch")

#: a tiny FastGAN; a high learning rate and a short EMA so that two iterations already give distinct images (with
#: the paper's 2e-4 and 0.999 they are a flat grey, and two can have the same bytes)
TINY = dict(resolution=64, nz=16, ngf=4, ndf=4, batch_size=2, iterations=2, checkpoint_every=1, lpips_weights="none",
            device="cpu", lr=1e-2, ema_decay=0.5)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions on two busy cores run many times faster on one intra-op thread."""
    from phenosynth.models.trainers import torch_threads

    with torch_threads(1):
        yield


class _FakeDetector:
    """Finds a face in most images (none when the pixel sum is divisible by 5: a stand-in for 'no face')."""

    name = "fake"

    def detect(self, image, upsample=1):
        from phenosynth.faces.detectors import Detection

        if int(np.asarray(image, dtype=np.int64).sum()) % 5 == 0:
            return []
        h, w = image.shape[:2]
        return [Detection(np.array([w * 0.15, h * 0.15, w * 0.85, h * 0.85]), 1.0)]


class _FakeLandmarker:
    """68 template points in the box, the eyes raised by one of 7 steps chosen by the pixel sum (so that even the
    near-grey images of a barely trained GAN fall near different prototypes)."""

    name = "fake68"

    def __call__(self, image, detection):
        t = template68()
        t[36:48, 1] -= 0.03 * (int(np.asarray(image, dtype=np.int64).sum()) % 7)
        return in_box(t, detection.box)

    def five(self, landmarks):
        from phenosynth.faces.landmarks import five_from_68

        return five_from_68(landmarks)


@pytest.fixture
def fake_face_pass(monkeypatch):
    from phenosynth.faces import detectors

    monkeypatch.setattr(detectors, "create_detector", lambda name="x", **kw: _FakeDetector())
    monkeypatch.setattr(detectors, "create_landmarker", lambda name="x", **kw: _FakeLandmarker())


def _training_set(ws, faces, *, with_test: bool = False):
    from phenosynth.data.imageio import load_rgb

    m = ws.load_manifest()
    if not with_test:
        m = m[m["split"] == "train"]
    images = [load_rgb(ws.resolve(p)) for p in m["path"]]
    lms = np.stack([faces.at[i, "landmarks"] for i in m["image_id"]])
    return images, lms, m["label"].tolist(), dict(image_ids=m["image_id"].tolist(), splits=m["split"].tolist())


def _fit(ws, faces, **options):
    from phenosynth.synth.generators import create_generator

    images, lms, labels, ids = _training_set(ws, faces)
    return create_generator("fastgan", **{**TINY, **options}).fit(images, lms, labels, **ids)


def _equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_iterations_give_finite_losses_checkpoints_and_a_model_card(tmp_path, make_landmark_workspace,
                                                                        caplog) -> None:
    ws, faces = make_landmark_workspace(tmp_path)
    folder = tmp_path / "models"
    with caplog.at_level("WARNING"):
        gen = _fit(ws, faces, mode="conditional", checkpoint_dir=str(folder), device="auto")
    assert gen.iteration_ == 2 and gen.resumed_from_ is None
    losses = {k: v for k, v in gen.losses_.items() if k != "iteration"}
    assert set(losses) == {"loss_d_real", "loss_d_fake", "loss_reconstruction", "loss_g"}
    assert all(math.isfinite(v) for v in losses.values())
    assert sorted(p.name for p in folder.glob("checkpoint-*.pt")) == ["checkpoint-0000001.pt", "checkpoint-0000002.pt"]
    state = torch.load(folder / "checkpoint-0000002.pt", weights_only=False)
    assert {"G", "G_ema", "D", "opt_G", "opt_D", "rng", "iteration", "fit_set", "classes"} <= set(state)
    card = json.loads((folder / "model_card.json").read_text())
    m = ws.load_manifest()
    assert card["training_images"] == sorted(m.loc[m["split"] == "train", "image_id"])
    assert card["reconstruction_loss"] == "l1+ssim" and "LPIPS" in card["deviations"][0]
    assert card["iteration"] == 2 and card["classes"] == ["A", "B", "C"] and card["settings"]["n_classes"] == 3
    if not torch.cuda.is_available():
        assert "No CUDA GPU" in caplog.text
    assert "L1 + SSIM" in caplog.text


@pytest.mark.slow
def test_a_checkpoint_reloads_to_identical_samples_and_any_checkpoint_can_be_sampled(tmp_path,
                                                                                   make_landmark_workspace) -> None:
    ws, faces = make_landmark_workspace(tmp_path)
    folder = str(tmp_path / "models")
    gen = _fit(ws, faces, mode="conditional", checkpoint_dir=folder)
    first = [s.image for s in gen.sample(2, seed=3, labels=["A", "C"])]
    again = _fit(ws, faces, mode="conditional", checkpoint_dir=folder, sample_from=2)
    assert again.iteration_ == 2 and again.resumed_from_ == 2
    assert all(np.array_equal(a.image, b) for a, b in zip(again.sample(2, seed=3, labels=["A", "C"]), first))
    earlier = _fit(ws, faces, mode="conditional", checkpoint_dir=folder, sample_from=1)
    assert earlier.iteration_ == 1 and not np.array_equal(earlier.sample_one("A", 0, 3).image, first[0])
    with pytest.raises(PhenosynthError, match="No fastgan checkpoint of iteration 7"):
        _fit(ws, faces, mode="conditional", checkpoint_dir=folder, sample_from=7)
    with pytest.raises(PhenosynthError, match="other settings"):  # a checkpoint of another model is never resumed
        _fit(ws, faces, mode="conditional", checkpoint_dir=folder, ngf=8)


@pytest.mark.slow
def test_resume_continues_at_the_saved_iteration_like_an_uninterrupted_run(tmp_path, make_landmark_workspace) -> None:
    ws, faces = make_landmark_workspace(tmp_path)
    whole = _fit(ws, faces, mode="conditional", iterations=3, checkpoint_dir=str(tmp_path / "a"))
    _fit(ws, faces, mode="conditional", iterations=1, checkpoint_dir=str(tmp_path / "b"))  # "interrupted" after 1
    resumed = _fit(ws, faces, mode="conditional", iterations=3, checkpoint_dir=str(tmp_path / "b"))
    assert resumed.resumed_from_ == 1 and resumed.iteration_ == 3
    a = torch.load(tmp_path / "a" / "checkpoint-0000003.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint-0000003.pt", weights_only=False)
    for part in ("G", "G_ema", "D"):
        assert _equal_states(a[part], b[part]), part
    assert torch.equal(a["rng"], b["rng"]) and a["history"][-1] == b["history"][-1]
    assert np.array_equal(whole.sample_one("B", 4, 0).image, resumed.sample_one("B", 4, 0).image)
    # asking for fewer iterations than a folder holds takes the checkpoint of that iteration, not a later one
    fewer = _fit(ws, faces, mode="conditional", iterations=2, checkpoint_dir=str(tmp_path / "a"))
    assert fewer.resumed_from_ == 2 and fewer.iteration_ == 2


def test_diff_augment_changes_images_and_keeps_their_shape() -> None:
    from phenosynth.synth.fastgan_nets import diff_augment

    x = torch.rand((4, 3, 32, 32), generator=torch.Generator().manual_seed(0)) * 2 - 1
    for policy in (("color",), ("translation",), ("cutout",), ("color", "translation", "cutout")):
        y = diff_augment(x, policy, torch.Generator().manual_seed(1))
        assert y.shape == x.shape and (y - x).abs().mean() > 0.01, policy
        assert torch.equal(y, diff_augment(x, policy, torch.Generator().manual_seed(1)))  # seeded
    shifted = diff_augment(x, ("translation",), torch.Generator().manual_seed(2))
    assert (shifted == 0).any() and not (x == 0).any()  # zero-filled borders
    with pytest.raises(ValueError, match="unknown augmentation 'blur'"):
        diff_augment(x, ("blur",), torch.Generator())


@pytest.mark.slow
def test_conditional_mode_samples_the_condition_asked_for(tmp_path, make_landmark_workspace) -> None:
    from phenosynth.synth.generators.base import sample_rng

    ws, faces = make_landmark_workspace(tmp_path)
    gen = _fit(ws, faces, mode="conditional")
    s = gen.sample_one("B", 1, 5)
    assert s.label == "B" and s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8 and s.parents == []
    m = ws.load_manifest()
    assert sorted(s.statistic_parents) == sorted(m.loc[(m["split"] == "train") & (m["label"] == "B"), "image_id"])
    assert s.params["mode"] == "conditional" and s.params["iteration"] == 2

    def render(class_index: int):  # the same latent and noise, another condition
        g = torch.Generator().manual_seed(int(sample_rng(5, "B", 1).integers(2**63 - 1)))
        z = torch.randn((1, 16), generator=g)
        with torch.no_grad():
            return gen.net_(z, torch.tensor([class_index]), gen=g)[0]

    as_uint8 = ((render(1).clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)[0]
    assert np.array_equal(as_uint8, s.image)  # B is class 1 of A, B, C
    assert (render(0) - render(1)).abs().max() > 0  # the condition reaches the image (through the SLE gates)
    with pytest.raises(PhenosynthError, match="cannot sample condition 'Z'"):
        gen.sample_one("Z", 0, 0)
    # what generate's worker processes receive (spectral-norm modules do not pickle as they are) samples the same
    import pickle

    copy = pickle.loads(pickle.dumps(gen))
    assert np.array_equal(copy.sample_one("B", 1, 5).image, s.image)


def test_a_test_photo_is_refused_before_any_training(tmp_path, make_landmark_workspace) -> None:
    from phenosynth.synth.generators import create_generator

    ws, faces = make_landmark_workspace(tmp_path)
    images, lms, labels, ids = _training_set(ws, faces, with_test=True)
    with pytest.raises(LeakageError, match="test image"):
        create_generator("fastgan", **TINY, checkpoint_dir=str(tmp_path / "m")).fit(images, lms, labels, **ids)
    assert not (tmp_path / "m").exists()


def test_bad_options_and_missing_lpips_weights_are_clear_errors(tmp_path, make_landmark_workspace) -> None:
    from phenosynth.synth.generators import create_generator

    with pytest.raises(PhenosynthError, match="resolution must be one of"):
        create_generator("fastgan", resolution=100)
    with pytest.raises(PhenosynthError, match="mode must be one of"):
        create_generator("fastgan", mode="cgan")
    ws, faces = make_landmark_workspace(tmp_path)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        _fit(ws, faces, lpips_weights=str(tmp_path / "vgg16.pth"))


@pytest.mark.slow
def test_generate_unconditional_labels_samples_by_the_nearest_prototype(tmp_path, make_landmark_workspace,
                                                                         fake_face_pass) -> None:
    from phenosynth.faces.representations import class_prototypes, cosine_similarity_to
    from phenosynth.synth.generation import generate

    ws, faces = make_landmark_workspace(tmp_path)
    m0 = ws.load_manifest()
    train = m0[m0["split"] == "train"]
    s = generate(ws, "fastgan", per_class=2, seed=0, faces=faces, n_jobs=1, options={**TINY, "max_candidates": 96})
    m = ws.load_manifest()
    syn = m[m["source"] == "synthetic"]
    assert len(syn) == s.new_images == s.images == 6 and s.per_class == {"A": 2, "B": 2, "C": 2}
    assert (syn["generator"] == "fastgan").all() and syn["parents"].map(len).eq(0).all()
    for _, row in syn.iterrows():
        own = set(train.loc[train["label"] == row["label"], "image_id"])
        assert set(row["statistic_parents"]) <= own and row["statistic_parents"]  # the prototype's photos
        p = json.loads(row["params"])
        assert p["mode"] == "unconditional" and p["label_margin"] >= 0 and -1 <= p["label_cosine"] <= 1
        assert p["reconstruction_loss"] == "l1+ssim" and p["candidate"] >= p["unlabelled_before"]
    assert max(json.loads(p)["unlabelled_before"] for p in syn["params"]) > 0  # faceless candidates were skipped
    no_face = [n for n in s.notes if "had no face" in n]
    assert len(no_face) == 1 and no_face[0].startswith("fastgan (seed 0): ")
    run_dir = ws.synthetic_dir / "fastgan-seed0"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["fit_set_role"] == "pixel" and record["uses_patient_pixels"] is False
    assert record["training_images"] == sorted(train["image_id"])  # every condition's training photos, no test photo
    assert (run_dir / "models" / "checkpoint-0000002.pt").exists() and (run_dir / "models" / "model_card.json").exists()

    # the label is the nearest prototype: recompute it from the (fake) face pass on the saved images
    from phenosynth.data.imageio import load_rgb
    from phenosynth.synth.generators.fastgan import face_crop, landmark_vectors

    crops = [face_crop(load_rgb(ws.resolve(p)), faces.at[i, "landmarks"], 64, 2.0)
             for p, i in zip(train["path"], train["image_id"])]
    vec = landmark_vectors(crops, "rdface25", "x", "x")
    keep = [k for k, v in enumerate(vec) if v is not None]
    classes, P = class_prototypes(np.stack([vec[k] for k in keep]), train["label"].to_numpy()[keep])
    X = np.stack(landmark_vectors([load_rgb(ws.resolve(p)) for p in syn["path"]], "rdface25", "x", "x"))
    S = cosine_similarity_to(X, P)
    assert [classes[k] for k in S.argmax(1)] == syn["label"].tolist()
    top2 = np.sort(S, axis=1)[:, -2:]
    margins = [json.loads(p)["label_margin"] for p in syn["params"]]
    assert np.allclose(top2[:, 1] - top2[:, 0], margins, atol=1e-5)

    # a condition the first max_candidates candidates do not reach gets fewer images, and the run still finishes
    short = generate(ws, "fastgan", per_class=2, seed=0, faces=faces, n_jobs=1, name="short",
                     options={**TINY, "max_candidates": 4})
    assert sum(short.per_class.values()) < 6 and short.images == sum(short.per_class.values())


@pytest.mark.slow
def test_cli_generate_conditional_end_to_end(tmp_path, make_landmark_workspace) -> None:
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws, faces = make_landmark_workspace(tmp_path)
    write_faces_parquet(ws, faces_parquet_rows(faces))
    opts = [x for k, v in {**TINY, "mode": "conditional"}.items() for x in ("-o", f"{k}={v}")]
    out = CliRunner().invoke(app, ["generate", "-w", str(ws.root), "--generator", "fastgan", "--per-class", "2",
                                   "--workers", "1", *opts])
    assert out.exit_code == 0, out.output
    assert "6 images of 3 conditions" in out.output and "from 9 real training faces" in out.output
    assert "L1 + SSIM instead of LPIPS" in " ".join(out.output.split())  # the deviation, said to the user
    m = ws.load_manifest()
    syn = m[m["source"] == "synthetic"]
    assert syn.groupby("label").size().to_dict() == {"A": 2, "B": 2, "C": 2}
    assert all(p.startswith(f"synthetic/fastgan-seed0/{lab}/") for p, lab in zip(syn["path"], syn["label"]))
    assert (syn["split"] == "train").all() and pd.isna(syn["fold"]).all()

    # downstream unchanged: the face pass's rows for the new images (hand-placed here), then rank and select
    rng = np.random.default_rng(7)
    extra = faces_table([face_row(i, astronaut_landmarks(lab, rng), ASTRONAUT_BOX)
                         for i, lab in zip(syn["image_id"], syn["label"])])
    write_faces_parquet(ws, faces_parquet_rows(pd.concat([faces, extra])))
    out = CliRunner().invoke(app, ["rank", "-w", str(ws.root), "--representation", "shape68"])
    assert out.exit_code == 0, out.output
    assert "Ranked 6 synthetic images of 3 conditions by shape68" in out.output
    from phenosynth.synth import select_for_training

    chosen = select_for_training(ws, ws.load_manifest(), strategy="top-per-class", n=1, per_class=True)
    assert len(chosen) == 3 and set(chosen) <= set(syn["image_id"])


@pytest.mark.slow
def test_a_holdout_fold_run_is_fit_without_that_fold_and_trains_only_its_model(tmp_path,
                                                                               make_patient_workspace) -> None:
    """With the pixel role a run fit on every training photo is out of every fold's training; ``holdout_fold=k``
    records the smaller fit set, so fold k's model can train on the run's images."""
    from phenosynth.data.leakage import load_pixel_fit_sets
    from phenosynth.synth.generation import generate
    from phenosynth.training.cell import fold_manifest

    ws, _, faces = make_patient_workspace(tmp_path)
    opts = {**TINY, "mode": "conditional", "iterations": 1}
    generate(ws, "fastgan", per_class=1, faces=faces, n_jobs=1, options=opts, name="all")
    held = generate(ws, "fastgan", per_class=1, faces=faces, n_jobs=1, options={**opts, "holdout_fold": 1}, name="f1")
    m = ws.load_manifest()
    train = m[(m["source"] == "real") & (m["split"] == "train")]
    in_fold1 = set(train.loc[train["fold"] == 1, "image_id"])
    record = json.loads((ws.synthetic_dir / "f1" / "run.json").read_text())
    assert set(record["training_images"]) == set(train["image_id"]) - in_fold1 and held.training_images == 12

    def usable_runs(fold: int) -> list[str]:
        fm = fold_manifest(m, fold, load_pixel_fit_sets(ws))
        syn = fm[(fm["source"] == "synthetic") & fm["exclude_reason"].isna()]
        return sorted({json.loads(p)["run"] for p in syn["params"]})

    assert usable_runs(1) == ["f1"]
    assert usable_runs(0) == usable_runs(2) == []
    with pytest.raises(PhenosynthError, match="No training photo is in validation fold 7"):
        generate(ws, "fastgan", per_class=1, faces=faces, n_jobs=1, options={**opts, "holdout_fold": 7}, name="f7")
