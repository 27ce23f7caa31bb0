"""One owner per concept (issue 10): the Procrustes geometry in faces.procrustes gives the very floats the two former
implementations gave, the file-name rule lives once, and the ranking table has one owner module."""

from __future__ import annotations

import numpy as np
import pytest

from phenosynth.data.filenames import safe_file_name, safe_name
from phenosynth.faces.align import align_face
from phenosynth.faces.landmarks import alignment_template
from phenosynth.faces.procrustes import apply_matrix, generalized_procrustes, normalise_shape, similarity_matrix
from phenosynth.faces.representations import procrustes_normalise


def test_procrustes_and_alignment_give_the_numbers_of_before_the_merge():
    # pinned to what main gave before issue 10 (synth.shape_model.generalized_procrustes, the vectorised
    # representations.procrustes_normalise, and align_face on the hand-written Umeyama fit), first as digests
    rng = np.random.default_rng(2024)
    X = rng.normal(size=(12, 68, 2)) * 30 + 120
    # GPA's floats: a fixed random projection of each output, to 1e-9 (NumPy 2.4's SVD changed their last bits, and
    # with them the digest "d537ea9657606f88" of before the merge; the projections were taken on NumPy 2.4.6)
    w = np.random.default_rng(7)
    projections = [float((np.asarray(a) * w.normal(size=np.shape(a))).sum()) for a in generalized_procrustes(X)]
    assert projections == pytest.approx([16.985671005206555, 0.929580234329942, -21.707354862879185], rel=1e-9)
    normalised = np.asarray(procrustes_normalise(X))  # likewise (its digest was "e2020112e859c31d")
    projection = float((normalised * np.random.default_rng(8).normal(size=normalised.shape)).sum())
    assert projection == pytest.approx(-7.562369124498051, rel=1e-9)
    from skimage import data

    img = data.astronaut()
    crops = [align_face(img, alignment_template(200) + rng.uniform(40, 260, 2) + rng.normal(scale=4, size=(5, 2)), 224)
             for _ in range(20)]
    stack = np.stack(crops).astype(np.float64)  # likewise (digest "4ff9c01094793422"): a pixel may round the other way
    projection = float((stack * np.random.default_rng(9).normal(size=stack.shape)).sum())
    assert projection == pytest.approx(-82297.42893833286, rel=1e-4) and stack.mean() == pytest.approx(113.899, abs=1e-3)


def test_normalise_shape_batch_equals_one_by_one_bit_for_bit():
    X = np.random.default_rng(0).normal(size=(9, 68, 2)) * 50 + 200
    batch = normalise_shape(X)
    assert all(np.array_equal(batch[i], normalise_shape(X[i])) for i in range(len(X)))
    assert np.allclose(np.sqrt((batch**2).sum(-1).mean(-1)), 1.0) and np.allclose(batch.mean(1), 0.0)


def test_similarity_matrix_recovers_a_known_similarity_and_refuses_a_degenerate_shape():
    src = np.random.default_rng(1).normal(size=(5, 2)) * 10
    t = 0.3
    M = np.array([[1.7 * np.cos(t), -1.7 * np.sin(t), 4.0], [1.7 * np.sin(t), 1.7 * np.cos(t), -2.0], [0, 0, 1]])
    fitted = similarity_matrix(src, apply_matrix(M, src))
    np.testing.assert_allclose(fitted, M, atol=1e-12)
    from phenosynth.errors import PhenosynthError

    with pytest.raises(PhenosynthError, match="degenerate shape"):
        similarity_matrix(np.zeros((5, 2)), src)


def test_file_names_keep_the_rules_of_each_former_sanitiser():
    assert safe_file_name("timm:vit/b 16") == "timm-vit-b-16"
    assert safe_file_name("dlib hog+dlib68") == "dlib-hog-dlib68"
    assert safe_file_name("dlib hog+dlib68", allow_plus=True) == "dlib-hog+dlib68"
    assert safe_name("..Cornelia de Lange / type 1__") == "Cornelia_de_Lange_type_1"
    assert safe_name("///") == "unnamed" and len(safe_name("x" * 200)) == 80


def test_ranking_does_not_import_selection_and_both_read_one_ranking_table():
    import ast
    import inspect

    import phenosynth.synth.ranking as ranking
    import phenosynth.synth.selection as selection
    from phenosynth.synth import ranking_table

    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(ranking)))
                if isinstance(node, ast.ImportFrom)}
    assert "phenosynth.synth.selection" not in imported  # selection imports ranking (lazily): no cycle
    assert selection.load_ranking is ranking_table.load_ranking
