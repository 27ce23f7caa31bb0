"""Offline-first weight resolution: find a weights file in the standard caches, or say exactly where to put it.

Nothing here downloads. ``weights`` is always one of ``"default"`` (the backbone's pretrained file, looked up in
its standard cache), ``"none"`` (seeded random initialisation, asked for explicitly) or a path to a file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from phenosynth.errors import MissingWeightsError, PhenosynthError

if TYPE_CHECKING:  # pragma: no cover
    from phenosynth.models.backbones import BackboneSpec


def torch_home() -> Path:
    """``$TORCH_HOME`` or ``$XDG_CACHE_HOME/torch`` or ``~/.cache/torch`` (torch's own rule)."""
    default = Path(os.getenv("XDG_CACHE_HOME", "~/.cache")).expanduser() / "torch"
    return Path(os.getenv("TORCH_HOME", str(default))).expanduser()


def torchvision_dir() -> Path:
    """Where torchvision keeps downloaded checkpoints: ``$TORCH_HOME/hub/checkpoints``."""
    return torch_home() / "hub" / "checkpoints"


def facenet_dir() -> Path:
    """Where facenet-pytorch keeps its checkpoints: ``$TORCH_HOME/checkpoints``."""
    return torch_home() / "checkpoints"


def hf_cache_dir() -> Path:
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub ships with timm/open_clip
        return Path(os.getenv("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"


def package_dir(package: str, *parts: str) -> Path | None:
    """The folder of an installed package (without importing it), or None."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def missing(what: str, filename: str, folder: Path, url: str = "") -> MissingWeightsError:
    src = f" (download it from {url} on a machine with internet)" if url else ""
    return MissingWeightsError(
        f"Weights for {what} not found: put '{filename}' in {folder}{src}, or pass --weights PATH to a file, "
        f"or --weights none for a seeded random initialisation."
    )


def find_file(filename: str, folders: Iterable[Path | None]) -> Path | None:
    for folder in folders:
        if folder is not None and (Path(folder) / filename).is_file():
            return Path(folder) / filename
    return None


def explicit_file(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingWeightsError(
            f"Weights file {p} for {what} does not exist. Pass --weights default, --weights none or a path to an "
            f"existing checkpoint file."
        )
    return p.resolve()


def hf_cached_file(repo_id: str, filenames: Sequence[str]) -> Path | None:
    """A file of ``repo_id`` already in the Hugging Face cache (no network), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for name in filenames:
        found = try_to_load_from_cache(repo_id, name, cache_dir=str(hf_cache_dir()))
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def hf_missing(what: str, repo_id: str, filenames: Sequence[str]) -> MissingWeightsError:
    return MissingWeightsError(
        f"Weights for {what} not found in the Hugging Face cache {hf_cache_dir()}: fetch '{filenames[0]}' of "
        f"'{repo_id}' there on a machine with internet (huggingface-cli download {repo_id} {filenames[0]}), or pass "
        f"--weights PATH to the file, or --weights none for a seeded random initialisation."
    )


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's full content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _digest_of_version(path: str, size: int, mtime_ns: int) -> str:
    """:func:`file_digest` of ``path``; size and modification time are part of the cache key only."""
    return file_digest(path)


class WeightDigests:
    """A cache of weight-file digests, keyed by (resolved path, size, modification time).

    Hashing a 230 MB checkpoint takes a while and every feature-cache lookup needs its digest, so callers keep one
    of these: in memory for its own lifetime, and on disk in ``location`` (a ``joblib.Memory`` folder, e.g. the
    workspace's cache) when given, so later processes find it too.
    """

    def __init__(self, location: str | os.PathLike[str] | None = None) -> None:
        self._known: dict[tuple[str, int, int], str] = {}
        self._hash = _digest_of_version
        if location is not None:
            import joblib

            self._hash = joblib.Memory(str(location), verbose=0).cache(_digest_of_version)

    def __call__(self, path: str | os.PathLike[str]) -> str:
        p = Path(path)
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._known:
            self._known[key] = self._hash(*key)
        return self._known[key]


def resolve_weights(spec: BackboneSpec, weights: str) -> Path | None:
    """The weights file ``weights`` (``"default"`` | ``"none"`` | PATH) means for ``spec``; None = random init.

    Never downloads: ``default`` is looked up where ``spec.weight_source`` keeps it, and a missing file raises
    :class:`~phenosynth.errors.MissingWeightsError` saying where to put it.
    """
    if spec.weight_source == "none":
        if weights not in ("default", "none"):
            raise PhenosynthError(f"{spec.name} has no weights; use --weights default (or none).")
        return None
    if weights == "none":
        if not spec.random_init:
            raise PhenosynthError(
                f"{spec.name} has no random initialisation (its library cannot build an untrained network); use "
                f"--weights default or --weights PATH to a '{spec.weight_files[0]}'-style file."
            )
        return None
    if weights != "default":
        return explicit_file(weights, spec.name)
    filename = spec.weight_files[0]
    if spec.weight_source == "huggingface":
        found = hf_cached_file(spec.hf_repo, spec.weight_files) if spec.hf_repo else None
        if found is None:
            raise hf_missing(spec.name, spec.hf_repo or spec.name.removeprefix("timm:"), spec.weight_files)
        return found
    cache = {"torchvision": [torchvision_dir()], "facenet": [facenet_dir()]}.get(spec.weight_source, [])
    packages = [package_dir(*p.split("/")) for p in spec.weight_packages]
    found = find_file(filename, [*cache, *packages])
    if found is None:
        folder = cache[0] if cache else (packages[0] or Path(spec.weight_packages[0]))
        raise missing(spec.name, filename, folder, spec.weight_url)
    return found


def load_state_dict(path: Path) -> dict:
    """A torch checkpoint's state dict (unwraps ``{"state_dict": ...}`` / ``{"model": ...}``)."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise MissingWeightsError(
            f"Could not read the checkpoint {path} ({type(exc).__name__}: {exc}). Replace it with a complete "
            f"state-dict file (.pth/.pt), or pass --weights none."
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise MissingWeightsError(f"{path} is not a state-dict checkpoint; pass a .pth/.pt file with a state dict.")
    return {k.removeprefix("module."): v for k, v in obj.items()}
