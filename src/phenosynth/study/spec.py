"""The study specification: one YAML file that fixes the whole grid (backbones x regimes x n x folds x seeds).

Example (the shipped ``paper.yaml`` is the paper's grid)::

    backbones:
      - {name: resnet152, weights: default}
      - mobilenet_v2                        # a bare name means weights: default
      - [dlib_resnet128, mobilenet_v2]      # an ensemble: one row 'dlib_resnet128+mobilenet_v2'
    regimes:
      real: true
      synthetic: [2000, 4000, 6000, 8000, 10000]
      mixed: [10000]
    selection: top-per-class
    representation: rdface25
    folds: 5
    seeds: [0]
    trainer: {mode: probe, hparams: {C: [0.1, 1.0]}}   # or {mode: gallery, m: 1} (keys besides mode: hparams)
    synthetic_weight: [null, 1.0, 0.5]     # mixed: synthetic vs real weight per class, chosen on validation
    tta: [flip, gray]                       # test-time augmentation (default: none)
    generator: already-generated            # or {name: phenotype-transfer, per_class: 100, seed: 0, options: {k: 6}}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from phenosynth.errors import PhenosynthError

#: The value of ``generator`` that means "use the synthetic images already in the workspace".
ALREADY_GENERATED = "already-generated"

SPECS_DIR = Path(__file__).parent / "specs"
#: Values of a backbone's ``weights`` that are not file paths.
WEIGHT_KEYWORDS = ("default", "none")


class SpecError(PhenosynthError):
    """A study spec that cannot be read or that asks for something impossible."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackboneChoice(_Strict):
    """One backbone of the grid: a registry name and the weights to load for it (``default``, ``none`` or a file
    path). What the backbone is (input, embedding size, weight source) is its
    :class:`phenosynth.models.backbones.BackboneSpec`, the one owner of that concept."""

    name: str
    weights: str = "default"
    members: list["BackboneChoice"] = Field(default_factory=list)
    """An ensemble's backbones (each its own weights); ``name`` is theirs joined by ``+`` and ``weights`` their
    weights (one value when all agree, else joined by ``+``). Written in a spec as a list of backbones."""

    @model_validator(mode="before")
    @classmethod
    def _ensemble(cls, value: Any) -> Any:
        if isinstance(value, list):
            value = {"members": value}
        if isinstance(value, dict) and value.get("members"):
            members = [BackboneChoice.model_validate({"name": m} if isinstance(m, str) else m)
                       for m in value["members"]]
            if len(members) < 2 or any(m.members for m in members):
                raise ValueError("an ensemble names two or more plain backbones")
            if len({m.name for m in members}) != len(members):
                raise ValueError(f"an ensemble repeats a backbone: {[m.name for m in members]}")
            weights = sorted({m.weights for m in members})
            name = "+".join(m.name for m in members)
            if value.get("name", name) != name:
                raise ValueError(f"an ensemble's name is its members' names joined by '+' ({name})")
            return {"name": name, "weights": weights[0] if len(weights) == 1 else "+".join(m.weights for m in members),
                    "members": members}
        return value

    def parts(self) -> list["BackboneChoice"]:
        """The single backbones: the members of an ensemble, else this one."""
        return list(self.members) or [self]


class RegimeSpec(_Strict):
    """Which training sets to build: real-only, synthetic-only at each n, real + n synthetic at each n."""

    real: bool = True
    synthetic: list[int] = Field(default_factory=list)
    mixed: list[int] = Field(default_factory=list)

    @field_validator("synthetic", "mixed")
    @classmethod
    def _positive_unique(cls, ns: list[int]) -> list[int]:
        bad = [n for n in ns if n <= 0]
        if bad:
            raise ValueError(f"every n must be a positive number of synthetic images, got {bad}")
        if len(set(ns)) != len(ns):
            raise ValueError(f"n values are repeated: {ns}")
        return ns


class TrainerSpec(_Strict):
    """The trainer (``probe`` | ``se-head`` | ``finetune``) and its hyper-parameter grid (name -> list of values)."""

    mode: str = "probe"
    hparams: dict[str, list[Any]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """``{mode: gallery, m: 1}``: keys besides ``mode`` and ``hparams`` are hyper-parameters (checked against
        the trainer's parameters by :func:`spec_from_dict`)."""
        if isinstance(value, dict) and set(value) - {"mode", "hparams"}:
            hp = dict(value.get("hparams") or {})
            extra = {k: v for k, v in value.items() if k not in ("mode", "hparams")}
            both = sorted(set(hp) & set(extra))
            if both:
                raise ValueError(f"{both} given both as a key and under hparams")
            return {k: v for k, v in value.items() if k in ("mode", "hparams")} | {"hparams": hp | extra}
        return value

    @field_validator("hparams", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value


class GeneratorSpec(_Strict):
    """Make synthetic images with ``name`` (``per_class`` per condition, ``seed``, constructor ``options`` such as
    ``{k: 6, strength: 2.0}``) before training, unless the workspace already holds images of that generator.
    :func:`spec_from_dict` refuses an unknown generator or option, naming the valid ones."""

    name: str
    per_class: int = Field(default=100, gt=0)
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)


class StudySpec(_Strict):
    """A whole study. Build with :func:`load_spec` (from YAML) or directly from keyword arguments."""

    backbones: list[BackboneChoice] = Field(min_length=1)
    regimes: RegimeSpec = Field(default_factory=RegimeSpec)
    selection: str = "top-per-class"
    per_class: bool = False
    allow_fewer: bool = False
    """Train on what there is when an n is more than a fold has (results.csv records requested and actual n);
    by default such a spec is refused before any cell runs."""
    representation: str = "rdface25"
    detector: str | None = None
    """Face setting of faces.parquet to use (with ``landmarker``); needed when it holds several."""
    landmarker: str | None = None
    privacy_gate: bool = True
    """Skip the non-shareable synthetic images of audited generator runs (``phenosynth audit``); False trains on
    them too. Runs never audited are used as they are (the report says so)."""
    preprocessing: Literal["paper", "native"] = "paper"
    validate_on: Literal["real", "pool"] = "real"
    folds: int = Field(default=5, ge=2)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    synthetic_weight: float | None | list[float | None] = None
    """Mixed regime only: the total weight of a class's synthetic images relative to its real training photos (each
    synthetic image weighs ``w r_c / s_c``; 1 = as much as the real photos, whatever n is). Unset (null): plain
    concatenation, every image weighs 1. A list is chosen on each validation fold with the trainer's grid (null in
    it = concatenation); the choice is in results.csv's ``hparams``. Not for the gallery (it fits nothing)."""
    tta: list[Literal["flip", "gray"]] = Field(default_factory=list)
    """Test-time augmentation: every combination of these views (GestaltMatcher: flip x gray) is averaged -- the
    gallery's embeddings, the heads' probabilities (phenosynth.training.cell)."""
    generator: Literal["already-generated"] | GeneratorSpec = ALREADY_GENERATED
    notice: str | None = None
    """A line shown in bold at the top of the report and of table.md, e.g. that the data are simulated."""
    features_from: str | None = None
    """Optional folder of precomputed features (``<backbone>.npz`` with ``ids`` and ``X``) used instead of the
    workspace's feature cache, e.g. features computed on a GPU machine."""

    @field_validator("backbones", mode="before")
    @classmethod
    def _bare_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    @field_validator("generator", mode="before")
    @classmethod
    def _generator_name(cls, value: Any) -> Any:
        if isinstance(value, str) and value != ALREADY_GENERATED:
            return {"name": value}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "StudySpec":
        names = [b.name for b in self.backbones]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"backbones are repeated: {dup}")
        if not (self.regimes.real or self.regimes.synthetic or self.regimes.mixed):
            raise ValueError("regimes is empty: set real: true and/or give synthetic/mixed n lists")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds are repeated: {self.seeds}")
        if self.synthetic_weight is not None:
            _check_synthetic_weight(self)
        return self

    @property
    def max_n(self) -> int:
        """The largest number of synthetic images any cell asks for (0 for a real-only study)."""
        return max([*self.regimes.synthetic, *self.regimes.mixed, 0])

    def with_paths_from(self, base: str | os.PathLike[str]) -> "StudySpec":
        """This spec with its relative paths (``features_from``, weights files) made absolute against ``base``: a spec
        file's paths are relative to its own folder, and ``config.yaml`` stores them absolute."""
        def absolute(path: str) -> str:
            return str((Path(base) / Path(path).expanduser()).resolve())

        def with_absolute(b: BackboneChoice) -> BackboneChoice:
            if b.members:
                return BackboneChoice(members=[with_absolute(m) for m in b.members])
            return b if b.weights in WEIGHT_KEYWORDS else b.model_copy(update={"weights": absolute(b.weights)})

        backbones = [with_absolute(b) for b in self.backbones]
        features_from = absolute(self.features_from) if self.features_from else None
        return self.model_copy(update={"backbones": backbones, "features_from": features_from})

    def resolved(self) -> dict[str, Any]:
        """Plain-data form with every default filled in (what ``config.yaml`` stores)."""
        return self.model_dump(mode="json")


def _check_synthetic_weight(spec: "StudySpec") -> None:
    """``synthetic_weight``: positive weights (or null), no repeats, a spec with mixed n, a trainer that fits."""
    from phenosynth.errors import PhenosynthError as _Error
    from phenosynth.training.cell import check_synthetic_weight

    if not spec.regimes.mixed:
        raise ValueError("synthetic_weight weighs the synthetic images of mixed training sets, but regimes.mixed "
                         "is empty; give mixed n values or remove synthetic_weight")
    try:
        check_synthetic_weight(spec.synthetic_weight, "mixed", spec.trainer.mode)
    except _Error as exc:
        raise ValueError(str(exc).rstrip(".")) from None


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; see the shipped specs in phenosynth/study/specs/)"
        lines.append(f"  {where}: {msg}")
    return f"Invalid study spec {source}:\n" + "\n".join(lines)


def _check_backbones(spec: StudySpec, source: str) -> None:
    """Unknown backbone names (not in the models registry, which also resolves its ``timm:`` family), each with its
    close matches."""
    from phenosynth.models.backbones import BACKBONES as registry  # lazy: torch costs seconds of a CLI start-up

    valid = list(registry.names())
    unknown = [p.name for b in spec.backbones for p in b.parts() if p.name not in registry]  # the registry knows the timm: family
    if unknown:
        import difflib

        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, valid, n=2, cutoff=0.5)
            hints.append(f"'{name}'" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise SpecError(
            f"Invalid study spec {source}: unknown backbone {', '.join(hints)}. "
            f"Valid: {', '.join(valid)}, or timm:<any timm model name>."
        )


def is_run_config(data: Any) -> bool:
    """True for the contents of a study run's ``config.yaml`` (the resolved spec under ``spec:``, plus the run's
    name, workspace, manifest digest and package versions)."""
    return isinstance(data, dict) and isinstance(data.get("spec"), dict) and "backbones" not in data


def spec_from_dict(data: Any, *, source: str = "(dict)") -> StudySpec:
    """Validate plain data (parsed YAML) into a :class:`StudySpec`; errors name every bad key. A run's
    ``config.yaml`` contents are accepted too (their ``spec:``)."""
    if is_run_config(data):
        data = data["spec"]
    if not isinstance(data, dict):
        raise SpecError(f"Invalid study spec {source}: expected a mapping of keys (backbones:, regimes:, ...), "
                        f"got {type(data).__name__}.")
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_validation_error(exc, source)) from None
    _check_backbones(spec, source)
    _check_generator(spec, source)
    _check_trainer(spec, source)
    return spec


def _check_generator(spec: StudySpec, source: str) -> None:
    """An unknown generator name or option (each error names the valid ones)."""
    if not isinstance(spec.generator, GeneratorSpec):
        return
    from phenosynth.synth.generators import GENERATORS, check_generator_options

    name = spec.generator.name
    try:
        GENERATORS.get(name)
    except PhenosynthError as exc:
        raise SpecError(f"Invalid study spec {source}: {str(exc).rstrip('.')}, or {ALREADY_GENERATED}.") from None
    try:
        check_generator_options(name, spec.generator.options)
    except PhenosynthError as exc:
        raise SpecError(f"Invalid study spec {source}: generator.options: {exc}") from None


def _check_trainer(spec: StudySpec, source: str) -> None:
    """The trainer's name and that every hyper-parameter is one of its parameters (typos fail here, not in a cell)."""
    from phenosynth.models.trainers import TRAINERS  # lazy: torch

    if spec.trainer.mode not in TRAINERS:
        raise SpecError(f"Invalid study spec {source}: unknown trainer mode '{spec.trainer.mode}'. "
                        f"Valid: {', '.join(TRAINERS.names())}.")
    params = set(TRAINERS.get(spec.trainer.mode)().get_params()) - {"random_state"}
    bad = sorted(set(spec.trainer.hparams) - params)
    if bad:
        raise SpecError(f"Invalid study spec {source}: trainer '{spec.trainer.mode}' has no parameter "
                        f"{', '.join(map(repr, bad))}. Its parameters: {', '.join(sorted(params))}.")


def load_spec(path: str | os.PathLike[str]) -> StudySpec:
    """Read and validate a study spec from YAML. A bare name (``paper``, ``demo``) loads a shipped spec; a run's
    ``WS/runs/NAME/config.yaml`` loads the spec that run used (so the same study can be run again). Relative paths
    in the spec (``features_from``, weights files) are relative to the spec file's folder.

    >>> load_spec("paper").regimes.synthetic
    [2000, 4000, 6000, 8000, 10000]
    """
    p = Path(path)
    if not p.is_file() and not p.suffix and (SPECS_DIR / f"{p.name}.yaml").exists():
        p = SPECS_DIR / f"{p.name}.yaml"
    if not p.is_file():
        shipped = ", ".join(sorted(f.stem for f in SPECS_DIR.glob("*.yaml")))
        raise SpecError(f"Study spec {p} does not exist. Give a YAML file, or one of the shipped specs: {shipped}.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"Study spec {p} is not valid YAML{where}: {problem}.") from None
    return spec_from_dict(data, source=str(p)).with_paths_from(p.parent)
