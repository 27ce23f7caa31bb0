"""Condition annotations: what a trainee or a family should look for, in plain language.

A small file the educator provides, one entry per condition (the key is the workspace's label):

- **CSV** with a ``condition`` column and any of ``name``, ``features`` (plain-language features, ``;``-separated),
  ``hpo_ids`` and ``hpo_names`` (``;``-separated, in the same order), ``description``. The demo's
  ``conditions.csv`` is such a file.
- **YAML**: a mapping ``condition -> {name, features: [...], hpo: ["HP:0000316 Hypertelorism", ...] or
  [{id, name}], description}``.

Where a condition has no plain-language features, its HPO terms stand in, each in the everyday words of
:data:`PLAIN_LANGUAGE` (layperson wording of the Human Phenotype Ontology for common facial terms) when known, else
under the term's own name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from phenosynth.errors import PhenosynthError

#: HPO id -> everyday words (the HPO's layperson synonyms, for the facial terms of the demo and common others).
PLAIN_LANGUAGE: Mapping[str, str] = MappingProxyType({
    "HP:0000316": "Eyes set wide apart",
    "HP:0000601": "Eyes set close together",
    "HP:0000494": "Outer corners of the eyes slant downwards",
    "HP:0000582": "Outer corners of the eyes slant upwards",
    "HP:0000445": "Broad nose",
    "HP:0003196": "Short nose",
    "HP:0000343": "Long groove between the nose and the upper lip",
    "HP:0011800": "Flat middle of the face",
    "HP:0000154": "Wide mouth",
    "HP:0000160": "Small mouth",
    "HP:0000347": "Small lower jaw",
    "HP:0000286": "Skin fold at the inner corner of the eye",
    "HP:0000508": "Drooping upper eyelid",
    "HP:0000369": "Low-set ears",
    "HP:0000431": "Wide nasal bridge",
})


@dataclass(frozen=True)
class Annotation:
    """One condition's annotation."""

    condition: str
    name: str
    features: tuple[str, ...]  # as the educator wrote them
    hpo: tuple[tuple[str, str], ...]  # (id, name)
    description: str

    def plain_features(self) -> list[str]:
        """The features in plain language: the written ones, else the HPO terms in everyday words."""
        if self.features:
            return list(self.features)
        return [PLAIN_LANGUAGE.get(i, n or i) for i, n in self.hpo]


def _split(value: Any) -> list[str]:
    if value is None or value != value:  # None / NaN
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(";") if v.strip()]


def _hpo_terms(value: Any) -> tuple[tuple[str, str], ...]:
    out = []
    for term in value if isinstance(value, list) else _split(value):
        if isinstance(term, dict):
            out.append((str(term.get("id", "")).strip(), str(term.get("name", "")).strip()))
        else:
            hpo_id, _, name = str(term).strip().partition(" ")
            out.append((hpo_id, name.strip()))
    return tuple(out)


def _annotation(condition: str, entry: Mapping[str, Any], source: Path) -> Annotation:
    if not isinstance(entry, Mapping):
        raise PhenosynthError(f"{source}: the entry of condition '{condition}' must be a mapping "
                              "(name, features, hpo, description).")
    if "hpo_ids" in entry:  # the CSV form: ids and names in two parallel columns
        ids, names = _split(entry.get("hpo_ids")), _split(entry.get("hpo_names"))
        if names and len(names) != len(ids):
            raise PhenosynthError(f"{source}: condition '{condition}' has {len(ids)} HPO id(s) but {len(names)} "
                                  "name(s); give one name per id (or none).")
        hpo = tuple(zip(ids, names or [""] * len(ids)))
    else:
        hpo = _hpo_terms(entry.get("hpo"))
    bad = [i for i, _ in hpo if not i.startswith("HP:")]
    if bad:
        raise PhenosynthError(f"{source}: condition '{condition}': '{bad[0]}' is not an HPO id (HP:0000000).")
    name = entry.get("name")
    description = entry.get("description")
    return Annotation(condition=condition, name=str(name) if name == name and name else condition,
                      features=tuple(_split(entry.get("features"))), hpo=hpo,
                      description=str(description).strip() if description == description and description else "")


def load_annotations(path: str | Path) -> dict[str, Annotation]:
    """condition -> :class:`Annotation` from a CSV or YAML file (module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PhenosynthError(f"Annotations file {path} not found.")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise PhenosynthError(f"{path} is not valid YAML ({exc}).") from None
        if not isinstance(doc, dict):
            raise PhenosynthError(f"{path}: expected a mapping condition -> annotation.")
        return {str(c): _annotation(str(c), e or {}, path) for c, e in doc.items()}
    if path.suffix.lower() == ".csv":
        import pandas as pd

        frame = pd.read_csv(path, dtype=str)
        if "condition" not in frame.columns:
            raise PhenosynthError(f"{path} has no 'condition' column (columns: {', '.join(frame.columns)}).")
        return {str(r["condition"]): _annotation(str(r["condition"]), r, path)
                for r in frame.to_dict(orient="records")}
    raise PhenosynthError(f"{path}: annotations must be a .csv or .yaml file.")


__all__ = ["Annotation", "load_annotations", "PLAIN_LANGUAGE"]
