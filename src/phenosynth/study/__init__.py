"""Study: a YAML spec -> the grid of cells (backbone x regime x n x seed x fold) -> a resumable run with local or Ray
executors -> Table 1, Figure 1 and report.html."""

from phenosynth.study.grid import Cell, expand_grid
from phenosynth.study.report import build_report
from phenosynth.study.runner import EXECUTORS, StudyResult, run_study
from phenosynth.study.spec import StudySpec, load_spec

__all__ = ["Cell", "EXECUTORS", "StudyResult", "StudySpec", "build_report", "expand_grid", "load_spec", "run_study"]
