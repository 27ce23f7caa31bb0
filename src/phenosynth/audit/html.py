"""``WS/audit/<run>/audit.html``: the internal audit page of one generator run.

Distance histograms (genuine / impostor / synthetic-to-nearest-training-photo, with the threshold), the membership
ROC, the fidelity tables (KID with its split-half baseline, phenotype agreement), the VLM report similarities (when
asked for), and the synthetic images closest to a real training photo side by side with that photo (thumbnails in
``thumbs/``). The page shows real patient photos: it stays inside the workspace and is never exported (the page says
so at the top).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenosynth.audit.fidelity import Fidelity
from phenosynth.data.workspace import Workspace, atomic_write

#: How many of the closest synthetic images the page shows beside their nearest real photo.
N_WORST = 12
THUMB = 112

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Privacy audit: {{ r.run }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }
.internal { background: #fde2e2; border: 2px solid #c0392b; padding: .8em 1em; font-weight: bold; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: .3em .6em; }
td.num { text-align: right; } .pairs { display: flex; flex-wrap: wrap; gap: 1em; }
.pair { border: 1px solid #ccc; padding: .4em; font-size: 12px; text-align: center; }
.pair img { width: {{ thumb }}px; height: {{ thumb }}px; object-fit: cover; }
</style></head><body>
<p class="internal">INTERNAL — this page shows real patient photos next to synthetic images. It stays inside the
workspace; never share or export it (phenosynth export writes the shareable images without it).</p>
<h1>Privacy audit of generator run “{{ r.run }}”</h1>
<p>Generator: {{ r.generator }}. Embedder: {{ settings.embedder }} ({{ settings.metric }} distance). Audited
{{ created }}.</p>
<table>
<tr><th>images</th><td class="num">{{ r.n_images }}</td></tr>
<tr><th>matched to a real training photo (95 % CI)</th><td class="num">{{ r.n_matched }} of {{ r.n_measured }}:
 {{ pct(r.matched_share) }} [{{ pct(r.matched_ci[0]) }}, {{ pct(r.matched_ci[1]) }}]</td></tr>
<tr><th>… of them their own parent</th><td class="num">{{ r.matched_own_parent }}</td></tr>
<tr><th>stranger rate (baseline, 95 % CI)</th><td class="num">{{ pct(r.stranger_rate) }}
 [{{ pct(r.stranger_ci[0]) }}, {{ pct(r.stranger_ci[1]) }}]</td></tr>
<tr><th>membership AUC (95 % CI; 0.5 = nothing remembered)</th><td class="num">{{ num(r.membership_auc) }}
 [{{ num(r.membership_ci[0]) }}, {{ num(r.membership_ci[1]) }}]</td></tr>
<tr><th>near-copies / duplicates / no face</th><td class="num">{{ r.n_near_copies }} / {{ r.n_duplicates }} /
 {{ r.n_no_face }}</td></tr>
<tr><th>shareable</th><td class="num">{{ r.n_shareable }} of {{ r.n_images }}</td></tr>
<tr><th>threshold</th><td class="num">{{ num(cal.threshold, 4) }} (documented {{ cal.documented if
 cal.documented is not none else "none" }}; impostor {{ cal.quantile * 100 }} % quantile
 {{ num(cal.impostor_quantile, 4) }}; {{ cal.n_genuine }} same-person and {{ cal.n_impostor }} different-person
 pairs of real photos)</td></tr>
</table>
<h2>Fidelity: KID ({{ fid.kid_backbone or "skipped" }} features)</h2>
{% for note in fid.notes %}<p class="note">{{ note }}</p>{% endfor %}
{% if fid.kid %}<p>Synthetic images against the real training photos of their condition; the baseline is the KID
between two halves of those real photos split by subject (how much two samples of real patients differ).</p>
<table class="kid"><tr><th>condition</th><th>real</th><th>synthetic</th><th>KID (sd)</th>
<th>split-half baseline (sd)</th><th>note</th></tr>
{% for k in fid.kid %}<tr><td>{{ k.condition }}</td><td class="num">{{ k.n_real }}</td>
<td class="num">{{ k.n_synthetic }}</td><td class="num">{{ num(k.kid, 4) }} ({{ num(k.kid_sd, 4) }})</td>
<td class="num">{{ num(k.baseline, 4) }} ({{ num(k.baseline_sd, 4) }})</td><td>{{ k.note }}</td></tr>
{% endfor %}</table>{% endif %}
<h2>Phenotype agreement ({{ fid.probe_backbone or "skipped" }} probe)</h2>
{% if fid.phenotype %}<p>A probe fit on the real training photos classifies the synthetic images; its accuracy on
them beside its accuracy on the real test photos.</p>
<table class="phenotype"><tr><th>condition</th><th>synthetic images</th><th>accuracy on synthetic</th>
<th>real test photos</th><th>accuracy on real test</th><th>note</th></tr>
{% for p in fid.phenotype %}<tr><td>{{ p.condition }}</td><td class="num">{{ p.n_synthetic }}</td>
<td class="num">{{ pct(p.synthetic_accuracy) }}</td><td class="num">{{ p.n_test }}</td>
<td class="num">{{ pct(p.test_accuracy) }}</td><td>{{ p.note }}</td></tr>
{% endfor %}</table>{% endif %}
{% if r.reports %}<h2>VLM phenotype reports ({{ r.reports.model }}, prompt v{{ r.reports.prompt_version }})</h2>
<p>Mean similarity of the reports of synthetic images to those of real training photos of the same condition
(RDFace's number) beside two baselines: real photos of the same condition, different subjects, and real photos of
other conditions. Reports of the synthetic images: {{ counts(r.reports.synthetic_status) }}; of the real training
photos: {{ counts(r.reports.real_status) }}.</p>
{% for note in r.reports.notes %}<p class="note">{{ note }}</p>{% endfor %}
{% if r.reports.similarity %}<table class="reports"><tr><th>condition</th><th>measure</th>
<th>synthetic↔real (pairs)</th><th>real↔real same condition (pairs)</th><th>real↔real other condition (pairs)</th></tr>
{% for s in r.reports.similarity %}<tr><td>{{ s.condition }}</td><td>{{ s.method }}</td>
<td class="num">{{ num(s.synthetic_real) }} ({{ s.n_pairs_synthetic_real }})</td>
<td class="num">{{ num(s.real_real_same) }} ({{ s.n_pairs_same }})</td>
<td class="num">{{ num(s.real_real_other) }} ({{ s.n_pairs_other }})</td></tr>
{% endfor %}</table>{% endif %}{% endif %}
<h2>Distances</h2>
<p><img src="distances.png" alt="histograms of genuine, impostor and synthetic distances" width="720"></p>
<h2>Membership</h2>
<p><img src="membership_roc.png" alt="membership ROC" width="420"></p>
<h2>The {{ worst|length }} synthetic images closest to a real training photo</h2>
<p>Left: the synthetic image; right: its nearest real training photo.</p>
<div class="pairs">
{% for w in worst %}<div class="pair"><img src="{{ w.syn }}" alt="synthetic"> <img src="{{ w.real }}" alt="real">
<br>{{ w.label }} · distance {{ num(w.distance, 3) }}{% if w.parent %} · own parent{% endif %}
<br>{{ w.flags }}</div>
{% endfor %}</div>
</body></html>
"""


def _figure_distances(genuine: np.ndarray, impostor: np.ndarray, synthetic: np.ndarray, threshold: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    values = [v for v in (genuine, impostor, synthetic) if len(v)]
    bins = np.linspace(min(v.min() for v in values), max(v.max() for v in values), 50) if values else 10
    for v, name, colour in ((genuine, "genuine (same person)", "tab:green"),
                            (impostor, "impostor (different people)", "tab:grey"),
                            (synthetic, "synthetic → nearest training photo", "tab:red")):
        if len(v):
            ax.hist(v, bins=bins, density=True, alpha=0.5, color=colour, label=f"{name}, n={len(v)}")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel("identity distance")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return fig


def _figure_roc(distance: np.ndarray, member: np.ndarray, auc: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 4.2))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="nothing remembered")
    if member.any() and (~member).any():
        from sklearn.metrics import roc_curve

        fpr, tpr, _ = roc_curve(member, -distance)
        ax.plot(fpr, tpr, color="tab:red", label=f"AUC {auc:.3f}")
    ax.set_xlabel("false positive rate (held-out patients)")
    ax.set_ylabel("true positive rate (training patients)")
    ax.legend(fontsize=8)
    return fig


def _thumb(src: Path, dst: Path) -> None:
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        im.thumbnail((THUMB, THUMB))
        atomic_write(dst, lambda p: im.save(p, format="PNG"))


def write_audit_html(ws: Workspace, folder: Path, run_audit: Any, frame: pd.DataFrame, cal: Any,
                     genuine: np.ndarray, impostor: np.ndarray, membership: tuple[np.ndarray, np.ndarray],
                     settings: dict[str, Any], created: str) -> Path:
    """Write ``folder/{audit.html, distances.png, membership_roc.png, thumbs/}``; returns the page's path."""
    from jinja2 import Environment

    import shutil

    syn_d = frame["nearest_real_distance"].dropna().to_numpy(dtype=float)
    for fig, name in ((_figure_distances(genuine, impostor, syn_d, cal.threshold), "distances.png"),
                      (_figure_roc(*membership, run_audit.membership_auc), "membership_roc.png")):
        atomic_write(folder / name, lambda p, f=fig: f.savefig(p, format="png", dpi=110, bbox_inches="tight",
                                                                metadata={"Software": None}))
    shutil.rmtree(folder / "thumbs", ignore_errors=True)  # a re-audit's page shows only its own images
    manifest = ws.load_manifest().set_index("image_id")
    worst_rows = frame[frame["has_face"]].nsmallest(N_WORST, "nearest_real_distance")
    worst = []
    for n, r in enumerate(worst_rows.itertuples(index=False)):
        syn_rel, real_rel = f"thumbs/{n:02d}_synthetic.png", f"thumbs/{n:02d}_real.png"
        _thumb(ws.resolve(str(r.path)), folder / syn_rel)
        _thumb(ws.resolve(str(manifest.at[r.nearest_real_id, "path"])), folder / real_rel)
        worst.append({"syn": syn_rel, "real": real_rel, "label": r.label, "distance": r.nearest_real_distance,
                      "parent": bool(r.nearest_is_parent), "flags": ", ".join(r.flags) or "no flag"})

    def pct(v: float) -> str:
        return "n/a" if v is None or v != v else f"{100 * v:.1f} %"

    def num(v: float, digits: int = 3) -> str:
        return "n/a" if v is None or v != v else f"{v:.{digits}f}"

    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items())

    page = Environment(autoescape=True).from_string(_TEMPLATE).render(
        r=run_audit, fid=run_audit.fidelity or Fidelity(None, None), cal=cal, settings=settings, created=created, worst=worst, thumb=THUMB, pct=pct, num=num,
        counts=counts)
    atomic_write(folder / "audit.html", lambda p: Path(p).write_text(page))
    return folder / "audit.html"


__all__ = ["write_audit_html", "N_WORST"]
