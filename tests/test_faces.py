"""Detectors, landmarkers, representations and the warp, on tiny hand-made data."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tests._faces_data import face_image
from phenosynth.faces.detectors import create_detector, create_landmarker, list_detectors, list_landmarkers
from phenosynth.faces.landmarks import ARCFACE_TEMPLATE_112, five_from_68, order_is_sane
from phenosynth.faces.representations import class_prototypes, cosine_similarity_to, represent
from phenosynth.faces.warp import warp_to_landmarks
from phenosynth.registry import UnknownNameError


# --- registries ------------------------------------------------------------------------------------------------------
@functools.cache
def _detector(name: str):
    return create_detector(name)


@functools.cache
def _landmarker(name: str):
    return create_landmarker(name)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return face_image(160)


def test_registries_list_every_entry() -> None:
    assert list_detectors() == ["dlib-cnn", "dlib-hog", "mtcnn"]
    assert list_landmarkers() == ["dlib5", "dlib68", "mtcnn5"]


def test_unknown_detector_names_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'dlib-hog'.*Valid: dlib-cnn, dlib-hog, mtcnn"):
        create_detector("hog")


@pytest.mark.parametrize("name", ["dlib-hog", "dlib-cnn", "mtcnn"])
def test_each_detector_finds_the_face(face: np.ndarray, name: str) -> None:
    dets = _detector(name).detect(face, 1)
    assert len(dets) == 1
    x0, y0, x1, y1 = dets[0].box
    # The face spans roughly x 45..115, y 35..120 in this 160 px image.
    assert 25 < x0 < 65 and 95 < x1 < 135 and 15 < y0 < 70 and 90 < y1 < 140


@pytest.mark.parametrize("name", ["dlib68", "dlib5", "mtcnn5"])
def test_each_landmarker_gives_sane_points(face: np.ndarray, name: str) -> None:
    det = _detector("dlib-hog").detect(face, 1)[0]
    lmk = _landmarker(name)
    pts = lmk(face, det)
    assert pts.shape == (lmk.n_points, 2)
    five = lmk.five(pts)
    assert order_is_sane(five)
    iod = np.linalg.norm(five[0] - five[1])
    assert 20 < iod < 45  # the eyes are ~30 px apart here


def test_the_three_landmarkers_agree_on_the_eyes(face: np.ndarray) -> None:
    det = _detector("dlib-hog").detect(face, 1)[0]
    fives = [_landmarker(n).five(_landmarker(n)(face, det)) for n in ("dlib68", "dlib5", "mtcnn5")]
    iod = np.linalg.norm(fives[0][0] - fives[0][1])
    for other in fives[1:]:
        assert np.abs(other[:2] - fives[0][:2]).max() < 0.2 * iod


# --- representations -----------------------------------------------------------------------------------------------
def _random_shape(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=(68, 2)) * 20 + 100


def test_shape68_ignores_translation_scale_and_rotation(rng: np.random.Generator) -> None:
    s = _random_shape(rng)
    theta = np.deg2rad(33)
    R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = s @ R.T * 2.7 + [40, -15]
    X = represent("shape68", np.stack([s, moved]))
    assert X.shape == (2, 136)
    np.testing.assert_allclose(X[0], X[1], atol=1e-10)
    assert np.sqrt((X[0].reshape(68, 2) ** 2).sum(1).mean()) == pytest.approx(1.0)  # unit RMS size
    other = represent("shape68", _random_shape(rng)[None])[0]
    assert np.abs(other - X[0]).max() > 0.1  # a different shape stays different


def test_rdface25_matches_a_hand_computation() -> None:
    pts = np.array([[30.0, 40], [70, 40], [50, 60], [35, 80], [65, 80]])
    box = np.array([[10.0, 20, 90, 120]])  # w 80, h 100
    x = represent("rdface25", pts[None], box)[0].reshape(5, 5)
    # normalised: eyes (0.25, 0.2), (0.75, 0.2); nose (0.5, 0.4); mouth (0.3125, 0.6), (0.6875, 0.6)
    assert x[0, 1] == pytest.approx(0.5)
    assert x[0, 2] == pytest.approx(0.32015621187164245)  # sqrt(0.25^2 + 0.2^2)
    assert x[3, 4] == pytest.approx(0.375)
    assert x[0, 3] == pytest.approx(0.4048533685175412)  # sqrt(0.0625^2 + 0.4^2)
    np.testing.assert_allclose(np.diag(x), 0)
    np.testing.assert_allclose(x, x.T)


def test_rdface25_from_68_points_uses_eye_centres_nose_tip_and_mouth_corners() -> None:
    # A hand-placed dlib-68 face: eye rings around (60, 80) and (140, 80), nose tip (point 30) at (100, 110), mouth
    # corners (48, 54) at (70, 160) and (130, 160); every other point far off at (500, 500), so a wrong index shows.
    s = np.full((68, 2), 500.0)
    ring = np.array([[-10.0, 0], [-5, -4], [5, -4], [10, 0], [5, 4], [-5, 4]])
    s[36:42] = ring + [60, 80]
    s[42:48] = ring + [140, 80]
    s[30], s[48], s[54] = [100, 110], [70, 160], [130, 160]
    np.testing.assert_allclose(five_from_68(s), [[60, 80], [140, 80], [100, 110], [70, 160], [130, 160]], atol=1e-12)
    x = represent("rdface25", s[None], np.array([[0.0, 0, 200, 200]]))[0].reshape(5, 5)
    # normalised: eyes (0.3, 0.4), (0.7, 0.4); nose (0.5, 0.55); mouth (0.35, 0.8), (0.65, 0.8)
    assert x[0, 1] == pytest.approx(0.4)  # eye to eye
    assert x[0, 2] == pytest.approx(0.25)  # eye to nose: a 0.2 x 0.15 right triangle
    assert x[2, 3] == pytest.approx(0.29154759474226505)  # nose to mouth corner: sqrt(0.15^2 + 0.25^2)
    assert x[3, 4] == pytest.approx(0.3)  # mouth width
    assert x[0, 3] == pytest.approx(0.4031128874149275)  # eye to mouth corner: sqrt(0.05^2 + 0.4^2)


def test_unknown_representation_is_a_clear_error() -> None:
    with pytest.raises(UnknownNameError, match="Valid: rdface25, shape68"):
        represent("shape86", np.zeros((1, 68, 2)))


def test_prototypes_and_cosine_scores() -> None:
    X = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    classes, P = class_prototypes(X, ["b", "b", "a", "a"])
    assert classes == ["a", "b"]
    np.testing.assert_allclose(P, [[0.5, 1.0], [2.0, 0.0]])
    S = cosine_similarity_to(X, P)
    assert S.shape == (4, 2)
    assert S[0, 1] == pytest.approx(1.0) and S[2, 1] == pytest.approx(0.0)
    assert S[2, 0] == pytest.approx(1 / np.sqrt(1.25))


# --- warp -----------------------------------------------------------------------------------------------------------
def test_warp_with_unchanged_points_is_the_identity(face: np.ndarray, rng: np.random.Generator) -> None:
    pts = rng.uniform(40, 120, (20, 2))
    np.testing.assert_array_equal(warp_to_landmarks(face, pts, pts), face)


def test_warp_moves_a_feature_to_its_target_and_keeps_the_border() -> None:
    img = np.zeros((128, 128, 3), np.uint8)
    img[58:63, 48:53] = 255  # a bright dot centred at (50, 60)
    src = np.array([[50.0, 60], [80, 60], [64, 90], [64, 40]])
    dst = src + [[10, -6], [0, 0], [0, 0], [0, 0]]
    out = warp_to_landmarks(img, src, dst)
    assert out[54, 60, 0] == 255 and out[60, 50, 0] == 0  # the dot left (50, 60) and sits on (60, 54)
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert abs(xs.mean() - 60) < 1.5 and abs(ys.mean() - 54) < 1.5  # the affine pieces stretch it a little
    assert out.shape == img.shape and out.dtype == np.uint8
    border = np.ones((128, 128), bool)
    border[1:-1, 1:-1] = False
    np.testing.assert_array_equal(out[border], img[border])


def test_one_target_mesh_serves_many_faces_with_the_same_pixels(face: np.ndarray, rng: np.random.Generator) -> None:
    from phenosynth.faces.warp import target_mesh, warp_maps
    from phenosynth.synth.generators.imaging import warp_image, warp_onto, warp_target

    h, w = face.shape[:2]
    dst = rng.uniform(40, 120, (20, 2))
    mesh = target_mesh(dst, h, w)
    for factor in (1, 2):
        prepared = warp_target(dst, h, w, factor=factor)
        for _ in range(3):  # several sources onto one target: each exactly as a warp of its own
            src = dst + rng.normal(0, 4, dst.shape)
            for a, b in zip(mesh.maps(src), warp_maps(src, dst, h, w)):
                np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(warp_onto(face, src, prepared), warp_image(face, src, dst, factor=factor))
    with pytest.raises(ValueError, match="src has 3 points"):
        mesh.maps(dst[:3])
    with pytest.raises(ValueError, match="warp target"):
        warp_onto(face[:-1], dst, prepared)


def test_alignment_template_is_arcface() -> None:
    from phenosynth.faces.landmarks import alignment_template

    np.testing.assert_allclose(alignment_template(224), ARCFACE_TEMPLATE_112 * 2)


def _eye(cx: float, cy: float) -> np.ndarray:
    """Six points of an eye (corners, upper lid, lower lid), a few pixels apart as on a small face photo."""
    return np.array([[cx - 9, cy], [cx - 3, cy - 3], [cx + 3, cy - 3], [cx + 9, cy], [cx + 3, cy + 3], [cx - 3, cy + 3]])


def test_a_shape_change_that_crosses_the_eyelids_folds_and_unfolding_keeps_its_smooth_part(
        face: np.ndarray) -> None:
    from phenosynth.faces.warp import folded_triangles, unfolded_target

    h, w = face.shape[:2]
    frame = np.array([[30.0, 40], [130, 40], [30, 130], [130, 130], [80, 110], [80, 85]])
    src = np.concatenate([_eye(55, 60), _eye(105, 60), frame])
    assert folded_triangles(src, src, h, w) == 0
    assert folded_triangles(src, src + [4.0, -2.0], h, w) == 0  # a shift keeps every triangle the right way round
    # the asked move: both eyes 4 px further apart (the smooth part, a hypertelorism) and the left eye's lids pushed
    # 7 px past each other (the local part that tears: the upper lid ends below the lower one)
    asked = np.zeros_like(src)
    asked[0:6, 0] -= 4.0
    asked[6:12, 0] += 4.0
    asked[[1, 2], 1] += 7.0
    asked[[4, 5], 1] -= 7.0
    dst = src + asked
    assert folded_triangles(src, dst, h, w) >= 2
    out, how = unfolded_target(src, dst, h, w)
    assert folded_triangles(src, out, h, w) == 0
    assert how.smoothed > 0 and 0.0 < how.change < 1.0
    moved = out - src
    assert moved[6:12, 0].mean() > 3.0 and moved[0:6, 0].mean() < -2.0  # the eyes still move apart
    np.testing.assert_array_equal(moved[6:12], asked[6:12])  # the right eye did not fold: moved exactly as asked
    # a target that does not fold is returned as it is
    same, how = unfolded_target(src, src + [4.0, -2.0], h, w)
    np.testing.assert_array_equal(same, src + [4.0, -2.0])
    assert (how.smoothed, how.scale, how.change) == (0, 1.0, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        folded_triangles(src, src[:3], h, w)
