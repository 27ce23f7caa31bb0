"""CLI: audit (identity leakage, membership, copies of the synthetic images)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from phenosynth.cli._app import WORKSPACE_OPTION, command, console, next_step, progress_bar
from phenosynth.data.workspace import Workspace
from phenosynth.errors import PhenosynthError


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.1f}%"


def _ci(lo: float, hi: float, pct: bool = True) -> str:
    if lo != lo:
        return "n/a"
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]%" if pct else f"[{lo:.2f}, {hi:.2f}]"


@command("audit")
def audit_command(
    workspace: Path = WORKSPACE_OPTION,
    run: str = typer.Option(None, "--run", help="One generator run (folder under WS/synthetic); default: every run."),
    embedder: str = typer.Option(
        "dlib_resnet128", "--embedder", help="Identity embedder from the backbone registry (dlib_resnet128, facenet, ...)."
    ),
    weights: str = typer.Option("default", "--weights", help="Embedder weights: default | PATH."),
    metric: str = typer.Option(None, "--metric", help="euclidean | cosine (default: the embedder's documented one)."),
    quantile: float = typer.Option(0.001, "--quantile", help="Impostor quantile that bounds the threshold."),
    phash_bits: int = typer.Option(4, "--phash-bits", help="Near-copy: perceptual hash within this many bits."),
    ssim_threshold: float = typer.Option(0.9, "--ssim", help="Near-copy: SSIM of the aligned crops at least this."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples of the membership AUC."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap, the KID subsets and the split-half baseline."),
    kid_backbone: str = typer.Option(
        "mobilenet_v2", "--kid-backbone", help="Fidelity: KID in this backbone's feature space ('none' skips it)."),
    probe_backbone: str = typer.Option(
        "shape68", "--probe-backbone", help="Phenotype agreement: the probe's backbone ('none' skips it)."),
    vlm_url: str = typer.Option(
        None, "--vlm-url", help="VLM phenotype reports: an OpenAI-compatible server (vLLM, llama.cpp, Ollama), e.g. "
                                "http://127.0.0.1:8000. Real training photos are sent to it: use a server you control."),
    vlm_model: str = typer.Option(None, "--vlm-model", help="The model name the VLM server serves."),
    vlm_key_env: str = typer.Option(
        "PHENOSYNTH_VLM_API_KEY", "--vlm-key-env", help="NAME of the environment variable holding the API key (if any)."),
    vlm_embedder: Path = typer.Option(
        None, "--vlm-embedder", help="Folder of a sentence-transformers model: report similarity by embedding too."),
    vlm_max_images: int = typer.Option(
        None, "--vlm-max-images", help="At most N synthetic images per run and N real training photos (balanced)."),
    donors: bool = typer.Option(
        False, "--donors", help="Screen the donor faces instead of auditing runs: exclude every donor person with a "
                                "photo under the identity threshold to a patient training photo; release those who "
                                "no longer match."),
) -> None:
    """Audit synthetic faces for privacy: is an image the same person as a real training photo (identity match,
    threshold calibrated on the workspace's own real photos), does the generator remember its training patients
    (membership AUC, 0.5 = nothing), is an image a pixel-level near-copy of a real photo, or a duplicate.

    Writes WS/audit/RUN/audit.parquet (one row per synthetic image, with its flags) and summary.json; a re-audit
    replaces them and says so. Needs `split`, `generate` and `faces` first.

    With --vlm-url and --vlm-model, a vision-language model (any OpenAI-compatible server) describes each synthetic
    image and real training photo region by region, and the reports are compared (synthetic vs real of the same
    condition, beside real vs real of the same and of other conditions). The API key, if the server needs one, is
    read from the environment variable named by --vlm-key-env.

    With --donors, screens the donor faces (`ingest --donors`) before a donor run: each donor photo's identity
    distance to the nearest real training photo, under the same threshold; every donor person with a photo under it
    is excluded in the manifest (a re-screen releases those who no longer match). Writes WS/audit/donors/screen.parquet.

    Example: [bold]phenosynth audit -w ws --run shape-warp-seed0[/]; [bold]phenosynth audit -w ws --donors[/]
    """
    from phenosynth.audit.privacy import AUGMENTATION_NOTE, audit
    from phenosynth.audit.vlm import VLMConfig

    ws = Workspace.open(workspace, need_manifest=True)
    if donors:
        if run is not None:
            raise PhenosynthError("--donors screens the donor faces; it takes no --run.")
        return _screen_donors(ws, embedder=embedder, weights=weights, metric=metric, quantile=quantile)
    if vlm_url is None and vlm_model is None and (vlm_embedder is not None or vlm_max_images is not None):
        raise PhenosynthError("--vlm-embedder and --vlm-max-images need --vlm-url and --vlm-model.")
    vlm = None if vlm_url is None and vlm_model is None else VLMConfig(
        vlm_url or "", vlm_model or "", key_env=vlm_key_env, embedder=vlm_embedder, max_images=vlm_max_images)
    with progress_bar(f"Embedding faces ({embedder})") as on_progress:
        res = audit(ws, run, embedder, weights=weights, metric=metric, quantile=quantile, phash_bits=phash_bits,
                    ssim_threshold=ssim_threshold, n_boot=bootstrap, seed=seed, on_progress=on_progress,
                    kid_backbone=None if kid_backbone == "none" else kid_backbone,
                    probe_backbone=None if probe_backbone == "none" else probe_backbone, vlm=vlm)
    cal = res.calibration
    doc = "none" if cal.documented is None else f"{cal.documented:.4g}"
    table = Table(title=f"Privacy audit ({res.embedder}, {res.metric} distance; threshold {cal.threshold:.4g} = "
                        f"min(documented {doc}, impostor {100 * cal.quantile:g}% quantile {cal.impostor_quantile:.4g}))")
    for col, just in (("run", "left"), ("images", "right"), ("matched (95% CI)", "right"),
                      ("stranger rate (95% CI)", "right"), ("membership AUC (95% CI)", "right"), ("near-copies", "right"),
                      ("duplicates", "right"), ("no face", "right"), ("shareable", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in res.runs:
        auc = "n/a" if r.membership_auc != r.membership_auc else (
            f"{r.membership_auc:.3f} {_ci(*r.membership_ci, pct=False)}")
        table.add_row(r.run, str(r.n_images), f"{_pct(r.matched_share)} {_ci(*r.matched_ci)}",
                      f"{_pct(r.stranger_rate)} {_ci(*r.stranger_ci)}", auc, str(r.n_near_copies), str(r.n_duplicates), str(r.n_no_face),
                      str(r.n_shareable))
    console.print(table)
    console.print(
        f"Calibrated on {res.n_real} real photos ({cal.n_genuine} same-person pairs, {cal.n_impostor} "
        f"different-person pairs): the threshold matches {_pct(cal.genuine_rate)} of same-person pairs and "
        f"{_pct(cal.impostor_rate)} of different-person pairs. Stranger rate: the share of real photos whose nearest "
        f"training photo of another person is under it (the baseline of the matched share). Audited in {res.seconds:.1f}s."
    )
    if not cal.quantile_estimable:
        console.print(f"Too few different-person pairs ({cal.n_impostor}) to estimate their {100 * cal.quantile:g}% "
                      "quantile (quantile_estimable: false): "
                      + ("the documented threshold is used." if cal.documented is not None
                         else "it is close to their minimum; add photos of more people for a reliable threshold."))
    console.print(_fidelity_table(res.runs))
    if vlm is not None:
        console.print(_reports_table(res.runs))
        for r in res.runs:
            console.print(_report_status(r))
    for r in res.runs:
        for note in r.fidelity.notes if r.fidelity else ():
            console.print(f"{r.run}: fidelity: {note}")
        note = f" (replaced the audit of {r.replaced})" if r.replaced else ""
        console.print(f"{r.run}: {r.n_matched} of {r.n_measured} measured images match a real training photo "
                      f"({r.matched_own_parent} their own parent); written to {r.parquet_path}{note}.")
        if r.transforms_patient_photos:
            console.print(f"{r.run} ({r.generator}): {AUGMENTATION_NOTE}.")


def _screen_donors(ws: Workspace, **options: Any) -> None:
    """``audit --donors``: screen the donor faces and print who was excluded, with their nearest distances."""
    from phenosynth.audit.donors import screen_donors

    with progress_bar(f"Embedding faces ({options['embedder']})") as on_progress:
        res = screen_donors(ws, on_progress=on_progress, **options)
    cal = res.calibration
    console.print(
        f"Screened {res.n_photos} donor photos of {res.n_people} people ({res.n_measured} with a face) against "
        f"{res.n_patient_photos} patient training photos: excluded {len(res.excluded)} of {res.n_people} people, "
        f"kept {res.n_kept}; "
        f"identity threshold {cal.threshold:.4g} ({res.embedder}, {res.metric}, {cal.source}).", highlight=False)
    for person, d in res.excluded.items():
        new = "" if person in res.newly_excluded else " (already excluded)"
        console.print(f"  excluded {person}: nearest patient training photo at {d:.4g} < {cal.threshold:.4g}{new}",
                      highlight=False)
    if res.released:
        console.print(f"Released (no longer resemble a patient): {', '.join(res.released)}.", highlight=False)
    if res.unmeasured:
        console.print(f"Not screened (no photo with a face embedding; run phenosynth faces): "
                      f"{', '.join(res.unmeasured)}.", highlight=False)
    console.print(f"Written to {res.parquet_path}.", highlight=False, soft_wrap=True)
    next_step(f"phenosynth generate -w {ws.root} -g phenotype-transfer (uses the kept donors)")


def _num(v: float, digits: int = 4) -> str:
    return "n/a" if v != v else f"{v:.{digits}f}"


def _fidelity_table(runs: list) -> Table:
    """Per run and condition: KID (with the split-half baseline) and the probe's accuracy (synthetic vs real test)."""
    table = Table(title="Fidelity (KID: synthetic vs real training photos, baseline: real vs real split by subject; "
                        "probe fit on real training photos)")
    for col, just in (("run", "left"), ("condition", "left"), ("KID", "right"), ("split-half KID", "right"),
                      ("probe acc. synthetic", "right"), ("probe acc. real test", "right"), ("note", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in runs:
        fid = r.fidelity
        kid = {k.condition: k for k in fid.kid} if fid else {}
        pheno = {p.condition: p for p in fid.phenotype} if fid else {}
        for cond in dict.fromkeys([*kid, *pheno]):
            k, p = kid.get(cond), pheno.get(cond)
            table.add_row(
                r.run, cond, _num(k.kid) if k else "-", _num(k.baseline) if k else "-",
                f"{_pct(p.synthetic_accuracy)} ({p.n_synthetic})" if p else "-",
                f"{_pct(p.test_accuracy)} ({p.n_test})" if p else "-",
                "; ".join(n for n in (k.note if k else "", p.note if p else "") if n))
    return table


def _reports_table(runs: list) -> Table:
    """Per run, condition and measure: the VLM report similarity synthetic<->real beside its two baselines."""
    table = Table(title="VLM phenotype reports: mean similarity (pairs) of synthetic vs real reports of the same "
                        "condition, beside real vs real (same condition, other subjects) and real vs real (other "
                        "conditions)")
    for col, just in (("run", "left"), ("condition", "left"), ("measure", "left"), ("synthetic↔real", "right"),
                      ("real↔real same", "right"), ("real↔real other", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in runs:
        for s in r.reports.similarity:
            table.add_row(r.run, s.condition, s.method, f"{_num(s.synthetic_real, 3)} ({s.n_pairs_synthetic_real})",
                          f"{_num(s.real_real_same, 3)} ({s.n_pairs_same})",
                          f"{_num(s.real_real_other, 3)} ({s.n_pairs_other})")
    return table


def _report_status(run_audit: Any) -> str:
    """One line: how the VLM answered for the run's synthetic images and the real training photos."""
    rep = run_audit.reports
    synthetic, real = (", ".join(f"{k} {v}" for k, v in d.items()) for d in (rep.synthetic_status, rep.real_status))
    return (f"{run_audit.run}: VLM reports ({rep.model}) of the synthetic images: {synthetic}; of the real training "
            f"photos: {real}" + "".join(f"; {n}" for n in rep.notes) + ".")


@command("export")
def export_command(
    out: Path = typer.Argument(..., help="New (or empty) folder to write the data set to."),
    workspace: Path = WORKSPACE_OPTION,
    run: str = typer.Option(..., "--run", help="The audited generator run to export."),
    allow_patient_pixels: bool = typer.Option(
        False, "--allow-patient-pixels",
        help="Export a run whose images hold patient pixels (shape-warp; phenotype-transfer morphs), labelled as "
             "augmentation of patient photos. Refused without it."),
) -> None:
    """Export the audited, shareable synthetic images of one run as a data set to share: images under neutral names
    (CONDITION/INDEX.png), metadata.csv (condition, generator, seed, audit scores; nothing that points back to a
    patient) and DATASHEET.md (how it was made, what the audit found, its limits). Refuses a run never audited, and a
    run whose images hold patient pixels (run.json uses_patient_pixels) unless --allow-patient-pixels.

    Example: [bold]phenosynth export -w ws --run shape-warp-seed0 shareable/[/]
    """
    from phenosynth.audit.export import export

    ws = Workspace.open(workspace, need_manifest=True)
    res = export(ws, run, out, allow_patient_pixels=allow_patient_pixels)
    console.print(f"Exported {res.n_exported} image(s) of run {run} to {res.out} ("
                  + ", ".join(f"{c}: {n}" for c, n in res.per_condition.items())
                  + f"); {res.n_left_out} held back by the audit. See {res.out / 'DATASHEET.md'}.")
