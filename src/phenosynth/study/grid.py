"""Expand a :class:`~phenosynth.study.spec.StudySpec` into cells: one trained model each (backbone x regime x n x
seed x fold), in a fixed order, with stable ids used as file names under ``runs/NAME/cells/``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from phenosynth.data.filenames import safe_file_name
from phenosynth.study.spec import StudySpec

#: Regimes in the order they appear in tables and results.csv.
REGIME_ORDER: tuple[str, ...] = ("real", "synthetic", "mixed")


@dataclass(frozen=True, order=True)
class Cell:
    """One trained model of the study grid."""

    backbone: str
    weights: str
    regime: str
    n_synthetic: int
    seed: int
    fold: int

    @property
    def key(self) -> str:
        """Human-readable identity, e.g. ``resnet152|synthetic|2000|seed0|fold3``."""
        return f"{self.backbone}|{self.regime}|{self.n_synthetic}|seed{self.seed}|fold{self.fold}"

    @property
    def cell_id(self) -> str:
        """:attr:`key` made safe as a file name, e.g. ``resnet152__synthetic-2000__seed0__fold3``."""
        backbone = safe_file_name(self.backbone)
        return f"{backbone}__{self.regime}-{self.n_synthetic}__seed{self.seed}__fold{self.fold}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def regime_points(spec: StudySpec) -> list[tuple[str, int]]:
    """(regime, n_synthetic) pairs in table order: real (n = 0), synthetic by n, mixed by n.

    >>> regime_points(StudySpec(backbones=["shape68"], regimes={"synthetic": [400, 200], "mixed": [400]}))
    [('real', 0), ('synthetic', 200), ('synthetic', 400), ('mixed', 400)]
    """
    points: list[tuple[str, int]] = [("real", 0)] if spec.regimes.real else []
    points += [("synthetic", n) for n in sorted(spec.regimes.synthetic)]
    points += [("mixed", n) for n in sorted(spec.regimes.mixed)]
    return points


def expand_grid(spec: StudySpec) -> list[Cell]:
    """Every cell of the study, backbone-major (so a worker reuses one backbone's features for many cells), then
    regime/n, seed, fold.

    >>> cells = expand_grid(StudySpec(backbones=["a", "b"], regimes={"synthetic": [10, 20]}, folds=3, seeds=[0, 1]))
    >>> len(cells), cells[0].key, cells[-1].cell_id
    (36, 'a|real|0|seed0|fold0', 'b__synthetic-20__seed1__fold2')
    """
    cells = [
        Cell(backbone=b.name, weights=b.weights, regime=regime, n_synthetic=n, seed=seed, fold=fold)
        for b in spec.backbones
        for regime, n in regime_points(spec)
        for seed in spec.seeds
        for fold in range(spec.folds)
    ]
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):  # two backbone names that differ only in characters unsafe for file names
        raise ValueError("Two backbones map to the same cell file name; rename one of them.")
    return cells
