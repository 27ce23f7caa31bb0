"""Study specs: the shipped ones load, bad ones fail with messages that say what to fix, grids expand as expected."""

from __future__ import annotations

import pytest

from phenosynth.study.grid import expand_grid, regime_points
from phenosynth.study.spec import SpecError, load_spec, spec_from_dict


def _write(tmp_path, text):
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


def test_paper_spec_is_the_papers_grid():
    spec = load_spec("paper")
    assert [b.name for b in spec.backbones] == ["resnet152", "densenet169", "vgg16", "swin_t", "clip_vit_b32",
                                                 "facenet"]
    assert regime_points(spec) == [("real", 0)] + [("synthetic", n) for n in (2000, 4000, 6000, 8000, 10000)] + [
        ("mixed", 10000)]
    assert spec.folds == 5 and spec.selection == "top-per-class"
    assert len(expand_grid(spec)) == 6 * 7 * 5


def test_demo_spec_uses_offline_backbones():
    spec = load_spec("demo")
    assert [b.name for b in spec.backbones] == ["shape68", "dlib_resnet128", "mobilenet_v2"]
    assert spec.generator.name == "phenotype-transfer"
    assert spec.generator.options == {"strength": 2.0, "identities": "donors"}
    assert len(expand_grid(spec)) == 3 * (1 + len(spec.regimes.synthetic) + len(spec.regimes.mixed)) * spec.folds


def test_bad_yaml_names_the_line(tmp_path):
    p = _write(tmp_path, "backbones:\n  - shape68\nregimes:\n  synthetic: [100, 200\nfolds: 3\n")
    with pytest.raises(SpecError, match=r"not valid YAML at line 5"):
        load_spec(p)


def test_unknown_key_and_bad_values_are_all_listed(tmp_path):
    p = _write(tmp_path, "backbones: [shape68]\nfolds: 1\nregimes: {synthetic: [-5]}\nselectoin: random\n")
    with pytest.raises(SpecError) as err:
        load_spec(p)
    msg = str(err.value)
    assert "selectoin: unknown key" in msg
    assert "folds: Input should be greater than or equal to 2" in msg
    assert "regimes.synthetic" in msg and "positive number" in msg


def test_unknown_backbone_lists_valid_ones():
    with pytest.raises(SpecError, match=r"unknown backbone 'resnet15' \(did you mean resnet152.*Valid: .*mobilenet_v2"):
        spec_from_dict({"backbones": ["resnet15"]})


def test_timm_backbones_and_bare_names_are_accepted():
    spec = spec_from_dict({"backbones": ["timm:resnet18", {"name": "vgg16", "weights": "none"}], "seeds": 3,
                           "generator": "shape-warp"})
    assert [(b.name, b.weights) for b in spec.backbones] == [("timm:resnet18", "default"), ("vgg16", "none")]
    assert spec.seeds == [3] and spec.generator.per_class == 100


def test_generator_options_are_read_and_checked(tmp_path):
    spec = load_spec(_write(tmp_path, "backbones: [shape68]\ngenerator:\n  name: phenotype-transfer\n"
                                      "  per_class: 5\n  options: {k: 4, strength: 1.5}\n"))
    assert spec.generator.options == {"k": 4, "strength": 1.5}
    assert spec.resolved()["generator"]["options"] == {"k": 4, "strength": 1.5}  # what config.yaml records
    assert spec_from_dict({"backbones": ["shape68"], "generator": "shape-warp"}).generator.options == {}
    with pytest.raises(SpecError, match=r"generator.options: Generator 'phenotype-transfer' has no option\(s\) "
                                        r"kk; its options: .*\bk\b.*strength"):
        spec_from_dict({"backbones": ["shape68"], "generator": {"name": "phenotype-transfer", "options": {"kk": 4}}})
    from phenosynth.synth.generators import list_generators

    valid = ", ".join(list_generators())  # every registered generator, then the spec-only choice
    with pytest.raises(SpecError, match=r"Unknown generator 'phenotype-transfr'. Did you mean 'phenotype-transfer'\? "
                                        rf"Valid: {valid}, or already-generated.$"):
        spec_from_dict({"backbones": ["shape68"], "generator": {"name": "phenotype-transfr"}})


def test_empty_regimes_and_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="regimes is empty"):
        spec_from_dict({"backbones": ["vgg16"], "regimes": {"real": False}})
    with pytest.raises(SpecError, match="does not exist.*shipped specs: demo, paper"):
        load_spec(tmp_path / "nope.yaml")


def test_grid_counts_with_seeds():
    spec = spec_from_dict({"backbones": ["vgg16", "shape68"], "regimes": {"real": False, "synthetic": [10]},
                           "folds": 2, "seeds": [0, 1, 2]})
    cells = expand_grid(spec)
    assert len(cells) == 2 * 1 * 3 * 2
    assert [c.key for c in cells[:3]] == ["vgg16|synthetic|10|seed0|fold0", "vgg16|synthetic|10|seed0|fold1",
                                          "vgg16|synthetic|10|seed1|fold0"]


def test_face_settings_and_allow_fewer_are_spec_keys_that_reach_every_cell():
    from phenosynth.study.grid import expand_grid
    from phenosynth.study.runner import train_config

    spec = spec_from_dict({"backbones": ["shape68"], "regimes": {"synthetic": [10]}, "detector": "mtcnn",
                           "landmarker": "mtcnn5", "allow_fewer": True})
    configs = [train_config(spec, cell) for cell in expand_grid(spec)]
    assert {(c.detector, c.landmarker, c.allow_fewer) for c in configs} == {("mtcnn", "mtcnn5", True)}
    assert spec.resolved()["detector"] == "mtcnn"  # recorded in config.yaml


def test_synthetic_weight_is_a_spec_key_that_reaches_only_the_mixed_cells(tmp_path):
    from phenosynth.study.grid import expand_grid
    from phenosynth.study.runner import train_config

    path = tmp_path / "w.yaml"
    path.write_text("backbones: [shape68]\nregimes: {real: true, synthetic: [10], mixed: [10]}\n"
                    "synthetic_weight: [null, 1, 0.5]\n")
    spec = load_spec(path)
    assert spec.synthetic_weight == [None, 1.0, 0.5] and spec.resolved()["synthetic_weight"] == [None, 1.0, 0.5]
    weights = {c.regime: train_config(spec, c).synthetic_weight for c in expand_grid(spec)}
    assert weights == {"real": None, "synthetic": None, "mixed": [None, 1.0, 0.5]}
    assert spec_from_dict({"backbones": ["shape68"], "regimes": {"mixed": [5]}}).synthetic_weight is None


@pytest.mark.parametrize(("extra", "message"), [
    ({"regimes": {"synthetic": [5]}, "synthetic_weight": 1}, "regimes.mixed is empty"),
    ({"synthetic_weight": [1, 0]}, "positive and finite, not 0"),
    ({"synthetic_weight": [0.5, 0.5]}, "repeats a value"),
    ({"trainer": {"mode": "gallery"}, "synthetic_weight": 1}, "does not apply to mode gallery"),
])
def test_bad_synthetic_weight_is_refused_naming_the_reason(extra, message):
    data = {"backbones": ["shape68"], "regimes": {"mixed": [5]}} | extra
    with pytest.raises(SpecError, match=message):
        spec_from_dict(data)
