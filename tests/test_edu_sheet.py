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
from phenosynth.edu.sheet import (DISCLAIMERS, DONOR, GENERATED, RunFacts, disclaimer, find_chromium,
                                  select_sheet_images, write_sheet)
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
    line = "These faces are computer-generated. They are not photographs of real people and belong to no real child."
    assert res.disclaimer == line and f'id="disclaimer">{line}</p>' in html  # run 'good' draws faces: no donor
    assert html.count('alt="Computer-generated face') == 4 and "volunteer" not in html
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
    assert res.html == tmp_path / "out" / "sheet-A.html" and res.disclaimer in res.html.read_text()


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


# --- what the sheet says its faces are --------------------------------------------------------------------------------


def _donor_run(ws: Workspace, tmp_path, run: str = "pt-donors") -> list[str]:
    """Two donor photos (``source=donor``) and a phenotype-transfer run of A with donor identities: each face a
    donor's photo warped (its pixel parent the donor), run.json as ``phenosynth generate`` writes it; audited,
    passing. The run's image ids."""
    donors = [image_row(ws, tmp_path / "donors" / f"d{k}.png", _face(200 + k), label=pd.NA, subject_id=f"d{k}",
                        source="donor") for k in range(2)]
    faces = [_synthetic(ws, run, "phenotype-transfer", "A", 30 + k, d["image_id"]) for k, d in enumerate(donors)]
    ws.save_manifest(pd.concat([ws.load_manifest(), pd.DataFrame(donors + faces)], ignore_index=True))
    (ws.synthetic_dir / run / "run.json").write_text(json.dumps({
        "run": run, "generator": "phenotype-transfer", "settings": {"identities": "donors"},
        "donor_images": sorted(d["image_id"] for d in donors), "uses_patient_pixels": False}))
    _write_audit(ws, run, {f["image_id"]: [] for f in faces})
    return [f["image_id"] for f in faces]


def test_the_line_is_chosen_from_the_runs_facts():
    generated = RunFacts("fastgan-seed0", "fastgan")
    donor = RunFacts("pt", "phenotype-transfer", ("d1",))
    assert (generated.kind, donor.kind) == (GENERATED, DONOR)
    assert disclaimer([generated]) == disclaimer([generated, generated]) == DISCLAIMERS[frozenset({GENERATED})]
    assert "belong to no real child" in disclaimer([generated])
    only_donors = disclaimer([donor])
    assert only_donors.startswith("These faces are computer-altered photographs of volunteers who agreed to their use.")
    assert "not photographs of any patient or of a child with this condition" in only_donors
    assert "not photographs of real people" not in only_donors  # they are photos of real (consenting) people
    mixed = disclaimer([generated, donor])
    assert mixed.startswith("Some of these faces are computer-generated; the others are computer-altered photographs")
    with pytest.raises(ValueError, match="at least one run"):
        disclaimer([])


def test_a_sheet_of_donor_faces_says_they_are_altered_photos_of_volunteers(sheet_ws, tmp_path):
    ws, ids = sheet_ws
    donor_faces = _donor_run(ws, tmp_path)
    res = write_sheet(ws, "A", run="pt-donors", pdf=False, out=tmp_path / "donors.html")
    html = res.html.read_text()
    assert res.n_images == 2 and res.runs == ("pt-donors",)
    assert res.disclaimer == DISCLAIMERS[frozenset({DONOR})]
    assert f'id="disclaimer">{res.disclaimer}</p>' in html
    assert "not photographs of real people" not in html and "Computer-generated face" not in html
    assert html.count('alt="Computer-altered photograph of a volunteer') == 2
    assert not any(i[:12] in html for i in donor_faces)

    # every run of A: the faces of run 'good' are drawn, those of 'pt-donors' are not: the line says both
    both = write_sheet(ws, "A", n=20, pdf=False, out=tmp_path / "both.html")
    assert both.runs == ("good", "pt-donors") and both.n_images == 6
    assert both.disclaimer == DISCLAIMERS[frozenset({GENERATED, DONOR})]
    text = both.html.read_text()
    assert text.count('alt="Computer-generated face') == 4 and text.count('alt="Computer-altered photograph') == 2

    # the lineage alone is enough: a run.json without donor_images, faces whose pixel parents are donors
    record = json.loads((ws.synthetic_dir / "pt-donors" / "run.json").read_text())
    (ws.synthetic_dir / "pt-donors" / "run.json").write_text(json.dumps(record | {"donor_images": []}))
    assert write_sheet(ws, "A", run="pt-donors", pdf=False, out=tmp_path / "d2.html").disclaimer == \
        DISCLAIMERS[frozenset({DONOR})]

    # the CLI prints the line it put on the sheet
    done = CliRunner().invoke(app, ["sheet", "-w", str(ws.root), "--condition", "A", "--run", "pt-donors", "--no-pdf"])
    assert done.exit_code == 0, done.output
    assert f"The sheet says: {DISCLAIMERS[frozenset({DONOR})]}" in " ".join(done.output.split())


def test_the_apps_sheet_button_says_the_same_of_a_deck_of_donor_faces(sheet_ws, tmp_path):
    pytest.importorskip("fastapi", reason="the teaching app needs the extra phenosynth[edu]")
    from fastapi.testclient import TestClient

    from tests.test_edu_app import EDUCATOR, csrf, make_app, sign_in

    ws, _ = sheet_ws
    donor_faces = _donor_run(ws, tmp_path)
    client = TestClient(make_app(ws))
    assert sign_in(client, EDUCATOR).status_code == 303
    r = client.post("/decks", data={"name": "Donors", "run": "pt-donors", "csrf_token": csrf(client)},
                    follow_redirects=False)
    deck_id = int(re.search(r"/decks/(\d+)", r.headers["location"]).group(1))
    assert client.post(f"/decks/{deck_id}/images", data={"image_id": donor_faces, "csrf_token": csrf(client)}
                       ).status_code == 200
    page = client.get(f"/decks/{deck_id}").text
    sheet_url = re.search(rf'href="(/decks/{deck_id}/conditions/\d+/sheet)"', page).group(1)
    sheet = client.get(sheet_url)
    assert sheet.status_code == 200 and DISCLAIMERS[frozenset({DONOR})] in sheet.text
    assert "not photographs of real people" not in sheet.text
