"""Privacy audit: pure statistics against SciPy / scikit-learn / torchmetrics, and the audit end to end on a tiny
workspace whose synthetic images are shape-warps of the real photos (identity copies) or images of other people."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from phenosynth.audit import stats
from phenosynth.data.workspace import Workspace
from phenosynth.errors import PhenosynthError
from phenosynth.models import backbones as B
from tests._workspaces import image_row, pattern_person, pattern_photo, phash_of

# --- threshold calibration ----------------------------------------------------------------------------------------


def test_threshold_is_the_stricter_of_documented_and_impostor_quantile():
    genuine = np.array([0.1, 0.2, 0.3, 0.5, 0.7])
    impostor = np.linspace(0.4, 1.4, 1001)  # 0.1 % quantile = 0.401
    cal = stats.calibrate_threshold(genuine, impostor, documented=0.6, quantile=0.001)
    assert cal.impostor_quantile == pytest.approx(0.401)
    assert cal.threshold == pytest.approx(0.401) and cal.source == "impostor-quantile"
    assert cal.impostor_rate == pytest.approx(1 / 1001)  # only 0.400 lies strictly below 0.401
    assert cal.genuine_rate == pytest.approx(3 / 5)  # 0.1, 0.2, 0.3
    assert (cal.n_genuine, cal.n_impostor, cal.documented) == (5, 1001, 0.6)

    far = np.linspace(0.9, 1.9, 1001)  # impostors far apart: the documented threshold is the stricter
    cal = stats.calibrate_threshold(genuine, far, documented=0.6)
    assert cal.threshold == 0.6 and cal.source == "documented" and cal.impostor_rate == 0.0
    assert cal.genuine_rate == pytest.approx(4 / 5)

    none = stats.calibrate_threshold(genuine, impostor, documented=None)  # an embedder without a published value
    assert none.threshold == pytest.approx(0.401) and none.documented is None
    with pytest.raises(ValueError, match="at least two subjects"):
        stats.calibrate_threshold(genuine, np.zeros(0), documented=None)


def test_genuine_and_impostor_pairs_by_subject():
    X = np.array([[0.0, 0.0], [0.0, 1.0], [3.0, 4.0], [3.0, 4.5]])
    g, i = stats.genuine_impostor_distances(X, np.array(["a", "a", "b", "b"]))
    assert sorted(g.tolist()) == [0.5, 1.0]
    assert sorted(np.round(i, 6).tolist()) == sorted(np.round([5.0, np.hypot(3, 4.5), np.hypot(3, 3), np.hypot(3, 3.5)], 6).tolist())


def test_documented_thresholds():
    assert stats.documented_threshold("dlib_resnet128").value == 0.6
    assert stats.documented_threshold("facenet").metric == "euclidean"
    assert stats.default_metric("mobilenet_v2") == "cosine"


# --- Wilson CI, AUC, nearest neighbours, phash, KID -----------------------------------------------------------------


def _wilson_closed_form(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(0, 10), (7, 20), (99, 100), (50, 50), (3, 1000)])
def test_wilson_ci_matches_scipy_and_the_closed_form(k, n):
    from scipy.stats import binomtest

    lo, hi = stats.wilson_ci(k, n)
    ref = binomtest(k, n).proportion_ci(method="wilson")
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert (lo, hi) == pytest.approx(_wilson_closed_form(k, n), abs=1e-9)
    assert np.isnan(stats.wilson_ci(0, 0)).all()


def test_membership_auc_matches_sklearn_and_its_bootstrap_is_seeded(rng):
    from sklearn.metrics import roc_auc_score

    member = np.r_[np.ones(30, bool), np.zeros(20, bool)]
    d = np.r_[rng.normal(0.4, 0.2, 30), rng.normal(0.6, 0.2, 20)]
    auc, lo, hi = stats.membership_auc(d, member, n_boot=300, seed=1)
    assert auc == pytest.approx(roc_auc_score(member, -d))
    assert 0.5 < auc < 1.0 and lo < auc < hi
    assert stats.membership_auc(d, member, n_boot=300, seed=1) == (auc, lo, hi)
    assert stats.membership_auc(d, member, n_boot=300, seed=2)[1] != lo
    # subjects with several photos: resampling subjects gives a wider interval than resampling photos
    groups = np.r_[np.repeat(np.arange(6), 5), 100 + np.repeat(np.arange(4), 5)]
    d_grouped = np.r_[np.repeat(rng.normal(0.4, 0.2, 6), 5), np.repeat(rng.normal(0.6, 0.2, 4), 5)]
    _, glo, ghi = stats.membership_auc(d_grouped, member, groups=groups, n_boot=300)
    _, plo, phi = stats.membership_auc(d_grouped, member, n_boot=300)
    assert ghi - glo > phi - plo
    assert np.isnan(stats.membership_auc(d, np.ones(50, bool))[0])
    tied = np.round(d, 1)  # the bootstrap's rank AUC equals scikit-learn's, ties included
    assert stats.rank_auc(-tied, member) == pytest.approx(roc_auc_score(member, -tied), abs=1e-12)
    # nothing remembered: members and non-members drawn alike
    null = [stats.membership_auc(rng.normal(size=200), rng.random(200) < 0.5, n_boot=0)[0] for _ in range(20)]
    assert abs(np.mean(null) - 0.5) < 0.03


def test_nearest_neighbours_match_brute_force(rng):
    A, Bm = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    d, i = stats.nearest_neighbours(A, Bm)
    full = np.sqrt(((A[:, None] - Bm[None]) ** 2).sum(-1))
    assert np.array_equal(i, full.argmin(1)) and np.allclose(d, full.min(1))
    dc, ic = stats.nearest_neighbours(A, Bm, "cosine")
    cos = 1 - (A / np.linalg.norm(A, axis=1, keepdims=True)) @ (Bm / np.linalg.norm(Bm, axis=1, keepdims=True)).T
    assert np.array_equal(ic, cos.argmin(1)) and np.allclose(dc, cos.min(1))
    ds, js = stats.nearest_neighbours(A, A, exclude_self=True)
    assert (js != np.arange(7)).all() and (ds > 0).all()
    assert stats.nearest_neighbours(A, np.zeros((0, 5)))[1].tolist() == [-1] * 7
    with pytest.raises(ValueError, match="Unknown distance"):
        stats.nearest_neighbours(A, Bm, "manhattan")


def test_phash_bits_agree_with_imagehash_distance(rng):
    import imagehash

    a = [f"{int(v):016x}" for v in rng.integers(0, 2**63, 5)]
    b = [f"{int(v):016x}" for v in rng.integers(0, 2**63, 4)]
    M = stats.phash_bits(a, b)
    assert M.tolist() == [[imagehash.hex_to_hash(x) - imagehash.hex_to_hash(y) for y in b] for x in a]


def test_kid_matches_torchmetrics_on_random_features(rng):
    from torchmetrics.image.kid import KernelInceptionDistance

    real = rng.normal(size=(40, 16))
    fake = rng.normal(0.3, 1.2, size=(40, 16))
    ours, sd = stats.kid_from_features(real, fake, subsets=1)  # one subset of all 40: no randomness left
    kid = KernelInceptionDistance(feature=nn.Identity(), subsets=1, subset_size=40)
    kid.update(torch.tensor(real, dtype=torch.float64), real=True)
    kid.update(torch.tensor(fake, dtype=torch.float64), real=False)
    ref_mean, ref_sd = kid.compute()
    assert ours == pytest.approx(float(ref_mean), rel=1e-9) and sd == 0.0 == float(ref_sd)
    # subsets: an unbiased estimate near zero for one distribution, clearly positive for two
    same, _ = stats.kid_from_features(real, rng.normal(size=(40, 16)), subsets=50, subset_size=20, seed=0)
    assert abs(same) < ours / 3
    assert stats.kid_from_features(real, fake, subsets=50, subset_size=20, seed=0) == \
        stats.kid_from_features(real, fake, subsets=50, subset_size=20, seed=0)


def test_strangers_match_at_the_stranger_rate_not_the_pairwise_impostor_rate_and_warps_far_above(rng):
    """Hand-made identity embeddings (a person = a centre, a photo = centre + noise): 200 patients (150 training),
    100 strangers who share no person with them, and warps (a training photo + little noise). Like for like, a
    stranger's nearest of 600 training photos falls under the threshold at the real set's stranger rate (each real
    photo's nearest training photo of another person), hundreds of times the pairwise impostor rate; the membership
    AUC of strangers is ~0.5, of warps ~1."""
    d, k = 16, 4

    def people(n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(rng.normal(size=(n, d)), k, 0) + 0.4 * rng.normal(size=(n * k, d)), np.repeat(np.arange(n), k)

    X, subject = people(200)
    strangers = people(100)[0]
    train = subject < 150
    genuine, impostor = stats.genuine_impostor_distances(X, subject)
    cal = stats.calibrate_threshold(genuine, impostor, None, quantile=0.001)
    best = stats.nearest_other_subject(X, subject, X[train], subject[train])
    k_real = int((best < cal.threshold).sum())
    stranger_ci = stats.wilson_ci(k_real, len(best))
    matched = stats.nearest_neighbours(strangers, X[train])[0] < cal.threshold
    matched_ci = stats.wilson_ci(int(matched.sum()), len(matched))
    assert cal.impostor_rate == pytest.approx(0.001, abs=2e-4)
    assert k_real / len(best) > 100 * cal.impostor_rate  # the pairwise rate is not the baseline of a nearest-of-many
    assert matched_ci[0] < stranger_ci[1] and stranger_ci[0] < matched_ci[1]  # strangers: within the stranger rate
    warps = X[train] + 0.05 * rng.normal(size=X[train].shape)
    warp_matched = stats.nearest_neighbours(warps, X[train])[0] < cal.threshold
    assert stats.wilson_ci(int(warp_matched.sum()), len(warp_matched))[0] > 0.95 > stranger_ci[1]

    auc, lo, hi = stats.membership_auc(stats.nearest_neighbours(X, strangers)[0], train, groups=subject, n_boot=300)
    assert lo < 0.5 < hi and abs(auc - 0.5) < 0.1
    assert stats.membership_auc(stats.nearest_neighbours(X, warps)[0], train, groups=subject, n_boot=50)[1] > 0.95
    brute = np.array([min((np.linalg.norm(x - y) for y, sy in zip(X[train], subject[train]) if sy != sx))
                      for x, sx in zip(X[:20], subject[:20])])
    assert best[:20] == pytest.approx(brute)


def test_first_of_near_duplicates_keeps_one_of_each_group():
    hashes = ["ffff000000000000", "ffff000000000001", "0000ffff00000000", "ffff000000000003"]
    dup = stats.first_of_near_duplicates(stats.phash_bits(hashes, hashes), within=2)
    assert dup.tolist() == [False, True, False, True]


# --- the audit end to end -------------------------------------------------------------------------------------------

PIXELS = "test-pixels"


def _pixels(spec: B.BackboneSpec, path: Path | None) -> B.TorchBackbone:
    """A weightless 'identity embedder' for pattern faces: the crop average-pooled to 8 x 8 (192-d)."""
    return B.TorchBackbone(spec, nn.Sequential(nn.AdaptiveAvgPool2d(8), nn.Flatten()))


@pytest.fixture(autouse=True)
def _pixel_embedder():
    """The test embedder is registered for this module's tests only (other modules iterate over the registry)."""
    with B.registered_backbone(B.BackboneSpec(name=PIXELS, embed_dim=192, native_input_size=64), _pixels):
        yield

def add_other_people(ws: Workspace, paths: dict[str, Path], n_per_class: int = 6, seed: int = 7) -> None:
    """Synthetic images of people who are not in the real set (run 'others')."""
    rng = np.random.default_rng(seed)
    m = ws.load_manifest()
    rows = []
    for label in "ABC":
        parent = m.loc[(m["label"] == label) & (m["split"] == "train"), "image_id"].iloc[0]
        for i in range(n_per_class):
            p, img = ws.root / "synthetic" / "others" / label / f"{i}.png", pattern_photo(pattern_person(rng), rng)
            rows.append(image_row(ws, p, img, label=label, source="synthetic", generator="other", parents=[parent],
                                  split="train", phash=phash_of(img), params=json.dumps({"run": "others", "index": i})))
            paths[rows[-1]["image_id"]] = p
    ws.save_manifest(pd.concat([m, pd.DataFrame(rows)], ignore_index=True))


@pytest.fixture
def audited_ws(tmp_path, monkeypatch, make_patient_workspace):
    """Real photos, shape-warp images of them (run 'shape-warp-seed0') and images of other people (run 'others')."""
    ws, paths, faces = make_patient_workspace(tmp_path)
    from phenosynth.synth.generation import generate

    generate(ws, "shape-warp", per_class=6, seed=0, faces=faces, n_jobs=1)
    m = ws.load_manifest()
    for iid, p in zip(m["image_id"], m["path"]):
        paths.setdefault(str(iid), ws.resolve(str(p)))
    add_other_people(ws, paths)
    no_face = sorted(ws.load_manifest().query("generator == 'other'")["image_id"])[0]
    calls = []

    def fake_crops(ws_, image_ids, size=224, on_progress=None, **kw):
        calls.append(list(image_ids))
        if not set(image_ids) <= set(paths):  # images added by a test after the fixture: their files
            m = ws_.load_manifest()
            paths.update({str(i): ws_.resolve(str(p)) for i, p in zip(m["image_id"], m["path"])})
        return {i: paths[i] for i in image_ids if i != no_face}

    monkeypatch.setattr("phenosynth.faces.align.ensure_aligned_crops", fake_crops)
    return ws, no_face, calls


def test_audit_flags_shape_warp_copies_and_not_other_people(audited_ws, monkeypatch):
    from phenosynth.audit.privacy import AUDIT_COLUMNS, audit

    ws, no_face, _ = audited_ws
    res = audit(ws, embedder=PIXELS, n_boot=200)
    runs = {r.run: r for r in res.runs}
    assert set(runs) == {"shape-warp-seed0", "others"}
    cal = res.calibration
    assert cal.documented is None and cal.threshold == pytest.approx(cal.impostor_quantile)
    assert cal.n_genuine == 12 and cal.n_impostor == 24 * 23 // 2 - 12
    assert cal.impostor_rate <= 0.01 and cal.genuine_rate > 0.5  # photos of one person match, others do not

    warp = runs["shape-warp-seed0"]
    assert warp.n_images == warp.n_measured == 18
    assert warp.matched_share >= 0.8 and warp.matched_ci[0] > cal.impostor_rate
    assert warp.matched_ci == pytest.approx(stats.wilson_ci(warp.n_matched, 18))
    assert warp.matched_ci[0] < warp.matched_share <= warp.matched_ci[1]
    assert warp.matched_own_parent >= warp.n_matched - 2  # a warp looks like the photo it was made from
    assert warp.membership_auc > 0.8 and warp.membership_ci[0] > 0.5
    assert (warp.n_members, warp.n_nonmembers) == (18, 6)

    # stranger rate: real photos whose nearest training photo of another person is under the threshold (brute force)
    from phenosynth.models.features import extract_features

    m = ws.load_manifest()
    real = m[(m["source"] == "real")]
    ids, X = extract_features(ws, PIXELS, real["image_id"].tolist(), preprocessing="native")
    subj = real.set_index("image_id").loc[ids, "subject_id"].to_numpy()
    is_train = real.set_index("image_id").loc[ids, "split"].to_numpy() == "train"
    D = stats.distance_matrix(X, X[is_train], "cosine")
    D[subj[:, None] == subj[is_train][None, :]] = np.inf
    k = int((D.min(axis=1) < cal.threshold).sum())
    assert warp.stranger_rate == pytest.approx(k / 24) and warp.stranger_ci == pytest.approx(stats.wilson_ci(k, 24))
    assert warp.matched_ci[0] > warp.stranger_ci[1]

    other = runs["others"]
    assert (other.n_images, other.n_measured, other.n_no_face) == (18, 17, 1)
    assert other.n_matched <= 1 and other.matched_ci[0] <= cal.impostor_rate + 0.01
    assert other.n_near_copies == 0 and other.membership_ci[0] < 0.5  # nothing remembered (within noise)

    frame = pd.read_parquet(ws.root / "audit" / "shape-warp-seed0" / "audit.parquet")
    assert frame.columns.tolist() == AUDIT_COLUMNS and len(frame) == 18
    assert frame["identity_match"].sum() == warp.n_matched
    assert all("identity-match" in list(f) for f in frame.loc[frame["identity_match"], "flags"])
    assert (frame["shareable"] == ~frame["identity_match"] & ~frame["near_copy"]).all()
    assert (frame["nearest_real_distance"] < cal.threshold).sum() == warp.n_matched
    assert frame["nearest_same_condition"].all()
    others = pd.read_parquet(ws.root / "audit" / "others" / "audit.parquet").set_index("image_id")
    assert list(others.at[no_face, "flags"]) == ["no-face"] and not others.at[no_face, "shareable"]
    summary = json.loads((ws.root / "audit" / "others" / "summary.json").read_text())
    assert summary["calibration"]["threshold"] == cal.threshold and summary["replaces"] is None
    assert summary["flags"]["no-face"] == 1 and summary["run"]["n_matched"] == other.n_matched


def test_a_second_audit_uses_the_cached_embeddings_and_says_it_replaced_the_first(audited_ws, monkeypatch):
    from phenosynth.audit.privacy import audit

    ws, _, _ = audited_ws
    first = audit(ws, "others", embedder=PIXELS, n_boot=50)
    before = (ws.root / "audit" / "others" / "audit.parquet").read_bytes()

    def no_model(*a, **k):
        raise AssertionError("a cached audit must not build the embedder")

    monkeypatch.setattr("phenosynth.models.features.create_backbone", no_model)
    again = audit(ws, "others", embedder=PIXELS, n_boot=50)
    assert [r.run for r in again.runs] == ["others"] and not (ws.root / "audit" / "shape-warp-seed0").exists()
    assert again.runs[0].replaced is not None and first.runs[0].replaced is None
    assert (ws.root / "audit" / "others" / "audit.parquet").read_bytes() == before  # same data, same bytes
    summary = json.loads((ws.root / "audit" / "others" / "summary.json").read_text())
    assert summary["replaces"]["settings"]["embedder"] == PIXELS


def test_audit_user_errors(audited_ws, tmp_path, make_patient_workspace):
    from phenosynth.audit.privacy import audit

    ws, _, _ = audited_ws
    with pytest.raises(PhenosynthError, match="No synthetic images of run 'nope'.*others, shape-warp-seed0"):
        audit(ws, "nope", embedder=PIXELS)
    with pytest.raises(PhenosynthError, match="Unknown distance"):
        audit(ws, embedder=PIXELS, metric="manhattan")
    bare, _, _ = make_patient_workspace(tmp_path / "bare")
    with pytest.raises(PhenosynthError, match="phenosynth generate -w"):
        audit(bare, embedder=PIXELS)


def test_cli_audit_prints_a_table_per_run(audited_ws):
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws, _, _ = audited_ws
    result = CliRunner().invoke(app, ["audit", "-w", str(ws.root), "--embedder", PIXELS, "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "shape-warp-seed0" in out and "others" in out and "stranger rate" in out.lower()
    assert "audit.parquet" in out
    bad = CliRunner().invoke(app, ["audit", "-w", str(ws.root), "--run", "nope", "--embedder", PIXELS])
    assert bad.exit_code == 2 and "No synthetic images of run 'nope'" in bad.output


# --- the privacy gate -----------------------------------------------------------------------------------------------


def _run_ids(ws: Workspace, run: str) -> set[str]:
    from phenosynth.audit.gate import synthetic_runs

    m = ws.load_manifest()
    runs = synthetic_runs(m)
    return set(m.loc[runs.index[runs == run], "image_id"].astype(str))


def test_gate_leaves_out_the_unshareable_images_of_audited_runs_only(audited_ws):
    from phenosynth.audit.gate import REASON_UNAUDITED, gate
    from phenosynth.audit.privacy import audit

    ws, _, _ = audited_ws
    m = ws.load_manifest()
    assert gate(ws, m) == (m, {})  # nothing audited yet: training sets as before
    audit(ws, "shape-warp-seed0", embedder=PIXELS, n_boot=20)
    frame = pd.read_parquet(ws.root / "audit" / "shape-warp-seed0" / "audit.parquet")
    unshareable = set(frame.loc[~frame["shareable"], "image_id"])
    assert len(unshareable) >= 14  # most warps are identity matches

    gated, reasons = gate(ws, m)
    assert set(reasons) == unshareable
    assert all(r.startswith("audit: ") and "identity-match" in r or "near-copy" in r for r in reasons.values())
    left_out = set(gated.loc[gated["exclude_reason"].notna(), "image_id"])
    assert left_out == unshareable and m["exclude_reason"].isna().all()  # the caller's manifest is not changed
    assert not (_run_ids(ws, "others") & left_out)  # the run never audited is untouched
    off, none = gate(ws, m, enabled=False)
    assert off is m and none == {}

    # an image of the run that its audit did not score (excluded then, usable now) is left out until a re-audit
    first = sorted(_run_ids(ws, "shape-warp-seed0") - unshareable)
    if first:
        excluded = m.assign(exclude_reason=m["exclude_reason"].astype(object).where(m["image_id"] != first[0], "x"))
        ws.save_manifest(excluded)
        audit(ws, "shape-warp-seed0", embedder=PIXELS, n_boot=20)
        _, reasons2 = gate(ws, m)
        assert reasons2[first[0]] == REASON_UNAUDITED


def test_training_selection_skips_flagged_images_unless_the_gate_is_off(audited_ws):
    from phenosynth.audit.privacy import audit
    from phenosynth.training import TrainConfig
    from phenosynth.training.cell import cell_sets, synthetic_available

    ws, _, _ = audited_ws
    m = ws.load_manifest()
    cfg = TrainConfig(backbone=PIXELS, regime="synthetic", selection="random", folds=2)
    _, before, _ = cell_sets(ws, m, cfg, 1, 0)  # fold 1: the parents of 'others' (subject 0) are in fold 0
    audit(ws, "shape-warp-seed0", embedder=PIXELS, n_boot=20)
    frame = pd.read_parquet(ws.root / "audit" / "shape-warp-seed0" / "audit.parquet")
    unshareable = set(frame.loc[~frame["shareable"], "image_id"])

    _, gated, _ = cell_sets(ws, m, cfg, 1, 0)
    assert set(gated["selected"]) == set(before["selected"]) - unshareable
    assert _run_ids(ws, "others") <= set(gated["selected"]) | set(m.loc[m["exclude_reason"].notna(), "image_id"])
    off = TrainConfig(backbone=PIXELS, regime="synthetic", selection="random", folds=2, privacy_gate=False)
    assert cell_sets(ws, m, off, 1, 0)[1]["selected"] == before["selected"]
    assert synthetic_available(ws, off, [1])[1] - synthetic_available(ws, cfg, [1])[1] > 0


def test_train_records_the_gate_in_config_yaml_and_the_left_out_images_in_skipped_csv(audited_ws):
    import yaml

    from phenosynth.audit.privacy import audit
    from phenosynth.training import TrainConfig, train

    ws, _, _ = audited_ws
    m = ws.load_manifest()  # 'others' made from a fold-2 photo, so both trained folds keep synthetic candidates
    fold2 = m[m["fold"] == 2].groupby("label")["image_id"].first()
    others = m["image_id"].isin(_run_ids(ws, "others"))
    m.loc[others, "parents"] = pd.Series([[fold2[lab]] for lab in m.loc[others, "label"]], index=m.index[others])
    ws.save_manifest(m)
    audit(ws, "shape-warp-seed0", embedder=PIXELS, n_boot=20)
    frame = pd.read_parquet(ws.root / "audit" / "shape-warp-seed0" / "audit.parquet")
    unshareable = set(frame.loc[~frame["shareable"], "image_id"])
    cfg = TrainConfig(backbone=PIXELS, preprocessing="native", regime="mixed", selection="random", folds=2,
                      hparams={"C": 1.0})
    res = train(ws, cfg, "gated")
    run = ws.runs_dir / "gated"
    assert yaml.safe_load((run / "config.yaml").read_text())["privacy_gate"] is True
    sk = pd.read_csv(run / "skipped.csv")
    gated_rows = sk[sk["reason"].str.startswith("audit: ")]
    assert set(gated_rows["image_id"]) == unshareable and (gated_rows["role"] == "synthetic candidate").all()
    ungated = train(ws, TrainConfig(**{**cfg.__dict__, "privacy_gate": False}), "ungated")
    assert yaml.safe_load((ws.runs_dir / "ungated" / "config.yaml").read_text())["privacy_gate"] is False
    assert not pd.read_csv(ws.runs_dir / "ungated" / "skipped.csv")["reason"].str.startswith("audit").any()
    assert (ungated["n_synthetic"] - res["n_synthetic"]).min() > 0  # the gate changed what was trained on


def test_report_lines_say_which_runs_were_audited(audited_ws):
    from phenosynth.audit.gate import audit_warnings
    from phenosynth.audit.privacy import audit

    ws, _, _ = audited_ws
    audit(ws, "shape-warp-seed0", embedder=PIXELS, n_boot=20)
    lines = audit_warnings(ws, ws.load_manifest())
    assert len(lines) == 2
    others, warp = lines
    assert "'others' (18 images) was never audited" in others and "without a privacy check" in others
    s = json.loads((ws.root / "audit" / "shape-warp-seed0" / "summary.json").read_text())["run"]
    assert f"{s['n_matched']} of 18 measured images match" in warp and "privacy gate left out" in warp
    assert "gate was OFF" in audit_warnings(ws, ws.load_manifest(), enabled=False)[1]


# --- stale audits: the workspace changed since ------------------------------------------------------------------------


def _add_to_run(ws: Workspace, run: str, n: int = 1) -> None:
    """The run gains ``n`` images (copies of its first image's row under new ids and files)."""
    m = ws.load_manifest()
    row = m[m["image_id"].isin(_run_ids(ws, run))].iloc[0]
    rng = np.random.default_rng(11)
    new = []
    for k in range(n):
        img = pattern_photo(pattern_person(rng), rng)
        new.append({**row.to_dict(), **image_row(ws, ws.root / "synthetic" / run / f"late{k}.png", img),
                    "phash": phash_of(img)})
    ws.save_manifest(pd.concat([m, pd.DataFrame(new)], ignore_index=True))


def _resplit(ws: Workspace) -> None:
    """What a re-split does to the audit's inputs: patient A3 (test) goes to training, A0 to test."""
    m = ws.load_manifest()
    m.loc[m["subject_id"] == "A3", ["split", "fold"]] = ["train", 0]
    m.loc[m["subject_id"] == "A0", ["split", "fold"]] = ["test", None]
    ws.save_manifest(m)


def test_an_audit_records_what_it_measured_and_goes_stale_when_the_workspace_changes(audited_ws):
    from phenosynth.audit.gate import audit_staleness
    from phenosynth.audit.inputs import manifest_inputs
    from phenosynth.audit.privacy import audit

    ws, _, _ = audited_ws
    audit(ws, "shape-warp-seed0", embedder=PIXELS, n_boot=20)
    rec = json.loads((ws.root / "audit" / "shape-warp-seed0" / "summary.json").read_text())["inputs"]
    assert (rec["n_real"], rec["n_synthetic"]) == (24, 18)
    assert rec == manifest_inputs(ws.load_manifest(), "shape-warp-seed0")
    assert audit_staleness(ws, ws.load_manifest(), "shape-warp-seed0") is None
    assert audit_staleness(ws, ws.load_manifest(), "others") is None  # never audited: not stale, unaudited

    _add_to_run(ws, "shape-warp-seed0", 2)
    assert audit_staleness(ws, ws.load_manifest(), "shape-warp-seed0") == \
        "the run has 20 synthetic images now, 18 when audited"
    audit(ws, "shape-warp-seed0", embedder=PIXELS, n_boot=20)
    assert audit_staleness(ws, ws.load_manifest(), "shape-warp-seed0") is None

    _resplit(ws)
    why = audit_staleness(ws, ws.load_manifest(), "shape-warp-seed0")
    assert why is not None and "real photos changed" in why and "24 then, 24 now" in why
    audit(ws, "shape-warp-seed0", embedder=PIXELS, n_boot=20)
    m = ws.load_manifest()  # a new real photo (another patient) changes the calibration and the reference set
    rng = np.random.default_rng(5)
    img = pattern_photo(pattern_person(rng), rng)
    new = image_row(ws, ws.root / "real" / "new.png", img, label="A", subject_id="A9", source="real", split="train",
                    fold=1, phash=phash_of(img))
    ws.save_manifest(pd.concat([m, pd.DataFrame([new])], ignore_index=True))
    assert "24 then, 25 now" in audit_staleness(ws, ws.load_manifest(), "shape-warp-seed0")
    summary_path = ws.root / "audit" / "shape-warp-seed0" / "summary.json"
    old = {k: v for k, v in json.loads(summary_path.read_text()).items() if k != "inputs"}
    summary_path.write_text(json.dumps(old))  # an audit written before audits recorded their inputs
    assert "does not record which photos it measured" in audit_staleness(ws, ws.load_manifest(), "shape-warp-seed0")


def test_a_stale_audit_is_refused_by_export_and_treated_as_none_by_training(audited_ws, tmp_path, caplog):
    from typer.testing import CliRunner

    from phenosynth.audit.gate import audit_warnings, gate
    from phenosynth.audit.privacy import audit
    from phenosynth.cli import app
    from phenosynth.training import TrainConfig
    from phenosynth.training.cell import cell_sets

    ws, _, _ = audited_ws
    audit(ws, embedder=PIXELS, n_boot=20)
    m = ws.load_manifest()
    flagged = set(gate(ws, m)[1])
    assert flagged  # current audit: the gate leaves the flagged warps out

    _add_to_run(ws, "shape-warp-seed0")
    out = tmp_path / "share"
    res = CliRunner().invoke(app, ["export", str(out), "-w", str(ws.root), "--run", "shape-warp-seed0"])
    assert res.exit_code == 2 and not out.exists()
    msg = " ".join(res.output.split())
    assert "The audit of run 'shape-warp-seed0' is stale: the run has 19 synthetic images now, 18 when audited" in msg
    assert f"re-run phenosynth audit -w {ws.root} --run shape-warp-seed0" in msg
    # the other run did not change: its audit still holds and exports
    assert CliRunner().invoke(app, ["export", str(out), "-w", str(ws.root), "--run", "others"]).exit_code == 0

    m = ws.load_manifest()
    with caplog.at_level("WARNING", logger="phenosynth.audit.gate"):
        gated, reasons = gate(ws, m)
    assert not set(reasons) & _run_ids(ws, "shape-warp-seed0")  # treated as unaudited: nothing of it left out
    assert "shape-warp-seed0 is stale" in caplog.text and "treated as unaudited" in caplog.text
    cfg = TrainConfig(backbone=PIXELS, regime="synthetic", selection="random", folds=2)
    assert flagged & set(cell_sets(ws, m, cfg, 1, 0)[1]["selected"])  # training uses them again, with the warning
    lines = audit_warnings(ws, m)
    stale = next(line for line in lines if "'shape-warp-seed0'" in line)
    assert "(19 images) has a stale audit (the run has 19 synthetic images now, 18 when audited)" in stale
    assert "treated as never audited" in stale and "without a privacy check" in stale

    _resplit(ws)  # now the real set changed too: every audit of the workspace is stale
    res = CliRunner().invoke(app, ["export", str(tmp_path / "b"), "-w", str(ws.root), "--run", "others"])
    assert res.exit_code == 2 and "real photos changed since the audit" in " ".join(res.output.split())
    audit(ws, embedder=PIXELS, n_boot=20)
    res = CliRunner().invoke(app, ["export", str(tmp_path / "c"), "-w", str(ws.root), "--run", "shape-warp-seed0",
                                   "--allow-patient-pixels"])  # shape-warp holds patient pixels: needs the override
    assert res.exit_code == 0 or "passed the audit" in res.output  # re-audited: current again
    assert set(gate(ws, ws.load_manifest())[1]) & _run_ids(ws, "shape-warp-seed0")


# --- export ---------------------------------------------------------------------------------------------------------


def test_export_holds_only_shareable_images_and_nothing_that_points_to_a_patient(audited_ws, tmp_path):
    from typer.testing import CliRunner

    from phenosynth.audit.export import METADATA_COLUMNS
    from phenosynth.audit.privacy import audit
    from phenosynth.cli import app

    ws, _, _ = audited_ws
    out = tmp_path / "share"
    bad = CliRunner().invoke(app, ["export", str(out), "-w", str(ws.root), "--run", "others"])
    assert bad.exit_code == 2 and "has not been audited" in bad.output and not out.exists()
    audit(ws, embedder=PIXELS, n_boot=20)
    result = CliRunner().invoke(app, ["export", str(out), "-w", str(ws.root), "--run", "others"])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(ws.root / "audit" / "others" / "audit.parquet")
    n_ok = int(frame["shareable"].sum())
    assert f"Exported {n_ok} image(s)" in result.output and n_ok >= 15

    files = sorted(p for p in out.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix == ".png"]
    assert len(images) == n_ok and {p.parent.name for p in images} == {"A", "B", "C"}
    assert all(p.stem.isdigit() for p in images)
    meta = pd.read_csv(out / "metadata.csv")
    assert meta.columns.tolist() == METADATA_COLUMNS and sorted(meta["file"]) == sorted(
        str(p.relative_to(out)) for p in images)
    # no real photo: neither its bytes nor its pixels; the exported pixels are the shareable synthetic images'
    m = ws.load_manifest()
    real = m[m["source"] == "real"]
    real_bytes = {ws.resolve(p).read_bytes() for p in real["path"]}
    real_pixels = {np.asarray(Image.open(ws.resolve(p)).convert("RGB")).tobytes() for p in real["path"]}
    ok_pixels = {np.asarray(Image.open(ws.resolve(p)).convert("RGB")).tobytes()
                 for p in frame.loc[frame["shareable"], "path"]}
    exported_pixels = {np.asarray(Image.open(p).convert("RGB")).tobytes() for p in images}
    assert not any(p.read_bytes() in real_bytes for p in images)
    assert not exported_pixels & real_pixels and exported_pixels == ok_pixels
    # no id, subject or path of a real photo, nor any synthetic image's parent, in any exported file
    forbidden = set(real["image_id"]) | set(real["subject_id"]) | set(real["path"]) | {
        p for ps in m["parents"].dropna() for p in ps} | set(frame["image_id"])
    for f in files:  # in compressed PNG bytes a 2-letter subject id turns up by chance: there only long ids count
        blob = f.read_bytes()
        leaked = [x for x in forbidden if x.encode() in blob and (f.suffix != ".png" or len(x) >= 16)]
        assert not leaked, (f, leaked[:3])
        if f.suffix == ".png":
            assert not {k for k in Image.open(f).info if k not in ("dpi", "gamma")}  # no text chunks, no EXIF
    sheet = (out / "DATASHEET.md").read_text()
    assert f"{n_ok} synthetic face images" in sheet and "Membership AUC" in sheet and "Limits" in sheet

    again = CliRunner().invoke(app, ["export", str(out), "-w", str(ws.root), "--run", "others"])
    assert again.exit_code == 2 and "not empty" in again.output
    warp_out = tmp_path / "warp"
    warp = CliRunner().invoke(app, ["export", str(warp_out), "-w", str(ws.root), "--run", "shape-warp-seed0"])
    warps = pd.read_parquet(ws.root / "audit" / "shape-warp-seed0" / "audit.parquet")
    assert len(list(warp_out.rglob("*.png"))) == int(warps["shareable"].sum()) < len(warps) or warp.exit_code == 2


def test_audit_writes_an_internal_html_page_with_histograms_roc_and_the_closest_pairs(audited_ws):
    import re

    from phenosynth.audit.html import N_WORST
    from phenosynth.audit.privacy import audit

    ws, _, _ = audited_ws
    res = audit(ws, "shape-warp-seed0", embedder=PIXELS, n_boot=20)
    folder = ws.root / "audit" / "shape-warp-seed0"
    page = (folder / "audit.html").read_text()
    assert res.runs[0].html_path == folder / "audit.html"
    assert "INTERNAL" in page and "never share or export it" in page
    r = res.runs[0]
    assert f"{r.n_matched} of {r.n_measured}" in page and f"{r.membership_auc:.3f}" in page
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs[:2] == ["distances.png", "membership_roc.png"] and len(srcs) == 2 + 2 * min(N_WORST, 18)
    for s in srcs:
        assert (folder / s).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the first pair is the synthetic image closest to a real training photo, beside that photo
    frame = pd.read_parquet(folder / "audit.parquet")
    closest = frame.nsmallest(1, "nearest_real_distance").iloc[0]
    assert f"distance {closest['nearest_real_distance']:.3f}" in page.split('class="pair"')[1]
    assert page.count("· own parent") == int(frame.nsmallest(N_WORST, "nearest_real_distance")["nearest_is_parent"].sum())


# --- fidelity: KID and phenotype agreement --------------------------------------------------------------------------


def _pixel_features(ws: Workspace, ids) -> dict[str, np.ndarray]:
    from phenosynth.models.features import extract_features

    kept, X = extract_features(ws, PIXELS, list(ids), preprocessing="paper")
    return dict(zip(kept, X.astype(np.float64)))


def test_kid_per_condition_beside_the_split_half_baseline_and_nan_with_a_note_for_one_image(audited_ws):
    from phenosynth.audit.fidelity import OVERALL, split_half
    from phenosynth.audit.privacy import audit

    ws, no_face, _ = audited_ws
    m = ws.load_manifest()
    others = m[m["image_id"].isin(_run_ids(ws, "others")) & (m["image_id"] != no_face)]
    drop = others[others["label"] == "C"]["image_id"].iloc[1:]  # condition C keeps a single synthetic image
    ws.save_manifest(m[~m["image_id"].isin(drop)])
    res = audit(ws, "others", embedder=PIXELS, n_boot=20, kid_backbone=PIXELS, probe_backbone=None)
    kid = {k.condition: k for k in res.runs[0].fidelity.kid}
    assert list(kid) == ["A", "B", "C", OVERALL]
    summary = json.loads((ws.root / "audit" / "others" / "summary.json").read_text())["fidelity"]
    assert [k["condition"] for k in summary["kid"]] == list(kid) and summary["kid_backbone"] == PIXELS

    m = ws.load_manifest()
    feats = _pixel_features(ws, m["image_id"])
    real = m[(m["source"] == "real") & (m["split"] == "train")]
    syn = m[m["image_id"].isin(_run_ids(ws, "others")) & m["image_id"].isin(feats)]
    for cond in ("A", "B", OVERALL):
        r = real if cond == OVERALL else real[real["label"] == cond]
        s = syn if cond == OVERALL else syn[syn["label"] == cond]
        row = kid[cond]
        assert (row.n_real, row.n_synthetic) == (len(r), len(s)) and row.note == ""
        expect = stats.kid_from_features(np.stack([feats[i] for i in r["image_id"]]),
                                         np.stack([feats[i] for i in s["image_id"]]), subsets=100, seed=0)
        assert (row.kid, row.kid_sd) == pytest.approx(expect, rel=1e-9)
        half = split_half(r["subject_id"].to_numpy(), seed=0)  # halves by subject: no patient on both sides
        assert not set(r["subject_id"][half]) & set(r["subject_id"][~half])
        base = stats.kid_from_features(np.stack([feats[i] for i in r["image_id"][half]]),
                                       np.stack([feats[i] for i in r["image_id"][~half]]), subsets=100, seed=0)
        assert row.baseline == pytest.approx(base[0], rel=1e-9) and np.isfinite([row.kid, row.baseline]).all()
    c = kid["C"]
    assert (c.n_real, c.n_synthetic) == (6, 1) and np.isnan(c.kid) and np.isfinite(c.baseline)
    assert "KID needs at least 2 images on each side (6 real, 1 synthetic with features)" in c.note
    # other people than the real ones are further from them than real patients are from each other: KID > 0
    assert kid[OVERALL].kid > 0


def test_phenotype_agreement_scores_the_synthetic_images_of_each_condition_beside_the_real_test_photos(audited_ws):
    from phenosynth.audit.fidelity import OVERALL
    from phenosynth.audit.privacy import audit
    from phenosynth.models.trainers import ProbeClassifier

    ws, _, _ = audited_ws
    res = audit(ws, "shape-warp-seed0", embedder=PIXELS, n_boot=20, kid_backbone=None, probe_backbone=PIXELS)
    fid = res.runs[0].fidelity
    assert fid.kid == [] and fid.notes == []
    rows = {p.condition: p for p in fid.phenotype}
    assert list(rows) == ["A", "B", "C", OVERALL]
    # every warp is classified as the condition of the photo it was made from; the held-out patients are strangers
    # to the probe (random patterns, no shared phenotype), so on them it is near chance (1/3)
    assert [(p.n_synthetic, p.synthetic_accuracy) for p in fid.phenotype] == [(6, 1.0)] * 3 + [(18, 1.0)]
    assert [(p.n_test, p.test_accuracy) for p in fid.phenotype] == [(2, 0.0), (2, 0.5), (2, 1.0), (6, 0.5)]

    m = ws.load_manifest()  # the same numbers by hand: fit on the real training photos, score the run's images
    feats = _pixel_features(ws, m["image_id"])
    train = m[(m["source"] == "real") & (m["split"] == "train")]
    test = m[(m["source"] == "real") & (m["split"] == "test")]
    warps = m[m["image_id"].isin(_run_ids(ws, "shape-warp-seed0"))]
    classes = np.array(["A", "B", "C"])
    probe = ProbeClassifier().fit(np.stack([feats[i] for i in train["image_id"]]),
                                  np.searchsorted(classes, train["label"]), n_classes=3)
    for frame, attr in ((warps, "synthetic_accuracy"), (test, "test_accuracy")):
        pred = classes[probe.predict(np.stack([feats[i] for i in frame["image_id"]]))]
        assert getattr(rows[OVERALL], attr) == pytest.approx(np.mean(pred == frame["label"].to_numpy()))


def test_cli_audit_shows_the_fidelity_table_and_the_page_and_datasheet_carry_it(audited_ws, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from phenosynth.cli import app
    from phenosynth.cli._app import console

    monkeypatch.setattr(console, "width", 250)  # the table's rows on one line each

    ws, _, _ = audited_ws
    result = CliRunner().invoke(app, ["audit", "-w", str(ws.root), "--run", "shape-warp-seed0", "--embedder", PIXELS,
                                      "--bootstrap", "20", "--kid-backbone", PIXELS, "--probe-backbone", PIXELS])
    assert result.exit_code == 0, result.output
    out = result.output
    fid = json.loads((ws.root / "audit" / "shape-warp-seed0" / "summary.json").read_text())["fidelity"]
    table = out[out.index("Fidelity"):]
    assert "split-half KID" in table and "probe acc. synthetic" in table and "probe acc. real test" in table
    for k, p in zip(fid["kid"], fid["phenotype"]):
        line = next(ln for ln in table.splitlines() if f" {k['condition']} " in ln)
        assert f"{k['kid']:.4f}" in line and f"{k['baseline']:.4f}" in line
        assert f"{100 * p['synthetic_accuracy']:.1f}% ({p['n_synthetic']})" in line
        assert f"{100 * p['test_accuracy']:.1f}% ({p['n_test']})" in line

    page = (ws.root / "audit" / "shape-warp-seed0" / "audit.html").read_text()
    assert '<table class="kid">' in page and '<table class="phenotype">' in page
    assert f"{fid['kid'][-1]['kid']:.4f}" in page and "all conditions" in page

    # the shape68 probe on a workspace without a face pass: a note, no crash; the datasheet says so
    skipped = CliRunner().invoke(app, ["audit", "-w", str(ws.root), "--embedder", PIXELS, "--bootstrap", "20",
                                       "--kid-backbone", "none"])
    assert skipped.exit_code == 0, skipped.output
    assert "others: fidelity: no shape68 features" in skipped.output and "phenosynth faces" in skipped.output
    share = CliRunner().invoke(app, ["export", str(tmp_path / "share"), "-w", str(ws.root), "--run", "others"])
    assert share.exit_code == 0, share.output
    sheet = (tmp_path / "share" / "DATASHEET.md").read_text()
    assert "- Fidelity: no shape68 features" in sheet and "KID (" not in sheet
    from phenosynth.audit.export import fidelity_section

    text = fidelity_section(fid)  # the shape-warp run's first audit, with both tables
    assert f"  - all conditions: {fid['kid'][-1]['kid']:.4f} (real vs real {fid['kid'][-1]['baseline']:.4f})" in text
    assert "  - A: synthetic 100.0 % of 6, real test photos" in text


# --- review fixes: calibration with a duplicated patient, atomic export, folder names, ICC, augmentation label ------


def test_too_few_impostor_pairs_do_not_let_their_quantile_lower_the_documented_threshold():
    genuine = np.array([0.3, 0.35, 0.4])
    impostor = np.r_[0.01, np.linspace(0.8, 1.0, 99)]  # 100 pairs, one a patient filed under two ids
    cal = stats.calibrate_threshold(genuine, impostor, documented=0.6, quantile=0.001)
    assert cal.threshold == 0.6 and cal.source == "documented" and cal.quantile_estimable is False
    assert cal.impostor_quantile < 0.1 and cal.to_dict()["quantile_estimable"] is False
    alone = stats.calibrate_threshold(genuine, impostor, documented=None, quantile=0.001)  # nothing else to use
    assert alone.threshold == pytest.approx(alone.impostor_quantile) and not alone.quantile_estimable
    enough = stats.calibrate_threshold(genuine, impostor, documented=0.9, quantile=0.01)  # 100 * 0.01 = 1 pair
    assert enough.quantile_estimable and enough.threshold == pytest.approx(enough.impostor_quantile)


def test_reviewer_scenario_one_duplicated_subject_no_longer_switches_the_identity_check_off():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 128)) * 0.65 / np.sqrt(128)
    X = np.array([c + rng.normal(scale=0.35 / np.sqrt(256), size=128) for c in centres for _ in range(2)])
    subj = np.repeat([f"s{k}" for k in range(10)], 2)
    X2, subj2 = np.vstack([X, X[0] + 1e-3]), np.append(subj, "s_dup")
    g, i = stats.genuine_impostor_distances(X2, subj2)
    assert i.min() < 0.05  # the copy is an 'impostor' at distance ~0
    cal = stats.calibrate_threshold(g, i, 0.6, quantile=0.001)
    assert cal.threshold == 0.6 and not cal.quantile_estimable


def _with_recorded_copy(ws: Workspace, monkeypatch) -> str:
    """A re-encoded copy of a real training photo filed under a new subject id, grouped by the split (split_report.csv
    row ``near-duplicate-grouped``), the audit's crops faked for every usable image; the copy's image_id."""
    from phenosynth.data.leakage import NEAR_DUPLICATE_KIND

    m = ws.load_manifest()
    orig = m[(m["source"] == "real") & (m["subject_id"] == "A0")].iloc[0]
    img = np.asarray(Image.open(ws.resolve(orig["path"])).convert("RGB")).copy()
    img[0, 0] ^= 1
    row = image_row(ws, ws.root / "real" / "copy.png", img, label="A", subject_id="Z9", source="real", split="train",
                    fold=orig["fold"], phash=orig["phash"], width=orig["width"], height=orig["height"])
    ws.save_manifest(pd.concat([m, pd.DataFrame([row])], ignore_index=True))
    pd.DataFrame([{"kind": NEAR_DUPLICATE_KIND, "image_id": orig["image_id"], "other_image_id": row["image_id"]}]
                 ).to_csv(ws.split_report_path, index=False)
    m = ws.load_manifest()
    paths = {str(i): ws.resolve(str(p)) for i, p in zip(m["image_id"], m["path"])}
    monkeypatch.setattr("phenosynth.faces.align.ensure_aligned_crops",
                        lambda ws_, ids, size=224, on_progress=None, **kw: {i: paths[i] for i in ids})
    return row["image_id"]


def test_a_patient_copy_under_another_subject_id_counts_as_the_same_person_and_the_summary_says_so(
        audited_ws, monkeypatch):
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws, _, _ = audited_ws
    _with_recorded_copy(ws, monkeypatch)
    monkeypatch.setitem(stats.DOCUMENTED_THRESHOLDS, PIXELS, stats.DocumentedThreshold(0.5, "cosine", "test"))
    result = CliRunner().invoke(app, ["audit", "-w", str(ws.root), "--embedder", PIXELS, "--bootstrap", "20",
                                      "--run", "others"])
    assert result.exit_code == 0, result.output
    summary = json.loads((ws.root / "audit" / "others" / "summary.json").read_text())
    cal = summary["calibration"]
    # 25 photos; the copy joins A0's 2 photos: 12 + 2 same-person pairs (without the grouping: 12 and 288)
    assert (cal["n_genuine"], cal["n_impostor"]) == (14, 25 * 24 // 2 - 14)
    assert cal["quantile_estimable"] is False and cal["threshold"] == 0.5  # 286 pairs cannot give a 0.1 % quantile
    assert "quantile_estimable: false" in " ".join(result.output.split())


def _audited_run_ws(root: Path, labels: list[str], generator: str = "g") -> Workspace:
    """Two real photos and one synthetic image per label of run 'r1' by ``generator``, with a hand-written audit that
    passes them all (the reviewer's workspace)."""
    from phenosynth.audit.inputs import manifest_inputs
    from phenosynth.audit.privacy import AUDIT_COLUMNS
    from tests._workspaces import save_rows

    ws = Workspace.open(root / "ws", create=True)
    rows = [image_row(ws, root / "src" / f"r{k}.png", np.full((16, 16, 3), k * 40, np.uint8), label=lab,
                      subject_id=f"subj{k}", source="real", split="train", fold=0) for k, lab in enumerate("AB")]
    for k, lab in enumerate(labels):
        rows.append(image_row(ws, ws.root / "synthetic" / "r1" / f"s{k}.png",
                              np.random.default_rng(k).integers(0, 255, (16, 16, 3), dtype=np.uint8), label=lab,
                              source="synthetic", generator=generator, params=json.dumps({"run": "r1", "seed": k}),
                              parents=[rows[0]["image_id"]], split="train"))
    save_rows(ws, rows)
    m = ws.load_manifest()
    scores = {"has_face": True, "flags": [], "shareable": True, "nearest_real_distance": 0.9,
              "nearest_same_condition": False, "nearest_is_parent": False, "parent_distance": 0.9, "phash_bits": 30,
              "ssim": 0.1, "synthetic_nn_distance": 0.5, "duplicate": False, "parents": []}
    frame = pd.DataFrame([{c: None for c in AUDIT_COLUMNS} | scores | {
        "image_id": r.image_id, "path": r.path, "label": r.label, "run": "r1", "generator": generator}
        for r in m[m["source"] == "synthetic"].itertuples()])
    d = ws.root / "audit" / "r1"
    d.mkdir(parents=True)
    frame.to_parquet(d / "audit.parquet", index=False)
    run = {"n_matched": 0, "n_measured": len(labels), "matched_share": 0.0, "matched_ci": [0, 0], "stranger_rate": 0.0,
           "membership_auc": 0.5, "membership_ci": [0.4, 0.6], "n_near_copies": 0, "n_duplicates": 0, "n_no_face": 0}
    (d / "summary.json").write_text(json.dumps({
        "created": "x", "run": run, "settings": {"embedder": "e", "metric": "euclidean"}, "n_real_photos": 2,
        "calibration": {"threshold": 0.5, "documented": 0.6, "quantile": 0.001, "impostor_quantile": 0.5},
        "inputs": manifest_inputs(m, "r1")}))
    return ws


def test_export_gives_conditions_whose_names_collide_their_own_folders(tmp_path):
    from phenosynth.audit.export import export

    ws = _audited_run_ws(tmp_path, ["Down syndrome", "Down_syndrome", "Ωμέγα", "Σίγμα"])
    res = export(ws, "r1", tmp_path / "out")
    meta = pd.read_csv(tmp_path / "out" / "metadata.csv")
    assert meta["file"].is_unique and len(meta) == res.n_exported == 4
    assert dict(zip(meta["condition"], meta["file"])) == {
        "Down syndrome": "Down_syndrome/00000.png", "Down_syndrome": "Down_syndrome-2/00000.png",
        "Σίγμα": "unnamed/00000.png", "Ωμέγα": "unnamed-2/00000.png"}
    assert all((tmp_path / "out" / f).is_file() for f in meta["file"])


def test_a_failed_export_leaves_nothing_behind_and_a_retry_works(tmp_path):
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws = _audited_run_ws(tmp_path, ["A", "B"])
    broken = ws.root / "synthetic" / "r1" / "s1.png"
    good = broken.read_bytes()
    broken.write_bytes(b"broken")
    out = tmp_path / "share"
    bad = CliRunner().invoke(app, ["export", str(out), "-w", str(ws.root), "--run", "r1"])
    assert bad.exit_code == 2 and "Cannot read synthetic image" in bad.output and "s1.png" in bad.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src", "ws"]  # no hidden leftover
    broken.write_bytes(good)
    again = CliRunner().invoke(app, ["export", str(out), "-w", str(ws.root), "--run", "r1"])
    assert again.exit_code == 0, again.output
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["A/00000.png", "B/00000.png"]


def test_exported_pngs_carry_no_icc_profile(tmp_path):
    from PIL import ImageCms

    from phenosynth.audit.export import export

    ws = _audited_run_ws(tmp_path, ["A"])
    src = ws.root / "synthetic" / "r1" / "s0.png"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.open(src).convert("RGB").save(src, icc_profile=icc, format="PNG")
    assert b"iCCP" in src.read_bytes()
    export(ws, "r1", tmp_path / "out")
    png = tmp_path / "out" / "A" / "00000.png"
    assert b"iCCP" not in png.read_bytes() and "icc_profile" not in Image.open(png).info
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(src).convert("RGB")))


def test_a_shape_warp_export_and_audit_say_they_are_augmentation_of_patient_photos(tmp_path, audited_ws):
    from typer.testing import CliRunner

    from phenosynth.audit.export import export
    from phenosynth.audit.privacy import AUGMENTATION_NOTE
    from phenosynth.cli import app

    sentence = ("augmentation of patient photos, not privacy-preserving synthesis; only images the audit passed are "
                "included")
    assert AUGMENTATION_NOTE == sentence
    export(_audited_run_ws(tmp_path / "warp", ["A"], generator="shape-warp"), "r1", tmp_path / "warp" / "out",
           allow_patient_pixels=True)
    assert sentence in " ".join((tmp_path / "warp" / "out" / "DATASHEET.md").read_text().split())
    export(_audited_run_ws(tmp_path / "other", ["A"], generator="other"), "r1", tmp_path / "other" / "out")
    assert "augmentation" not in (tmp_path / "other" / "out" / "DATASHEET.md").read_text()

    ws, _, _ = audited_ws
    result = CliRunner().invoke(app, ["audit", "-w", str(ws.root), "--embedder", PIXELS, "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"shape-warp-seed0 (shape-warp): {sentence}" in said and "others (other)" not in said


# --- the facenet embedder (VGGFace2 weights when present) ------------------------------------------------------------

FACENET_FILE = "20180402-114759-vggface2.pt"


def test_facenet_audit_without_its_weights_names_the_file_and_the_folder(audited_ws, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws, _, _ = audited_ws
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    res = CliRunner().invoke(app, ["audit", "-w", str(ws.root), "--embedder", "facenet", "--bootstrap", "20",
                                   "--kid-backbone", "none", "--probe-backbone", "none"])
    msg = " ".join(res.output.split())
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert FACENET_FILE in msg and str(tmp_path / "th" / "checkpoints") in msg
    assert not (ws.root / "audit").exists()  # nothing written


def test_facenet_audit_loads_a_vggface2_style_checkpoint_and_runs_end_to_end(audited_ws, tmp_path, monkeypatch):
    """A seeded random InceptionResnetV1 saved the way the VGGFace2 release is (with its 8631-class logits head) in
    $TORCH_HOME/checkpoints: the default weights resolve to it, load (head dropped), and the audit runs on it."""
    from facenet_pytorch import InceptionResnetV1

    from phenosynth.audit.privacy import audit

    ws, _, _ = audited_ws
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    torch.manual_seed(0)
    ckpt = tmp_path / "th" / "checkpoints" / FACENET_FILE
    ckpt.parent.mkdir(parents=True)
    saved = InceptionResnetV1(classify=True, num_classes=8631).state_dict()
    torch.save(saved, ckpt)
    model = B.create_backbone("facenet")
    assert model.weights_path == ckpt and model.weights_id not in ("none", "default")
    own = model.state_dict()
    loaded = next(v for key, v in own.items() if key.endswith("conv2d_1a.conv.weight"))  # the wrapper prefixes keys
    assert torch.equal(loaded, saved["conv2d_1a.conv.weight"])

    res = audit(ws, "others", embedder="facenet", n_boot=20, kid_backbone=None, probe_backbone=None)
    cal = res.calibration
    assert (res.embedder, res.metric, cal.documented) == ("facenet", "euclidean", 1.04)
    assert cal.threshold <= 1.04 and cal.n_genuine == 12
    (run,) = res.runs
    assert (run.run, run.n_images, run.n_measured) == ("others", 18, 17)
    frame = pd.read_parquet(run.parquet_path)
    d = frame.loc[frame["has_face"], "nearest_real_distance"].to_numpy()
    assert np.isfinite(d).all() and (d <= 2.0).all()  # L2-normalised embeddings: distances within [0, 2]
    assert (frame.loc[frame["has_face"], "identity_match"] == (d < cal.threshold)).all()
    summary = json.loads(run.summary_path.read_text())
    assert summary["settings"]["embedder"] == "facenet" and summary["inputs"]["n_synthetic"] == 18
    assert summary["run"]["membership_auc"] == run.membership_auc


def test_export_reads_the_runs_own_patient_pixel_flag_and_refuses_patient_pixels_without_the_override(tmp_path):
    """run.json's uses_patient_pixels decides (phenotype-transfer: False with donors, True with morphs); a run
    without the key falls back to the generator class (phenotype-transfer: True). Patient pixels: refused unless
    --allow-patient-pixels, and then labelled augmentation."""
    from typer.testing import CliRunner

    from phenosynth.audit.export import export
    from phenosynth.audit.privacy import run_uses_patient_pixels
    from phenosynth.cli import app

    def ws_with(name: str, flag: bool | None) -> Workspace:
        ws = _audited_run_ws(tmp_path / name, ["A"], generator="phenotype-transfer")
        if flag is not None:
            (ws.synthetic_dir / "r1" / "run.json").write_text(json.dumps({"run": "r1", "uses_patient_pixels": flag}))
        return ws

    donors, morphs, old = ws_with("donors", False), ws_with("morphs", True), ws_with("old", None)
    assert [run_uses_patient_pixels(w, "r1", ["phenotype-transfer"]) for w in (donors, morphs, old)] == [
        False, True, True]
    assert run_uses_patient_pixels(old, "r1", ["some-gan"]) is False
    res = export(donors, "r1", tmp_path / "donors" / "out")
    assert res.n_exported == 1 and "augmentation" not in (tmp_path / "donors" / "out" / "DATASHEET.md").read_text()
    runner = CliRunner()
    for ws in (morphs, old):
        out = ws.root.parent / "out"
        refused = runner.invoke(app, ["export", str(out), "-w", str(ws.root), "--run", "r1"])
        assert refused.exit_code == 2 and "Traceback" not in refused.output
        assert "holds patient pixels" in refused.output and "--allow-patient-pixels" in refused.output
        assert not out.exists()
        done = runner.invoke(app, ["export", str(out), "-w", str(ws.root), "--run", "r1", "--allow-patient-pixels"])
        assert done.exit_code == 0, done.output
        assert "augmentation of patient photos" in " ".join((out / "DATASHEET.md").read_text().split())
