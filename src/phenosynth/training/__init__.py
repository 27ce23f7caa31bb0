"""Training: one configuration (backbone x regime x n x selection x mode) under k-fold CV -> results rows."""

from phenosynth.training.cell import (
    DEFAULT_HPARAMS,
    RESULT_COLUMNS,
    TrainConfig,
    cell_sets,
    train,
    train_cell,
)

__all__ = ["DEFAULT_HPARAMS", "RESULT_COLUMNS", "TrainConfig", "cell_sets", "train", "train_cell"]
