"""The pass/fail reading of a run's audit summary (``WS/audit/<run>/summary.json``, :mod:`phenosynth.audit.privacy`).

A run passes when its synthetic images are no closer to the real training patients than strangers are: the
identity-matched share is at most the stranger rate (the matched share a stranger's photo gets under the same
nearest-neighbour protocol) plus :data:`MAX_MATCHED_EXCESS`, and the membership AUC (training vs held-out patients)
is at most :data:`MAX_MEMBERSHIP_AUC` (issue 12's bar, as in ``benchmarks/identity_free.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: The matched share may exceed the stranger rate by at most this (2 percentage points).
MAX_MATCHED_EXCESS = 0.02
#: The membership AUC may be at most this (0.5: nothing remembered).
MAX_MEMBERSHIP_AUC = 0.6


@dataclass(frozen=True)
class AuditVerdict:
    """Whether a run passed, and the numbers that decided it, in words."""

    run: str
    passed: bool
    text: str


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def audit_verdict(summary: dict[str, Any]) -> AuditVerdict:
    """The verdict on one run from its ``summary.json`` contents (``summary["run"]``: :class:`RunAudit` as a dict).

    >>> s = {"run": {"run": "r", "matched_share": 0.05, "stranger_rate": 0.04, "membership_auc": 0.55}}
    >>> audit_verdict(s).text
    'run r passes the audit: 5.0 % identity-matched (stranger rate 4.0 % + 2 points), membership AUC 0.55 (<= 0.6)'
    """
    r = summary["run"]
    matched, stranger, auc = float(r["matched_share"]), float(r["stranger_rate"]), float(r["membership_auc"])
    identity_ok = not math.isnan(matched) and matched <= stranger + MAX_MATCHED_EXCESS
    membership_ok = not math.isnan(auc) and auc <= MAX_MEMBERSHIP_AUC
    passed = identity_ok and membership_ok
    id_cmp = "+ 2 points" if identity_ok else "+ 2 points exceeded"
    auc_cmp = f"<= {MAX_MEMBERSHIP_AUC:g}" if membership_ok else f"above {MAX_MEMBERSHIP_AUC:g}"
    text = (f"run {r['run']} {'passes' if passed else 'FAILS'} the audit: {_pct(matched)} identity-matched "
            f"(stranger rate {_pct(stranger)} {id_cmp}), membership AUC {auc:.2f} ({auc_cmp})")
    return AuditVerdict(run=str(r["run"]), passed=passed, text=text)


__all__ = ["AuditVerdict", "audit_verdict", "MAX_MATCHED_EXCESS", "MAX_MEMBERSHIP_AUC"]
