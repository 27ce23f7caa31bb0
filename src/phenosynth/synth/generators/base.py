"""The generator interface and registry.

A generator learns from real **training** images of one or many conditions and samples new images per condition::

    gen = GENERATORS.create("shape-warp", variation=1.0)
    gen.fit(images, landmarks, labels, image_ids=ids, splits=splits)   # refuses test images (LeakageError)
    for s in gen.sample(10, seed=0, labels=["A"]):                      # 10 images of condition A
        s.image, s.label, s.parents, s.params

``fit`` is a template method: the base class checks lineage (every input must be a real training image; identities,
for generators that take them, must be donor faces) and shapes, then calls the subclass's ``_fit``. ``sample`` must be deterministic given ``(seed, label, index)`` — image
``i`` of a condition does not depend on how many images are asked for or on which other conditions are sampled, so
work can be split over processes freely.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phenosynth.errors import PhenosynthError
from phenosynth.registry import Registry
from phenosynth.synth.lineage import check_identities, check_training_parents


@dataclass
class SyntheticSample:
    """One generated image: ``image (H, W, 3) uint8``, its condition, its lineage by role and the parameters that
    produced it (JSON-serialisable).

    ``parents``: **pixel** parents, the image_ids whose pixels are in the image (a warped photo, a donor, the members
    of a morph). ``statistic_parents``: photos that only shaped a statistic the image was drawn from (the condition's
    photos behind its phenotype), not already among ``parents``. The test-set rule applies to both roles, the fold
    rule to pixel parents only (:mod:`phenosynth.data.leakage`)."""

    image: np.ndarray
    label: str
    parents: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    index: int = 0
    statistic_parents: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Identities:
    """Faces that lend an identity to an identity-free generator: donors (manifest ``source=donor``), never patients.

    ``images`` N ``(H, W, 3)`` uint8; ``landmarks`` ``(N, K, 2)``; ``image_ids``, ``sources`` and ``splits`` (NA for a
    donor) one per face, as in the manifest (checked by :func:`~phenosynth.synth.lineage.check_identities`);
    ``subjects`` the person of each face (None: each face its own person)."""

    images: Sequence[np.ndarray]
    landmarks: np.ndarray | Sequence[np.ndarray]
    image_ids: Sequence[str]
    sources: Sequence[object]
    splits: Sequence[object] | None = None
    subjects: Sequence[object] | None = None


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
    #: True when ``fit`` accepts ``identities`` (donor faces): the workspace's donors are then handed to it
    accepts_identities: bool = False
    #: Role of the fit set in every image: "statistic" when the fit set only shapes statistics and each image names
    #: its pixel parents; "pixel" when pixels of any fit image may be in any image (a learned image model), so the
    #: fold rule drops the run's images for every fold whose validation photos are in its fit set
    fit_set_role: str = "pixel"
    #: True for a generator that holds a large model (on a GPU when there is one): ``generate`` runs it in the calling
    #: process, never forked into CPU worker processes, and calls :meth:`bind_run` before ``fit``
    in_process: bool = False

    def bind_run(self, run_dir: Path, *, executor: str = "local") -> None:
        """Called by ``generate`` before ``fit``: the run's folder (where a generator that trains models keeps them,
        so that an interrupted run resumes) and the executor of its heavy work (``local`` or ``ray``). The default
        keeps nothing."""
        del run_dir, executor

    def notes(self) -> list[str]:
        """What a user of the fitted generator's run should be told (the CLI prints these after generating)."""
        return []

    def fit(
        self,
        images: Sequence[np.ndarray],
        landmarks: np.ndarray | Sequence[np.ndarray],
        labels: Sequence[object],
        *,
        image_ids: Sequence[str],
        splits: Sequence[object],
        sources: Sequence[object] | None = None,
        folds: Sequence[object] | None = None,
        subjects: Sequence[object] | None = None,
        identities: Identities | None = None,
    ) -> "Generator":
        """Learn from real training images.

        Args:
            images: N images ``(H_i, W_i, 3)`` uint8.
            landmarks: ``(N, K, 2)`` (or N arrays ``(K, 2)``) landmark positions (x, y) in each image.
            labels: N condition labels.
            image_ids: N manifest image_ids (recorded as the parents of what is sampled).
            splits: N manifest splits; anything other than ``"train"`` is refused.
            sources: optional N manifest sources; anything other than ``"real"`` is refused.
            folds: optional N validation folds (NA: none); default none.
            subjects: optional N subject ids (NA: the image is its own subject); default each image its own.
            identities: donor faces, for generators with ``accepts_identities``.

        Raises:
            LeakageError: a test image is among the inputs or the identities.
        """
        check_training_parents(image_ids, splits, sources)
        n = len(image_ids)
        folds = [None] * n if folds is None else list(folds)
        subjects = list(image_ids) if subjects is None else list(subjects)
        if not (len(images) == len(labels) == len(landmarks) == len(folds) == len(subjects) == n):
            raise ValueError(
                f"images ({len(images)}), landmarks ({len(landmarks)}), labels ({len(labels)}), folds "
                f"({len(folds)}), subjects ({len(subjects)}) and image_ids ({n}) must have one entry per image"
            )
        if identities is not None:
            if not self.accepts_identities:
                raise PhenosynthError(f"Generator '{self.name}' does not take identities (donor faces).")
            check_identities(identities.image_ids, identities.sources, identities.splits, training_ids=image_ids)
        if n == 0:
            raise PhenosynthError("A generator needs at least one real training image with a face to learn from.")
        lm = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in landmarks]
        if len({p.shape for p in lm}) != 1:
            raise PhenosynthError("All training faces must have the same number of landmarks (one landmarker).")
        ids = [str(i) for i in image_ids]
        self.fit_image_ids_ = list(ids)  # a subclass that learns from fewer narrows it in _fit (the run's fit set)
        self._fit(
            [np.asarray(im) for im in images], np.stack(lm), [str(v) for v in labels], ids,
            folds=[None if _missing(f) else int(f) for f in folds],
            subjects=[i if _missing(s) else str(s) for s, i in zip(subjects, ids)],
            identities=identities,
        )
        return self

    @abstractmethod
    def _fit(self, images: list[np.ndarray], landmarks: np.ndarray, labels: list[str], image_ids: list[str], *,
             folds: list[int | None], subjects: list[str], identities: Identities | None) -> None:
        """Subclass hook: inputs already checked; landmarks ``(N, K, 2)``; ``folds`` (None: no fold), ``subjects``
        (an image without a subject id is its own subject) and ``identities`` (only for ``accepts_identities``).
        ``fit_image_ids_`` holds every input's image_id; one that learns from a subset sets it to that subset."""

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
        """Constructor settings (recorded in every sample's params): the attributes named like ``__init__``'s
        parameters."""
        import inspect

        names = set(inspect.signature(type(self).__init__).parameters) - {"self"}
        return {k: v for k, v in vars(self).items() if k in names}


def _missing(value: object) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


GENERATORS: Registry[Generator] = Registry("generator")


def list_generators() -> list[str]:
    return GENERATORS.names()


def generator_options(name: str) -> list[str]:
    """The constructor options of the registered generator ``name`` (raises for an unknown name)."""
    import inspect

    return [p for p in inspect.signature(GENERATORS.get(name)).parameters if p != "self"]


def check_generator_options(name: str, options: dict[str, Any]) -> None:
    """Raise :class:`PhenosynthError` naming the options of ``name`` when ``options`` has one it does not have
    (``None`` values are ignored: they keep the defaults)."""
    known = generator_options(name)
    unknown = sorted(k for k, v in options.items() if v is not None and k not in known)
    if unknown:
        raise PhenosynthError(f"Generator '{name}' has no option(s) {', '.join(unknown)}; its options: "
                              f"{', '.join(known)}.")


def create_generator(name: str, **options: Any) -> Generator:
    """Build the registered generator ``name`` (``None`` options are dropped so its defaults apply).

    Raises:
        PhenosynthError: an option the generator does not have (names the ones it has).
    """
    check_generator_options(name, options)
    return GENERATORS.create(name, **options)
