"""The generator interface and registry.

A generator learns from real **training** images of one or many conditions and samples new images per condition::

    gen = GENERATORS.create("shape-warp", variation=1.0)
    gen.fit(images, landmarks, labels, image_ids=ids, splits=splits)   # refuses test images (LeakageError)
    for s in gen.sample(10, seed=0, labels=["A"]):                      # 10 images of condition A
        s.image, s.label, s.parents, s.params

``fit`` is a template method: the base class checks lineage (every input must be a real training image) and
shapes, then calls the subclass's ``_fit``. ``sample`` must be deterministic given ``(seed, label, index)`` — image
``i`` of a condition does not depend on how many images are asked for or on which other conditions are sampled, so
work can be split over processes freely.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phenosynth.errors import PhenosynthError
from phenosynth.registry import Registry
from phenosynth.synth.lineage import check_training_parents


@dataclass
class SyntheticSample:
    """One generated image: ``image (H, W, 3) uint8``, its condition, the image_ids it was made from and the
    parameters that produced it (JSON-serialisable)."""

    image: np.ndarray
    label: str
    parents: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    index: int = 0


def sample_rng(seed: int, label: str, index: int) -> np.random.Generator:
    """The random stream of image ``index`` of condition ``label`` under ``seed`` (stable across processes and
    Python versions: the label enters through SHA-256, not ``hash``)."""
    key = int.from_bytes(hashlib.sha256(str(label).encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, key, int(index)]))


class Generator(ABC):
    """Base class of every generator (see the module docstring). Learned attributes end in ``_``."""

    #: registry name, set by subclasses
    name: str = ""
    #: True when the generator's images are the patients' own photos transformed (augmentation, not synthesis)
    uses_patient_pixels: bool = False

    def fit(
        self,
        images: Sequence[np.ndarray],
        landmarks: np.ndarray | Sequence[np.ndarray],
        labels: Sequence[object],
        *,
        image_ids: Sequence[str],
        splits: Sequence[object],
        sources: Sequence[object] | None = None,
    ) -> "Generator":
        """Learn from real training images.

        Args:
            images: N images ``(H_i, W_i, 3)`` uint8.
            landmarks: ``(N, K, 2)`` (or N arrays ``(K, 2)``) landmark positions (x, y) in each image.
            labels: N condition labels.
            image_ids: N manifest image_ids (recorded as the parents of what is sampled).
            splits: N manifest splits; anything other than ``"train"`` is refused.
            sources: optional N manifest sources; anything other than ``"real"`` is refused.

        Raises:
            LeakageError: a test image is among the inputs.
        """
        check_training_parents(image_ids, splits, sources)
        n = len(image_ids)
        if not (len(images) == len(labels) == len(landmarks) == n):
            raise ValueError(
                f"images ({len(images)}), landmarks ({len(landmarks)}), labels ({len(labels)}) and image_ids ({n}) "
                "must have one entry per image"
            )
        if n == 0:
            raise PhenosynthError("A generator needs at least one real training image with a face to learn from.")
        lm = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in landmarks]
        if len({p.shape for p in lm}) != 1:
            raise PhenosynthError("All training faces must have the same number of landmarks (one landmarker).")
        self._fit(
            [np.asarray(im) for im in images], np.stack(lm), [str(v) for v in labels], [str(i) for i in image_ids]
        )
        return self

    @abstractmethod
    def _fit(self, images: list[np.ndarray], landmarks: np.ndarray, labels: list[str], image_ids: list[str]) -> None:
        """Subclass hook: inputs already checked; landmarks ``(N, K, 2)``."""

    @property
    @abstractmethod
    def classes_(self) -> list[str]:
        """Conditions the generator can sample."""

    @abstractmethod
    def sample_one(self, label: str, index: int, seed: int) -> SyntheticSample:
        """Image ``index`` of condition ``label`` (deterministic in ``(seed, label, index)``)."""

    def sample(
        self, n: int, seed: int = 0, *, labels: Sequence[str] | None = None, start: int = 0
    ) -> Iterator[SyntheticSample]:
        """``n`` images of each condition in ``labels`` (default: every fitted condition), indices
        ``start .. start + n - 1``, condition by condition."""
        for label in self.classes_ if labels is None else labels:
            if str(label) not in self.classes_:
                raise PhenosynthError(f"Generator '{self.name}' was not fitted on condition '{label}'.")
            for i in range(start, start + int(n)):
                yield self.sample_one(str(label), i, seed)

    def get_params(self) -> dict[str, Any]:
        """Constructor settings (recorded in every sample's params)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}


GENERATORS: Registry[Generator] = Registry("generator")


def list_generators() -> list[str]:
    return GENERATORS.names()


def create_generator(name: str, **options: Any) -> Generator:
    """Build the registered generator ``name`` (``None`` options are dropped so its defaults apply)."""
    return GENERATORS.create(name, **options)
