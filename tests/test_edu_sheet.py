"""Counselling sheets (phenosynth.edu.sheet, `phenosynth sheet`): only audited, unflagged synthetic faces go on them."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from phenosynth.cli import app
from phenosynth.data.workspace import Workspace
from phenosynth.edu.annotations import load_annotations
from phenosynth.edu.sheet import DISCLAIMER, find_chromium, select_sheet_images, write_sheet
from phenosynth.errors import PhenosynthError
from tests._workspaces import image_row, save_rows, write_audit


def _face(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)


def _synthetic(ws: Workspace, run: str, generator: str, label: str, seed: int, parent: str) -> dict:
    return image_row(ws, ws.root / "synthetic" / run / f"{label}{seed}.png", _face(seed), label=label,
                     source="synthetic", generator=generator, params=json.dumps({"run": run, "seed": seed}),
                     parents=[parent], split="train")


def _write_audit(ws: Workspace, run: str, verdicts: dict[str, list[str]]) -> None:
    """A hand-written audit of ``run``: image_id -> its flags (no privacy flag: shareable)."""
    m = ws.load_manifest().set_index("image_id")
    write_audit(ws, run, [dict(image_id=image_id, path=m.loc[image_id, "path"], label=m.loc[image_id, "label"],
                               run=run, generator=m.loc[image_id, "generator"], flags=flags, shareable=not flags,
                               has_face=True, parents=[]) for image_id, flags in verdicts.items()],
                {"created": "2026-01-01"})


@pytest.fixture
def sheet_ws(tmp_path):
    """Real photos of A and B; run 'good' (A: 4 shareable, 1 identity match; B: 1), run 'grown' (A: one image
    audited, one added after the audit: a stale audit), run 'fresh' never audited, run 'warp' of shape-warp
    (audited, passing)."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    real = [image_row(ws, tmp_path / "photos" / f"{lab}.png", _face(100 + k), label=lab, subject_id=f"p{k}",
                      source="real", split="train", fold=0) for k, lab in enumerate("AB")]
    parent = real[0]["image_id"]
    good = [_synthetic(ws, "good", "stylegan", "A", s, parent) for s in range(5)]
    good.append(_synthetic(ws, "good", "stylegan", "B", 6, parent))
    grown = [_synthetic(ws, "grown", "stylegan", "A", s, parent) for s in (9, 5)]
    fresh = [_synthetic(ws, "fresh", "stylegan", "A", 7, parent)]
    warp = [_synthetic(ws, "warp", "shape-warp", "A", 8, parent)]
    save_rows(ws, real + good + grown[:1] + fresh + warp)
    ids = [r["image_id"] for r in good]
    _write_audit(ws, "good", {**{i: [] for i in ids[:4]}, ids[4]: ["identity-match"], ids[5]: []})
    _write_audit(ws, "grown", {grown[0]["image_id"]: []})
    _write_audit(ws, "warp", {warp[0]["image_id"]: []})
    save_rows(ws, real + good + grown + fresh + warp)  # grown[1] joins its run after the audit
    return ws, {"real": [r["image_id"] for r in real], "ok": ids[:4], "flagged": ids[4], "late": grown[1]["image_id"],
                "ok_b": ids[5], "fresh": fresh[0]["image_id"], "warp": warp[0]["image_id"]}


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def _sheet_pixels(html: str) -> list[bytes]:
    parser = _Images()
    parser.feed(html)
    out = []
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")  # embedded: no link to a file or a server
        out.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))).tobytes())
    return out


def _pixels(ws: Workspace, image_id: str) -> bytes:
    m = ws.load_manifest().set_index("image_id")
    return np.asarray(Image.open(ws.resolve(m.loc[image_id, "path"])).convert("RGB")).tobytes()


def test_the_sheet_holds_only_audited_unflagged_synthetic_faces_and_the_disclaimer(sheet_ws, tmp_path):
    ws, ids = sheet_ws
    notes_csv = tmp_path / "conditions.csv"
    notes_csv.write_text("condition,hpo_ids,hpo_names,description\n"
                         "A,HP:0000316;HP:0000347;HP:9999999,Hypertelorism;Micrognathia;Made-up term,"
                         "A <b>simulated</b> condition\n")
    res = write_sheet(ws, "A", annotations=load_annotations(notes_csv), pdf=False)
    html = res.html.read_text()
    assert res.html == ws.root / "sheets" / "A.html" and res.n_images == 4 and res.runs == ("good",)
    assert sorted(_sheet_pixels(html)) == sorted(_pixels(ws, i) for i in ids["ok"])
    assert DISCLAIMER in html and "belong to any real child" in DISCLAIMER
    # plain language for known HPO terms, the term's own name otherwise; the description is escaped
    assert "Eyes set wide apart" in html and "Small lower jaw" in html and "Made-up term" in html
    assert "A &lt;b&gt;simulated&lt;/b&gt; condition" in html
    # nothing that points to a file or a patient
    assert not any(i[:12] in html for i in [*ids["real"], *ids["ok"]]) and str(ws.root) not in html
    assert any("shape-warp" in n for n in res.notes) and any("'fresh' was never audited" in n for n in res.notes)
    assert res.pdf is None and res.pdf_note == "PDF not asked for"


def test_n_limits_the_faces_and_the_choice_is_reproducible(sheet_ws):
    ws, _ = sheet_ws
    a, _ = select_sheet_images(ws, "A", n=2)
    b, _ = select_sheet_images(ws, "A", n=2)
    assert len(a) == 2 and a["image_id"].tolist() == b["image_id"].tolist()


@pytest.mark.parametrize("which, reason", [
    ("real", "a real photo, not a synthetic face"),
    ("flagged", "audit: identity-match"),
    ("late", "its run 'grown' has a stale audit: the run has 2 synthetic images now, 1 when audited"),
    ("fresh", "its run 'fresh' was never audited"),
    ("warp", "made by 'shape-warp' from a patient's photo"),
    ("ok_b", "an image of 'B', not of 'A'"),
])
def test_asking_for_an_image_that_may_not_go_on_a_sheet_is_refused_with_its_reason(sheet_ws, tmp_path, which, reason):
    ws, ids = sheet_ws
    bad = ids[which][0] if which == "real" else ids[which]
    with pytest.raises(PhenosynthError, match="cannot go on a counselling sheet") as err:
        write_sheet(ws, "A", image_ids=[ids["ok"][0], bad], out=tmp_path / "s.html", pdf=False)
    assert reason in str(err.value) and bad[:12] in str(err.value) and ids["ok"][0][:12] not in str(err.value)
    assert not (tmp_path / "s.html").exists()
    ok = write_sheet(ws, "A", image_ids=ids["ok"][:2], out=tmp_path / "s.html", pdf=False)
    assert sorted(_sheet_pixels(ok.html.read_text())) == sorted(_pixels(ws, i) for i in ids["ok"][:2])


def test_runs_never_audited_or_of_augmentation_are_refused_and_the_cli_says_why(sheet_ws):
    ws, _ = sheet_ws
    runner = CliRunner()
    for run, message in (("fresh", "run 'fresh' was never audited"),
                         ("warp", "transforms the patients' own photos"),
                         (None, None)):
        args = ["sheet", "-w", str(ws.root), "--condition", "Z" if run is None else "A", "--no-pdf"]
        result = runner.invoke(app, args + (["--run", run] if run else []))
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert (message or "No condition 'Z'") in " ".join(result.output.split())
    done = runner.invoke(app, ["sheet", "-w", str(ws.root), "--condition", "A", "--run", "good", "--no-pdf"])
    assert done.exit_code == 0, done.output
    assert "4 audited synthetic face(s) from run(s) good" in " ".join(done.output.split())


def test_a_condition_whose_faces_were_all_flagged_gets_no_sheet(sheet_ws):
    ws, ids = sheet_ws
    frame = pd.read_parquet(ws.root / "audit" / "good" / "audit.parquet")
    frame["flags"] = [["near-copy"] if lab == "B" else list(f) for lab, f in zip(frame["label"], frame["flags"])]
    frame["shareable"] = frame["flags"].map(len) == 0
    frame.to_parquet(ws.root / "audit" / "good" / "audit.parquet", index=False)
    with pytest.raises(PhenosynthError, match="No audited, unflagged synthetic face of 'B'"):
        write_sheet(ws, "B", pdf=False)


def test_yaml_annotations_and_their_errors(tmp_path):
    good = tmp_path / "a.yaml"
    good.write_text("A:\n  name: Syndrome A\n  features: [Wide-set eyes, Small chin]\n"
                    "  hpo: ['HP:0000316 Hypertelorism', {id: 'HP:0000347', name: Micrognathia}]\n")
    a = load_annotations(good)["A"]
    assert a.name == "Syndrome A" and a.plain_features() == ["Wide-set eyes", "Small chin"]
    assert a.hpo == (("HP:0000316", "Hypertelorism"), ("HP:0000347", "Micrognathia"))
    bad = tmp_path / "b.yaml"
    bad.write_text("A:\n  hpo: ['Hypertelorism']\n")
    with pytest.raises(PhenosynthError, match="'Hypertelorism' is not an HPO id"):
        load_annotations(bad)
    with pytest.raises(PhenosynthError, match="must be a .csv or .yaml"):
        (tmp_path / "c.txt").write_text("x")
        load_annotations(tmp_path / "c.txt")


@pytest.mark.skipif(find_chromium() is None, reason="no PDF engine: Chromium is not installed on this machine "
                                                      "(apt-get install chromium); the HTML sheet is tested above")
def test_the_pdf_is_printed_by_chromium(sheet_ws, tmp_path):
    ws, _ = sheet_ws
    res = write_sheet(ws, "A", out=tmp_path / "out" / "sheet-A.pdf")
    assert res.pdf == tmp_path / "out" / "sheet-A.pdf" and res.pdf_note == ""
    data = res.pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page(?!s)", data)) == 1  # one page
    assert res.html == tmp_path / "out" / "sheet-A.html" and DISCLAIMER in res.html.read_text()


def test_a_phenotype_transfer_run_goes_on_a_sheet_by_its_own_run_json_flag(sheet_ws, tmp_path):
    """Per-run uses_patient_pixels (run.json): a donor run's faces are synthetic faces; a morph run (patients' pixels
    blended) and an old run without the key (the generator class's attribute, True) are refused."""
    ws, ids = sheet_ws
    parent = ids["real"][0]
    rows = {run: _synthetic(ws, run, "phenotype-transfer", "A", seed, parent)
            for run, seed in (("donor", 20), ("morph", 21), ("old", 22))}
    ws.save_manifest(pd.concat([ws.load_manifest(), pd.DataFrame(list(rows.values()))], ignore_index=True))
    for run, flag in (("donor", False), ("morph", True)):
        (ws.synthetic_dir / run / "run.json").write_text(json.dumps({"run": run, "uses_patient_pixels": flag}))
    for run, row in rows.items():
        _write_audit(ws, run, {row["image_id"]: []})
    chosen, notes = select_sheet_images(ws, "A", n=20)
    assert set(chosen["image_id"]) == {*ids["ok"], rows["donor"]["image_id"]}
    assert {r for r in ("morph", "old", "warp") if any(f"run '{r}'" in n and "patients' own photos" in n
                                                      for n in notes)} == {"morph", "old", "warp"}
    with pytest.raises(PhenosynthError, match="made by 'phenotype-transfer' from a patient's photo"):
        write_sheet(ws, "A", image_ids=[rows["morph"]["image_id"]], out=tmp_path / "s.html", pdf=False)
