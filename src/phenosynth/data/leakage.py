"""The leakage rule: the one owner of "which synthetic images are usable given the split", and the check that a
workspace does not leak its held-out test set into training.

The held-out real test set reaches training in these ways, all handled here:

- a synthetic image warped from a test photo (its **pixel** parents, ``parents``): excluded, reason
  :data:`PARENT_IN_TEST`;
- a synthetic image drawn from a statistic a test photo shaped (its ``statistic_parents``, e.g. the condition's
  photos behind ``phenotype-transfer``'s phenotype): excluded, reason :data:`STATISTIC_IN_TEST`;
- a synthetic image of a generator run that *learned* from a test photo (``shape-warp``'s shape model is fitted on
  every training face; each run records its whole fit set in ``WS/synthetic/<run>/run.json`` as
  ``training_images``): every image of that run is excluded, reason :data:`FIT_ON_TEST` (re-generate after a
  re-split);
- a donor face (``source=donor``: a non-patient lending an identity) that is in fact a patient photo (a
  near-duplicate of a real image: :func:`exclude_patient_donors`, reason :data:`DONOR_IS_PATIENT`), or that carries a
  label, a split or a fold (:func:`donor_problems`);
- a photo of an **unseen condition** (``split == "unseen"``: a condition held out whole by ``split
  --unseen-fraction``, scored only by gallery matching) that reached a generator (a synthetic image's pixel or
  statistic parent, or a run's fit set: excluded, reason :data:`UNSEEN_SOURCE`), a fold, or whose condition also has
  train/test photos (:func:`unseen_problems`);
- one subject, or two near-duplicate photos (perceptual hash within a few bits, e.g. a resized or re-encoded copy
  filed under another subject id; cropped copies are caught only when the crop is tiny), on both sides of the split
  or in two validation folds.

:func:`exclude_leaked_synthetic` applies the first two rules (and releases images whose parents and run are all back
in training); :func:`phenosynth.data.split.split` calls it on every split and groups near-duplicates (candidates by
:func:`near_duplicate_pairs`, confirmed on the files by :func:`confirm_near_duplicates`) as one subject.
The **fold rule** (:func:`exclude_validation_children`, applied per fold by training) is narrower: a fold's model
never trains on an image whose *pixels* come from one of its validation photos (its pixel parents, or any photo of
the fit set of a run whose fit set is a pixel source, ``fit_set_role: "pixel"`` in ``run.json``); statistic sources in
the validation fold are allowed (a phenotype mean does not show the validation faces).
:func:`assert_no_leakage` is what training and studies call before they train: it re-checks the saved workspace
(a hand-edited manifest, a run record written after the split, a grouped near-duplicate moved to the other side) and
raises :class:`~phenosynth.errors.LeakageError` naming the images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from phenosynth.data.imageio import ImageDecodeError, load_rgb
from phenosynth.data.manifest import DONOR, REAL, SYNTHETIC, TEST, TRAIN, UNSEEN, usable
from phenosynth.data.workspace import Workspace
from phenosynth.errors import LeakageError

log = logging.getLogger(__name__)

#: exclude_reason of a synthetic image made from an image now in the test set.
PARENT_IN_TEST = "parent in test set"
#: exclude_reason of a synthetic image whose generator run learned from an image now in the test set.
FIT_ON_TEST = "generator fit on a test image"
#: exclude_reason of a synthetic image drawn from a statistic that an image now in the test set shaped.
STATISTIC_IN_TEST = "statistic source in test set"
#: exclude_reason of a synthetic image that learned from a photo of an unseen condition (its pixel or statistic
#: parent, or its generator run's fit set): unseen conditions never reach a generator.
UNSEEN_SOURCE = "source in an unseen condition"
LEAKAGE_REASONS = (PARENT_IN_TEST, STATISTIC_IN_TEST, FIT_ON_TEST, UNSEEN_SOURCE)
#: exclude_reason, in one fold's manifest, of a synthetic image whose pixels come from that fold's validation photos.
PARENT_IN_VALIDATION = "parent in validation fold"
#: exclude_reason, in one fold's manifest, of an image of a pixel-source run fit on that fold's validation photos.
FIT_ON_VALIDATION = "generator fit on a validation photo (pixel source)"
#: Generators whose run records predate ``fit_set_role``: their fit set is a statistic (each image names its
#: pixel parents). A record of any other generator without the field is taken as a pixel source.
STATISTIC_FIT_GENERATORS = ("shape-warp",)
#: Two real images whose 64-bit perceptual hashes (the manifest's ``phash``) differ in at most this many bits are
#: near-duplicate candidates; :func:`confirm_near_duplicates` then compares the two files' low-frequency content.
DEFAULT_NEAR_DUPLICATE_BITS = 4
#: Kind of the ``split_report.csv`` rows that record the near-duplicate pairs a split kept on one side.
NEAR_DUPLICATE_KIND = "near-duplicate-grouped"
#: exclude_reason of a donor face that is a near-duplicate of a patient photo: a donor must never be a patient.
DONOR_IS_PATIENT = "donor is a near-duplicate of a patient photo"
#: Kind of the ``split_report.csv`` rows that record a donor face excluded as a near-duplicate of a patient photo.
DONOR_NEAR_PATIENT_KIND = "donor-near-duplicate-of-patient"
#: The options of the last split (``test_size, folds, seed, near_duplicate_bits``), written by
#: :func:`phenosynth.data.split.split` into the workspace, so advice to re-split can repeat them.
SPLIT_OPTIONS_FILE = "split.json"
_SPLIT_OPTIONS_UNKNOWN = "--test-size T --folds K --seed S, with the options you split with"

FitSets = Mapping[str, Iterable[str]]


# ---------------------------------------------------------------------------------------------------------------------
# Workspace records


def load_fit_sets(ws: Workspace) -> dict[str, list[str]]:
    """run name -> the image_ids its generator learned from, from ``WS/synthetic/*/run.json``."""
    out: dict[str, list[str]] = {}
    for record in sorted(Path(ws.synthetic_dir).glob("*/run.json")):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            log.warning("Could not read %s; its generator run is not checked for leakage", record)
            continue
        if "run" in data and "training_images" in data:
            out[str(data["run"])] = [str(i) for i in data["training_images"]]
    return out


def load_pixel_fit_sets(ws: Workspace) -> dict[str, list[str]]:
    """run name -> fit set, for the runs whose fit set is a pixel source of every image (``run.json``'s
    ``fit_set_role`` is ``"pixel"``; records without it: every generator but :data:`STATISTIC_FIT_GENERATORS`)."""
    out: dict[str, list[str]] = {}
    for record in sorted(Path(ws.synthetic_dir).glob("*/run.json")):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue  # load_fit_sets warns
        role = data.get("fit_set_role") or (
            "statistic" if data.get("generator") in STATISTIC_FIT_GENERATORS else "pixel")
        if "run" in data and "training_images" in data and role == "pixel":
            out[str(data["run"])] = [str(i) for i in data["training_images"]]
    return out


def run_of(params: object) -> str | None:
    """The generator run a synthetic image belongs to (``params["run"]``), or None."""
    if not isinstance(params, str) or not params:
        return None
    try:
        run = json.loads(params).get("run")
    except (ValueError, AttributeError):
        return None
    return str(run) if run is not None else None


# ---------------------------------------------------------------------------------------------------------------------
# The rule (pure)


def held_out_ids(manifest: pd.DataFrame) -> set[str]:
    """image_ids of the real images in the test split (excluded or not: an excluded photo still taught nobody)."""
    return set(manifest.loc[(manifest["source"] == REAL) & (manifest["split"] == TEST), "image_id"].astype(str))


def unseen_ids(manifest: pd.DataFrame) -> set[str]:
    """image_ids of the real photos of unseen conditions (``split == "unseen"``, excluded or not)."""
    return set(manifest.loc[(manifest["source"] == REAL) & (manifest["split"] == UNSEEN), "image_id"].astype(str))


def leak_reasons(manifest: pd.DataFrame, fit_sets: FitSets | None = None) -> pd.Series:
    """For every synthetic row (index as in ``manifest``): why the split makes it unusable (:data:`UNSEEN_SOURCE`,
    else :data:`PARENT_IN_TEST`, else :data:`STATISTIC_IN_TEST`, else :data:`FIT_ON_TEST`), or None when it may be
    used."""
    test_ids = held_out_ids(manifest)
    unseen = unseen_ids(manifest)
    bad_runs = {str(run) for run, ids in (fit_sets or {}).items() if any(str(i) in test_ids for i in ids)}
    unseen_runs = {str(run) for run, ids in (fit_sets or {}).items() if any(str(i) in unseen for i in ids)}
    synth = manifest[manifest["source"] == SYNTHETIC]
    reasons = []
    for parents, sources, params in zip(synth["parents"], synth["statistic_parents"], synth["params"]):
        if unseen and (any(p in unseen for p in parents) or any(p in unseen for p in sources)
                       or (unseen_runs and run_of(params) in unseen_runs)):
            reasons.append(UNSEEN_SOURCE)
        elif any(p in test_ids for p in parents):
            reasons.append(PARENT_IN_TEST)
        elif any(p in test_ids for p in sources):
            reasons.append(STATISTIC_IN_TEST)
        elif bad_runs and run_of(params) in bad_runs:
            reasons.append(FIT_ON_TEST)
        else:
            reasons.append(None)
    return pd.Series(reasons, index=synth.index, dtype=object)


def exclude_leaked_synthetic(
    manifest: pd.DataFrame, fit_sets: FitSets | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Apply the leakage rule to the synthetic images; return (new manifest, image_ids the rule excludes).

    fit_sets: run name -> image_ids that run's generator learned from (:func:`load_fit_sets`).

    Other exclusion reasons are kept; a synthetic image excluded only by this rule whose parents (and run) are all
    back in training becomes usable again. The input frame is not modified.
    """
    df = manifest.copy()
    flagged: list[str] = []
    for idx, new_reason in leak_reasons(df, fit_sets).items():
        reason = df.at[idx, "exclude_reason"]
        if new_reason is not None:
            flagged.append(str(df.at[idx, "image_id"]))
            if pd.isna(reason) or reason in LEAKAGE_REASONS:
                df.at[idx, "exclude_reason"] = new_reason
        elif not pd.isna(reason) and reason in LEAKAGE_REASONS:
            df.at[idx, "exclude_reason"] = pd.NA
    return df, flagged


def leakage_report(manifest: pd.DataFrame, fit_sets: FitSets | None = None) -> pd.DataFrame:
    """One row per synthetic image the rule excludes: ``image_id, path, label, generator, run, reason,
    test_parents`` (';'-joined test parents of either role, empty for a run-wide exclusion), ``test_fit_images`` (';'-joined test
    images in its run's fit set). Empty when the lineage is clean."""
    test_ids = held_out_ids(manifest)
    fits = {str(run): [str(i) for i in ids if str(i) in test_ids] for run, ids in (fit_sets or {}).items()}
    reasons = leak_reasons(manifest, fit_sets)
    rows = []
    for idx, reason in reasons.items():
        if reason is None:
            continue
        run = run_of(manifest.at[idx, "params"])
        rows.append({
            "image_id": str(manifest.at[idx, "image_id"]), "path": manifest.at[idx, "path"],
            "label": manifest.at[idx, "label"], "generator": manifest.at[idx, "generator"], "run": run or "",
            "reason": reason,
            "test_parents": ";".join(p for col in ("parents", "statistic_parents")
                                     for p in manifest.at[idx, col] if p in test_ids),
            "test_fit_images": ";".join(fits.get(run or "", [])),
        })
    columns = ["image_id", "path", "label", "generator", "run", "reason", "test_parents", "test_fit_images"]
    return pd.DataFrame(rows, columns=columns)


def exclude_validation_children(
    manifest: pd.DataFrame, validation_ids: Iterable[str], pixel_fit_sets: FitSets | None = None
) -> pd.DataFrame:
    """The fold rule: ``manifest`` as one fold's training may use it, with the synthetic images whose pixels come
    from the fold's ``validation_ids`` excluded: pixel parents among them (:data:`PARENT_IN_VALIDATION`), or an
    image of a run whose fit set is a pixel source and holds one of them (``pixel_fit_sets``,
    :func:`load_pixel_fit_sets`; :data:`FIT_ON_VALIDATION`). Statistic sources in the fold are allowed.

    A fold's model must not train on synthetic copies of the photos it is validated on, or model selection would
    see its own validation faces through them. The input frame is not modified.
    """
    val = {str(i) for i in validation_ids}
    bad_runs = {str(run) for run, ids in (pixel_fit_sets or {}).items() if any(str(i) in val for i in ids)}
    candidates = (manifest["source"] == SYNTHETIC) & manifest["exclude_reason"].isna()
    child = candidates & manifest["parents"].map(lambda ps: any(p in val for p in ps))
    of_run = candidates & ~child & manifest["params"].map(lambda p: run_of(p) in bad_runs) if bad_runs else None
    if not child.any() and (of_run is None or not of_run.any()):
        return manifest
    out = manifest.copy()
    out.loc[child, "exclude_reason"] = PARENT_IN_VALIDATION
    if of_run is not None:
        out.loc[of_run, "exclude_reason"] = FIT_ON_VALIDATION
    return out


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1, dtype=np.uint8)


def near_duplicate_pairs(hashes: pd.Series, *, max_distance: int, block: int = 1024) -> list[tuple[str, str, int]]:
    """(id_a, id_b, bits) for every pair of entries of ``hashes`` (index: image_id, values: 64-bit hex perceptual
    hashes) that differ in at most ``max_distance`` bits; ``id_a`` comes before ``id_b`` in ``hashes``.

    >>> near_duplicate_pairs(pd.Series(["ffff000000000000", "ffff000000000003", "00ff"], index=["a", "b", "c"]),
    ...                      max_distance=4)
    [('a', 'b', 2)]
    """
    hashes = hashes.dropna()
    n = len(hashes)
    if n < 2:
        return []
    ints = np.array([int(h, 16) for h in hashes.to_numpy()], dtype=np.uint64)
    ids = [str(i) for i in hashes.index]
    out: list[tuple[str, str, int]] = []
    for start in range(0, n, block):  # blocks of the upper triangle: memory stays (block x n), not (n x n)
        bits = _popcount(ints[start:start + block, None] ^ ints[None, start:])
        for i, j in zip(*np.nonzero(bits <= max_distance)):
            if j > i:
                out.append((ids[start + int(i)], ids[start + int(j)], int(bits[i, j])))
    return out


def dct_signature(path: Path) -> np.ndarray | None:
    """Unit vector of an image's low-frequency content (the 16 x 16 DCT block of its 64 x 64 grayscale version,
    without the mean), or None when the file cannot be read. What a perceptual hash binarises, kept as numbers."""
    from PIL import Image
    from scipy.fft import dctn

    try:
        rgb = load_rgb(path)
    except ImageDecodeError as exc:
        log.warning("Could not read %s to confirm a near-duplicate (%s); the 64-bit hash decides", path, exc)
        return None
    grey = np.asarray(Image.fromarray(rgb).convert("L").resize((64, 64), Image.LANCZOS), dtype=np.float64)
    coef = dctn(grey, norm="ortho")[:16, :16].ravel()[1:]
    norm = float(np.linalg.norm(coef))
    return coef / norm if norm > 0 else coef


#: Largest cosine distance between two :func:`dct_signature` vectors that confirms a near-duplicate. Measured:
#: resized (80 %) + JPEG q80 copies <= 7e-5 (ORL photos, the demo's simulated faces, smooth test images); different
#: simulated faces within 4 bits of 64-bit hash >= 6e-3; different ORL subjects >= 0.1; a 2 % crop 0.014-0.05.
CONFIRM_DISTANCE = 1e-3


def confirm_near_duplicates(
    ws: Workspace, manifest: pd.DataFrame, pairs: Iterable[tuple[str, str, int]]
) -> list[tuple[str, str, int]]:
    """The candidate ``pairs`` (64-bit perceptual hashes within the threshold) whose files also agree in their
    low-frequency content (:func:`dct_signature` within :data:`CONFIRM_DISTANCE`).

    A 64-bit hash cannot tell apart photos that share one layout (simulated faces on one template, tightly aligned
    crops): different faces come within 4 bits, and joining them would chain whole classes into one "subject". A pair
    whose files cannot be read is kept (the 64-bit hash decides: better one subject too many on a side than a leak).
    """
    pairs = list(pairs)
    if not pairs:
        return []
    path_of = dict(zip(manifest["image_id"].astype(str), manifest["path"].astype(str)))
    sig = {i: dct_signature(ws.resolve(path_of[i])) for i in sorted({a for a, _, _ in pairs} | {b for _, b, _ in pairs})}
    kept = [(a, b, d) for a, b, d in pairs
            if sig[a] is None or sig[b] is None or 1.0 - float(sig[a] @ sig[b]) <= CONFIRM_DISTANCE]
    if len(kept) < len(pairs):
        log.info("near-duplicates: %d of %d candidate pairs confirmed by their files", len(kept), len(pairs))
    return kept


def donor_patient_pairs(
    ws: Workspace, manifest: pd.DataFrame, *, max_distance: int = DEFAULT_NEAR_DUPLICATE_BITS
) -> list[tuple[str, str, int]]:
    """(donor image_id, real image_id, bits) for every donor face that is a near-duplicate of a real (patient) photo,
    excluded or not: perceptual hashes within ``max_distance`` bits, confirmed on the files
    (:func:`confirm_near_duplicates`), as the split groups near-duplicate patient photos."""
    hashed = manifest[manifest["phash"].notna()]
    donor_ids = set(hashed.loc[hashed["source"] == DONOR, "image_id"].astype(str))
    real_ids = set(hashed.loc[hashed["source"] == REAL, "image_id"].astype(str))
    if not donor_ids or not real_ids:
        return []
    both = hashed[hashed["source"].isin([DONOR, REAL])]
    pairs = near_duplicate_pairs(both.set_index(both["image_id"].astype(str))["phash"], max_distance=max_distance)
    cross = [(a, b, d) if a in donor_ids else (b, a, d) for a, b, d in pairs
             if (a in donor_ids and b in real_ids) or (b in donor_ids and a in real_ids)]
    return confirm_near_duplicates(ws, manifest, cross)


def exclude_patient_donors(
    ws: Workspace, manifest: pd.DataFrame, *, max_distance: int = DEFAULT_NEAR_DUPLICATE_BITS,
    pairs: Iterable[tuple[str, str, int]] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """``(manifest, flagged donor image_ids)``: every donor face that is a near-duplicate of a patient photo
    (``pairs`` of :func:`donor_patient_pairs` unless given) excluded with :data:`DONOR_IS_PATIENT`; a donor excluded
    only for that reason and no longer near any patient photo is released. Other exclusion reasons are kept; the
    input frame is not modified."""
    pairs = donor_patient_pairs(ws, manifest, max_distance=max_distance) if pairs is None else pairs
    like_patient = {str(d) for d, _, _ in pairs}
    df = manifest.copy()
    flagged = []
    for idx in df.index[df["source"] == DONOR]:
        reason = df.at[idx, "exclude_reason"]
        if str(df.at[idx, "image_id"]) in like_patient:
            flagged.append(str(df.at[idx, "image_id"]))
            if pd.isna(reason):
                df.at[idx, "exclude_reason"] = DONOR_IS_PATIENT
        elif not pd.isna(reason) and reason == DONOR_IS_PATIENT:
            df.at[idx, "exclude_reason"] = pd.NA
    if flagged:
        log.warning("%d donor face(s) excluded: near-duplicates of patient photos (a donor must never be a patient)",
                    len(flagged))
    return df, sorted(flagged)


def resplit_command(ws: Workspace) -> str:
    """The command that re-runs the workspace's last split with the options it was made with (``split.json``), so
    the test set stays the same; without that record, the command with its options for the user to fill in."""
    try:
        opts = json.loads((ws.root / SPLIT_OPTIONS_FILE).read_text())
        command = (f"phenosynth split -w {ws.root} --test-size {float(opts['test_size'])!r} "
                   f"--folds {int(opts['folds'])} --seed {int(opts['seed'])}")
        bits = int(opts.get("near_duplicate_bits", DEFAULT_NEAR_DUPLICATE_BITS))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return f"phenosynth split -w {ws.root} {_SPLIT_OPTIONS_UNKNOWN}"
    if float(opts.get("unseen_fraction", 0.0) or 0.0) > 0:
        command += f" --unseen-fraction {float(opts['unseen_fraction'])!r}"
    if bits != DEFAULT_NEAR_DUPLICATE_BITS:  # not a CLI option: the library call that set it
        command += f" (and near_duplicate_bits={bits}, from Python)"
    return command


def recorded_near_duplicates(ws: Workspace) -> list[tuple[str, str]]:
    """The near-duplicate pairs the last split kept on one side (``split_report.csv``, kind ``near-duplicate-grouped``)."""
    if not ws.split_report_path.exists():
        return []
    try:
        report = pd.read_csv(ws.split_report_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        log.warning("Could not read %s; near-duplicate groups are not re-checked", ws.split_report_path)
        return []
    if not {"kind", "image_id", "other_image_id"} <= set(report.columns):
        return []
    rows = report[report["kind"] == NEAR_DUPLICATE_KIND]
    return list(zip(rows["image_id"], rows["other_image_id"]))


# ---------------------------------------------------------------------------------------------------------------------
# The check


def _names(values: Iterable[object], k: int = 3) -> str:
    """``a, b, c and 4 more``: a few names of a list, and how many there are."""
    values = [str(v) for v in values]
    shown = ", ".join(values[:k])
    return shown + (f" and {len(values) - k} more" if len(values) > k else "")


def donor_problems(manifest: pd.DataFrame) -> list[str]:
    """Donor rows (excluded or not) that carry a label, a split or a fold: a donor is never a class, a training or
    test image, or in a validation fold."""
    donors = manifest[manifest["source"] == DONOR]
    problems = []
    for column, what in (("label", "a label"), ("split", "a split"), ("fold", "a validation fold")):
        bad = donors[donors[column].notna()]
        if len(bad):
            problems.append(f"{len(bad)} donor face(s) with {what} "
                            f"({_names(bad['path'].fillna(bad['image_id']).astype(str))}): donors are never "
                            "labelled, split or folded")
    return problems


def unseen_problems(manifest: pd.DataFrame) -> list[str]:
    """Photos of unseen conditions (``split == "unseen"``, excluded or not) that sit in a validation fold, and real
    photos in train/test of a condition that is unseen: an unseen condition is never folded, trained or tested."""
    real = manifest[manifest["source"] == REAL]
    unseen = real[real["split"] == UNSEEN]
    if unseen.empty:
        return []
    problems = []
    folded = unseen[unseen["fold"].notna()]
    if len(folded):
        problems.append(f"{len(folded)} photo(s) of unseen conditions in a validation fold "
                        f"({_names(folded['path'].fillna(folded['image_id']).astype(str))})")
    conditions = set(unseen["label"].dropna().astype(str))
    seen_side = real[real["split"].isin([TRAIN, TEST]) & real["label"].astype(str).isin(conditions)]
    if len(seen_side):
        problems.append(f"{len(seen_side)} photo(s) of unseen condition(s) "
                        f"{_names(sorted(set(seen_side['label'].astype(str))))} in the train/test split "
                        f"({_names(seen_side['path'].fillna(seen_side['image_id']).astype(str))}): an unseen "
                        "condition is held out whole")
    return problems


def leakage_problems(
    manifest: pd.DataFrame, fit_sets: FitSets | None = None, *,
    near_duplicates: Iterable[tuple[str, ...]] = (),
) -> list[str]:
    """Every way the split ``manifest`` leaks its test set into training (empty when clean); each problem names a
    few of the images (paths) and says how many there are.

    near_duplicates: pairs of image_ids (near-duplicate photos, :func:`recorded_near_duplicates`) that must be on one
    side of the split and in one fold."""
    u = usable(manifest)
    real = u[(u["source"] == REAL) & u["split"].notna()]
    syn = u[u["source"] == SYNTHETIC]
    path_of = dict(zip(manifest["image_id"].astype(str), manifest["path"].fillna("").astype(str)))

    def shown(ids: Iterable[str]) -> str:
        return _names(path_of.get(str(i)) or str(i)[:12] for i in ids)

    problems = donor_problems(manifest)
    syn_test = syn[syn["split"] == TEST]
    if len(syn_test):
        problems.append(f"{len(syn_test)} synthetic image(s) in the test set ({shown(syn_test['image_id'])})")
    syn_fold = syn[syn["fold"].notna()]
    if len(syn_fold):
        problems.append(f"{len(syn_fold)} synthetic image(s) in a validation fold ({shown(syn_fold['image_id'])})")
    problems += unseen_problems(manifest)
    reasons = leak_reasons(manifest, fit_sets).reindex(syn.index)
    for reason, what in ((UNSEEN_SOURCE, "that learned from a photo of an unseen condition"),
                         (PARENT_IN_TEST, "made from a test image"),
                         (STATISTIC_IN_TEST, "drawn from a statistic of a test image"),
                         (FIT_ON_TEST, "from a generator run fit on a test image")):
        bad = syn[(reasons == reason).to_numpy()]
        if len(bad):
            problems.append(f"{len(bad)} usable synthetic image(s) {what} ({shown(bad['image_id'])})")
    with_subject = real[real["subject_id"].notna()]
    sides = with_subject.groupby("subject_id")["split"].nunique()
    crossing = sorted(sides[sides > 1].index)
    if crossing:
        rows = with_subject[with_subject["subject_id"].isin(crossing)]
        problems.append(f"{len(crossing)} subject(s) on both sides of the split ({_names(crossing)}; images "
                        f"{shown(rows.sort_values('split')['image_id'])})")
    train = with_subject[with_subject["split"] == TRAIN]
    spans = train.groupby("subject_id")["fold"].nunique()
    spanning = sorted(spans[spans > 1].index)
    if spanning:
        problems.append(f"{len(spanning)} subject(s) in several validation folds ({_names(spanning)})")
    split_of = dict(zip(real["image_id"].astype(str), real["split"]))
    fold_of = dict(zip(real["image_id"].astype(str), real["fold"]))
    pairs = [(str(p[0]), str(p[1])) for p in near_duplicates if str(p[0]) in split_of and str(p[1]) in split_of]
    across = [(a, b) for a, b in pairs if split_of[a] != split_of[b]]
    if across:
        problems.append(f"{len(across)} near-duplicate pair(s) on both sides of the split "
                        f"({_names(f'{path_of[a]} ~ {path_of[b]}' for a, b in across)})")
    folds = [(a, b) for a, b in pairs if split_of[a] == split_of[b] == TRAIN
             and not (pd.isna(fold_of[a]) or pd.isna(fold_of[b])) and fold_of[a] != fold_of[b]]
    if folds:
        problems.append(f"{len(folds)} near-duplicate pair(s) in two validation folds "
                        f"({_names(f'{path_of[a]} ~ {path_of[b]}' for a, b in folds)})")
    return problems


def assert_no_leakage(
    workspace: Workspace | pd.DataFrame, fit_sets: FitSets | None = None, *,
    near_duplicates: Iterable[tuple[str, ...]] | None = None,
) -> None:
    """Refuse to train on a workspace (or a manifest) whose split leaks the test set into training.

    With a :class:`Workspace`, the manifest, the run records (``fit_sets``) and the near-duplicate pairs the split
    grouped (``split_report.csv``) are read from it unless given.

    Raises:
        LeakageError: names every problem with a few of its images, and says how to fix it (re-run ``split`` with
        the options it was made with, :func:`resplit_command`, which re-applies the rule and keeps the test set).
    """
    if isinstance(workspace, Workspace):
        manifest = workspace.load_manifest()
        fit_sets = load_fit_sets(workspace) if fit_sets is None else fit_sets
        near_duplicates = recorded_near_duplicates(workspace) if near_duplicates is None else near_duplicates
        command = resplit_command(workspace)
    else:
        manifest = workspace
        command = f"phenosynth split -w WS {_SPLIT_OPTIONS_UNKNOWN}"
    problems = leakage_problems(manifest, fit_sets, near_duplicates=near_duplicates or ())
    if problems:
        raise LeakageError(
            "The workspace's split leaks the held-out test set into training: " + "; ".join(problems) + ". "
            f"Re-run the split with the same options ({command}), which applies the leakage rule again and keeps the "
            "test set; if you edited the manifest by hand, undo that edit."
        )
