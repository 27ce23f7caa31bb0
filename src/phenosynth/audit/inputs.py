"""What an audit measured: digests of the real photo set and of a run's synthetic images, and whether a stored audit
still describes the workspace.

An audit's verdicts hold for the real photos it was calibrated and compared on (their image ids and splits: a
re-split moves patients between training and test, new photos change the calibration and the nearest real photo)
and for the run's images it scored. :func:`audit_inputs` records both in ``summary.json`` (``inputs``);
:func:`stale_reason` compares a stored record with the workspace now. A stale audit counts as no audit
(:mod:`phenosynth.audit.gate`). Pure functions over manifest rows; no I/O.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd

from phenosynth.audit.privacy import run_of
from phenosynth.data.manifest import REAL, SYNTHETIC, usable

#: How a user refreshes a stale audit (``{ws}``, ``{run}`` filled in by the caller).
RERUN_HINT = "re-run phenosynth audit -w {ws} --run {run}"


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:16]


def audit_inputs(real: pd.DataFrame, run_rows: pd.DataFrame) -> dict[str, Any]:
    """The record of what an audit of one run measured.

    Args:
        real: the usable real photos (``image_id``, ``split``; unsplit photos count, with split ``""``).
        run_rows: every synthetic row of the run, excluded or not (an exclusion or the gate's own marks do not change
            the run; a new image does).

    >>> real = pd.DataFrame({"image_id": ["a", "b"], "split": ["train", None]})
    >>> rec = audit_inputs(real, pd.DataFrame({"image_id": ["s1"]}))
    >>> rec["n_real"], rec["n_synthetic"], rec == audit_inputs(real.iloc[::-1], pd.DataFrame({"image_id": ["s1"]}))
    (2, 1, True)
    """
    splits = real["split"].astype("object").where(real["split"].notna(), "")
    return {
        "real_digest": _digest([f"{i}\t{s}" for i, s in zip(real["image_id"].astype(str), splits.astype(str))]),
        "n_real": int(len(real)),
        "synthetic_digest": _digest(run_rows["image_id"].astype(str).tolist()),
        "n_synthetic": int(len(run_rows)),
    }


def manifest_inputs(manifest: pd.DataFrame, run: str) -> dict[str, Any]:
    """:func:`audit_inputs` of ``run`` in ``manifest``: its usable real photos and every synthetic row of the run."""
    real = usable(manifest)
    syn = manifest[manifest["source"] == SYNTHETIC]
    params = syn["params"] if "params" in syn.columns else pd.Series(None, index=syn.index)
    in_run = [run_of(p, g) == run for p, g in zip(params, syn["generator"])]
    return audit_inputs(real[real["source"] == REAL], syn[in_run])


def stale_reason(recorded: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """Why an audit that recorded ``recorded`` (``summary.json``'s ``inputs``) no longer describes a workspace whose
    :func:`audit_inputs` are ``current``; None when it still does.

    >>> now = {"real_digest": "r", "n_real": 10, "synthetic_digest": "s", "n_synthetic": 5}
    >>> stale_reason(now, now) is None
    True
    >>> stale_reason({**now, "n_synthetic": 4, "synthetic_digest": "x"}, now)
    'the run has 5 synthetic images now, 4 when audited'
    >>> stale_reason({**now, "real_digest": "y"}, now)
    'the real photos changed since the audit (re-split, or photos added or removed; 10 then, 10 now)'
    """
    if not recorded or "real_digest" not in recorded or "synthetic_digest" not in recorded:
        return "the audit does not record which photos it measured (made by an older version)"
    why = []
    if recorded["real_digest"] != current["real_digest"]:
        why.append(f"the real photos changed since the audit (re-split, or photos added or removed; "
                   f"{recorded.get('n_real')} then, {current['n_real']} now)")
    if recorded["synthetic_digest"] != current["synthetic_digest"]:
        n_then, n_now = recorded.get("n_synthetic"), current["n_synthetic"]
        why.append(f"the run has {n_now} synthetic images now, {n_then} when audited" if n_then != n_now
                   else f"the run's synthetic images changed since the audit ({n_now} then and now)")
    return "; ".join(why) or None


__all__ = ["audit_inputs", "manifest_inputs", "stale_reason", "RERUN_HINT"]
