"""The tests' small workspaces. The steps every builder shares live here once (an image file and its manifest row, a
split, a faces table from landmarks, the face pass's faces.parquet, a precomputed feature file); each builder below is
a short composition of them for the data one test module needs. ``tests/conftest.py`` hands the builders to tests as
factory fixtures (``make_*_workspace``), so their parameters still work. Every builder makes its workspace at
``root / "ws"``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from phenosynth.data.workspace import Workspace

BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")

# --- shared steps ----------------------------------------------------------------------------------------------------


def save_image(path: Path, image: np.ndarray | bytes) -> str:
    """Write ``image`` to ``path`` (an array as PNG, raw bytes as they are: a broken file); its image_id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, bytes):
        path.write_bytes(image)
    else:
        Image.fromarray(image).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def image_row(ws: Workspace, path: Path, image: np.ndarray | bytes, **fields) -> dict:
    """Write ``image`` to ``path``; its manifest row: image_id, path as the manifest stores it, then ``fields``."""
    return {"image_id": save_image(path, image), "path": ws.relpath(path), **fields}


def write_audit(ws: Workspace, run: str, records: list[dict], summary: dict | None = None) -> None:
    """A hand-written audit of ``run``, as ``phenosynth audit`` stores it: ``audit.parquet`` of ``records`` (every
    ``AUDIT_COLUMNS`` column, None where a record has none) and ``summary.json`` (``summary`` plus the record of what
    the audit measured: the workspace's manifest as it is now, so a later change makes the audit stale)."""
    import json

    from phenosynth.audit.inputs import manifest_inputs
    from phenosynth.audit.privacy import AUDIT_COLUMNS

    folder = ws.root / "audit" / run
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([dict.fromkeys(AUDIT_COLUMNS) | r for r in records]).to_parquet(folder / "audit.parquet", index=False)
    record = {"run": {}, "settings": {}, **(summary or {}), "inputs": manifest_inputs(ws.load_manifest(), run)}
    (folder / "summary.json").write_text(json.dumps(record))


def split_fields(test: bool, fold: int | None = None) -> dict:
    """The split columns of a manifest row: a test image has no fold."""
    return {"split": "test" if test else "train", "fold": None if test else fold}


def save_rows(ws: Workspace, rows: list[dict]) -> Workspace:
    """``ws`` with ``rows`` as its manifest."""
    ws.save_manifest(pd.DataFrame(rows))
    return ws


def face_row(image_id: str, landmarks: np.ndarray, box: np.ndarray) -> dict:
    """A found face: the row of a faces table (as the face stage's ``load_faces`` returns it)."""
    return {"image_id": image_id, "status": "ok", "landmarks": landmarks, **dict(zip(BOX_COLUMNS, box))}


def faces_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).set_index("image_id")


def faces_parquet_rows(faces: pd.DataFrame, detector: str = "dlib-hog", landmarker: str = "dlib68") -> pd.DataFrame:
    """``faces`` (a faces table) as the face pass stores it in faces.parquet for one detector + landmarker."""
    from phenosynth.faces.landmarks import five_from_68

    rows = []
    for image_id, r in faces.iterrows():
        lm = np.asarray(r["landmarks"], dtype=np.float64)
        rows.append({"image_id": image_id, "detector": detector, "landmarker": landmarker, "status": r["status"],
                     "n_faces": 1, "score": 1.0, "box_x0": r["box_x0"], "box_y0": r["box_y0"], "box_x1": r["box_x1"],
                     "box_y1": r["box_y1"], "landmarks": lm.ravel().tolist(),
                     "landmarks5": five_from_68(lm).ravel().tolist(), "attempt": "upsample=1"})
    return pd.DataFrame(rows)


def write_faces_parquet(ws: Workspace, *tables: pd.DataFrame) -> None:
    """faces.parquet holding ``tables`` (rows in the face pass's format, one table per face setting)."""
    pd.concat(tables).to_parquet(ws.faces_path, index=False)


def write_class_features(ws: Workspace, dims: tuple[tuple[str, int], ...], rng: np.random.Generator) -> None:
    """Precomputed features (``spec.features_from``) for every manifest image: one file per (backbone, dims),
    unit noise around a per-class centre."""
    from phenosynth.study.runner import save_feature_file

    df = ws.load_manifest()
    labels, classes = pd.factorize(df["label"])
    for name, d in dims:
        X = rng.normal(0, 1, (len(df), d)) + 2.0 * rng.normal(0, 1, (len(classes), d))[labels]
        save_feature_file(ws.root / "features", name, df["image_id"].astype(str).tolist(), X)


# --- image and landmark data -----------------------------------------------------------------------------------------


def template68() -> np.ndarray:
    """A plausible 68-point face (dlib / iBUG order) in the unit square: jaw, brows, nose, eyes, mouth."""
    pts: list[tuple[float, float]] = []
    t = np.linspace(np.pi, 0, 17)
    pts += list(zip(0.5 + 0.45 * np.cos(t), 0.45 + 0.5 * np.sin(t)))
    for x0, x1 in ((0.15, 0.42), (0.58, 0.85)):
        pts += list(zip(np.linspace(x0, x1, 5), 0.3 - 0.04 * np.sin(np.linspace(0, np.pi, 5))))
    pts += [(0.5, y) for y in np.linspace(0.4, 0.62, 4)]
    pts += list(zip(np.linspace(0.42, 0.58, 5), [0.67] * 5))
    a = np.linspace(np.pi, 3 * np.pi, 7)[:-1]
    for cx in (0.32, 0.68):
        pts += list(zip(cx + 0.07 * np.cos(a), 0.42 + 0.03 * np.sin(a)))
    a = np.pi + np.arange(12) * 2 * np.pi / 12
    pts += list(zip(0.5 + 0.15 * np.cos(a), 0.8 + 0.05 * np.sin(a)))
    a = np.pi + np.arange(8) * 2 * np.pi / 8
    pts += list(zip(0.5 + 0.1 * np.cos(a), 0.8 + 0.025 * np.sin(a)))
    return np.array(pts)


def in_box(unit_points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Points of the unit square placed in ``box`` (x0, y0, x1, y1)."""
    return unit_points * (box[2:] - box[:2]) + box[:2]


ASTRONAUT_BOX = np.array([44.0, 15.0, 75.0, 53.0])  # the astronaut's face in the 128 px image (x0, y0, x1, y1)


def astronaut_photo(variant: int) -> np.ndarray:
    """skimage's astronaut at 128 px, shifted and brightened a little by ``variant``."""
    from skimage import data
    from skimage.transform import resize

    img = (resize(data.astronaut(), (128, 128), anti_aliasing=True) * 255).astype(np.uint8)
    img = np.roll(img, variant % 3, axis=1)
    return np.clip(img.astype(int) + 4 * variant, 0, 255).astype(np.uint8)


def astronaut_landmarks(label: str, rng: np.random.Generator) -> np.ndarray:
    """Hand-placed landmarks in :data:`ASTRONAUT_BOX`; condition ``A`` has raised eyes (its phenotype)."""
    t = template68()
    if label == "A":
        t[36:48, 1] -= 0.04
    return in_box(t + 0.005 * rng.standard_normal(t.shape), ASTRONAUT_BOX)


PATTERN_SIDE = 96
PATTERN_BOX = np.array([16.0, 12.0, 80.0, 88.0])


def pattern_person(rng: np.random.Generator) -> np.ndarray:
    """A 'face' of one person: a smooth random colour pattern, ``(PATTERN_SIDE, PATTERN_SIDE, 3)`` float."""
    coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((PATTERN_SIDE, PATTERN_SIDE), Image.BICUBIC), dtype=np.float64)


def pattern_photo(person: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another photo of ``person``: shifted a little, other light, sensor noise."""
    shifted = np.roll(person, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
    return np.clip(shifted * rng.uniform(0.9, 1.1) + rng.normal(0, 6, shifted.shape), 0, 255).astype(np.uint8)


def phash_of(image: np.ndarray) -> str:
    import imagehash

    return str(imagehash.phash(Image.fromarray(image)))


# --- the builders (one per kind of data) -----------------------------------------------------------------------------


def photo_workspace(root: Path, images: dict[str, np.ndarray | bytes]) -> tuple[Workspace, dict[str, str]]:
    """A workspace whose manifest holds ``images`` (name -> array, or raw bytes for broken files) as real photos of
    one subject each, stored outside the workspace (``root / "src"``); name -> image_id."""
    ws = Workspace.open(root / "ws", create=True)
    rows = [image_row(ws, root / "src" / f"{name}.png", im, label=name, subject_id=name, source="real")
            for name, im in images.items()]
    save_rows(ws, rows)
    return ws, {name: row["image_id"] for name, row in zip(images, rows)}


def landmark_workspace(root: Path) -> tuple[Workspace, pd.DataFrame]:
    """3 conditions x (3 train + 1 test) real astronaut photos, split, with a faces table (hand-placed landmarks)."""
    ws = Workspace.open(root / "ws", create=True)
    rng = np.random.default_rng(0)
    rows, faces = [], []
    for c, label in enumerate(["A", "B", "C"]):
        for i in range(4):
            rows.append(image_row(ws, ws.root / "real" / f"{label}_{i}.png", astronaut_photo(4 * c + i), label=label,
                                  subject_id=f"{label}{i}", source="real", **split_fields(i == 3), width=128,
                                  height=128))
            faces.append(face_row(rows[-1]["image_id"], astronaut_landmarks(label, rng), ASTRONAUT_BOX))
    return save_rows(ws, rows), faces_table(faces)


def colour_workspace(root: Path, *, n_classes: int = 4, per_class: int = 8, n_test: int = 2, folds: int = 3,
                     synthetic_per_class: int = 4, seed: int = 0) -> tuple[Workspace, dict[str, Path]]:
    """Random-colour 'faces': each class has its own colour. Real images get split/fold; synthetic ones none."""
    ws = Workspace.open(root / "ws", create=True)
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 255, (n_classes, 3))
    rows, paths = [], {}
    for c in range(n_classes):
        for i in range(per_class + synthetic_per_class):
            img = np.clip(colours[c] + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            real = i < per_class
            p = ws.root / "img" / f"{c}_{i}.png"
            rows.append(image_row(ws, p, img, label=f"class{c}", subject_id=f"s{c}_{i}",
                                  source="real" if real else "synthetic", generator=None if real else "test",
                                  **split_fields(i < n_test, (i - n_test) % folds if real else None)))
            paths[rows[-1]["image_id"]] = p
    return save_rows(ws, rows), paths


def noise_workspace(root: Path, n: int = 6) -> tuple[Workspace, dict[str, Path]]:
    """``n`` random-noise 40 px images of one class; image_id -> file."""
    ws = Workspace.open(root / "ws", create=True)
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(n):
        p = ws.root / "img" / f"{i}.png"
        paths[save_image(p, rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))] = p
    save_rows(ws, [{"image_id": k, "path": ws.relpath(p), "label": "a", "source": "real"} for k, p in paths.items()])
    return ws, paths


def feature_workspace(root: Path, *, n_classes: int = 6, per_class_real: int = 5, per_class_syn: int = 20,
                      dims: tuple[tuple[str, int], ...] = (("shape68", 12), ("mobilenet_v2", 24))) -> Workspace:
    """A split workspace with ranked synthetic images and precomputed features (no images needed)."""
    rows = []
    for c in range(n_classes):
        for i in range(per_class_real):
            rows.append({"image_id": f"r{c}_{i}", "path": f"r{c}_{i}.png", "label": f"c{c}", "subject_id": f"s{c}_{i}",
                         "source": "real", **split_fields(i == 0, (i + c) % 2)})
        for i in range(per_class_syn):
            rows.append({"image_id": f"y{c}_{i}", "path": f"y{c}_{i}.png", "label": f"c{c}", "subject_id": f"y{c}_{i}",
                         "source": "synthetic", "generator": "shape-warp", **split_fields(False)})
    ws = save_rows(Workspace.open(root / "ws", create=True), rows)
    rng = np.random.default_rng(0)
    m = ws.load_manifest()
    syn = m[m["source"] == "synthetic"]
    pd.DataFrame({"image_id": syn["image_id"].astype(str), "representation": "rdface25",
                  "rank_score": rng.uniform(0, 1, len(syn)), "own_class_rank": 1}).to_parquet(
        ws.root / "ranking.parquet", index=False)
    write_class_features(ws, dims, rng)
    return ws


def patient_workspace(root: Path) -> tuple[Workspace, dict[str, Path], pd.DataFrame]:
    """3 conditions x 4 patients x 2 photos (pattern faces with a phash); per condition one patient is held out
    (test). Faces: hand-placed 68-point landmarks in a fixed box. Also image_id -> file."""
    ws = Workspace.open(root / "ws", create=True)
    rng = np.random.default_rng(0)
    rows, faces, paths = [], [], {}
    for label in "ABC":
        for s in range(4):
            person = pattern_person(rng)
            for k in range(2):
                p, img = ws.root / "real" / f"{label}{s}_{k}.png", pattern_photo(person, rng)
                rows.append(image_row(ws, p, img, label=label, subject_id=f"{label}{s}", source="real",
                                      **split_fields(s == 3, s), phash=phash_of(img), width=PATTERN_SIDE,
                                      height=PATTERN_SIDE))
                paths[rows[-1]["image_id"]] = p
                faces.append(face_row(rows[-1]["image_id"], in_box(template68(), PATTERN_BOX), PATTERN_BOX))
    return save_rows(ws, rows), paths, faces_table(faces)
