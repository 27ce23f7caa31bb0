"""Lineage of synthetic images, generator side: the held-out test set must never be a generator's input.

:func:`check_training_parents` is what every generator calls before it looks at an image: anything that is not a
usable real *training* image raises :class:`~phenosynth.errors.LeakageError`; :func:`check_identities` is the same
for the faces that lend identities to an identity-free generator (donors only: a test photo raises
:class:`~phenosynth.errors.LeakageError`, a patient's photo is refused).

What happens *after* a re-split (which synthetic images stay usable: children of test images and every image of a
run whose recorded fit set holds a test image are excluded) is the data layer's rule, owned by one function:
:func:`phenosynth.data.leakage.exclude_leaked_synthetic`, applied by ``split`` itself; ``train`` and ``study``
re-check the workspace with :func:`phenosynth.data.leakage.assert_no_leakage` before training.
"""

from __future__ import annotations

from collections.abc import Sequence

from phenosynth.data.manifest import DONOR, REAL, TEST, TRAIN, UNSEEN
from phenosynth.errors import LeakageError, PhenosynthError


def check_training_parents(
    image_ids: Sequence[str], splits: Sequence[object], sources: Sequence[object] | None = None
) -> None:
    """Raise unless every image is a real image of the training split.

    image_ids, splits (and optionally sources): one entry per image a generator is about to learn from.

    Raises:
        LeakageError: an image is in the test split, or is a photo of an unseen condition (``split == "unseen"``,
            held out whole by ``split --unseen-fraction``); names up to five of them.
        PhenosynthError: an image has no split yet (run ``phenosynth split``) or is synthetic.
    """
    ids = [str(i) for i in image_ids]
    if len(splits) != len(ids) or (sources is not None and len(sources) != len(ids)):
        raise ValueError("image_ids, splits and sources must have one entry per image")
    for held_out, what in ((TEST, "held-out test image(s)"),
                           (UNSEEN, "photo(s) of unseen conditions (held out whole by split --unseen-fraction)")):
        refused = [i for i, s in zip(ids, splits) if s == held_out]
        if refused:
            raise LeakageError(
                f"{len(refused)} {what} were handed to a generator (e.g. {', '.join(t[:12] for t in refused[:5])}). "
                "Generators may only learn from real training images; pass rows from manifest.real_train(df)."
            )
    unsplit = [i for i, s in zip(ids, splits) if s != TRAIN]
    if unsplit:
        raise PhenosynthError(
            f"{len(unsplit)} image(s) handed to a generator have no train/test split yet. "
            "Run first: phenosynth split -w WS"
        )
    if sources is not None:
        fake = [i for i, s in zip(ids, sources) if s != REAL]
        if fake:
            raise PhenosynthError(
                f"{len(fake)} synthetic image(s) were handed to a generator; generators learn from real images only."
            )


def check_identities(
    image_ids: Sequence[str], sources: Sequence[object], splits: Sequence[object] | None = None, *,
    training_ids: Sequence[str] = (),
) -> None:
    """Raise unless every identity face is a donor (manifest ``source=donor``, no split, not a training image).

    Raises:
        LeakageError: an identity is a held-out test image (names up to five of them).
        PhenosynthError: an identity is a patient's photo or a synthetic image (identities must be donors).
    """
    ids = [str(i) for i in image_ids]
    splits = [None] * len(ids) if splits is None else list(splits)
    if len(sources) != len(ids) or len(splits) != len(ids):
        raise ValueError("identity image_ids, sources and splits must have one entry per face")
    test = [i for i, s in zip(ids, splits) if str(s) == TEST]  # str: NA (no split) compares as "<NA>"
    if test:
        raise LeakageError(
            f"{len(test)} held-out test image(s) were handed to a generator as identities "
            f"(e.g. {', '.join(t[:12] for t in test[:5])}). Identities must be donor faces (ingest --donors)."
        )
    train = set(map(str, training_ids))
    patients = [i for i, s in zip(ids, sources) if str(s) != DONOR or i in train]
    if patients:
        raise PhenosynthError(
            f"{len(patients)} identity face(s) are not donors (e.g. {', '.join(p[:12] for p in patients[:5])}): an "
            "identity-free generator takes identities from donor faces only (phenosynth ingest DIR -w WS --donors)."
        )
