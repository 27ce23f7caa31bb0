"""Ingest: a folder mixing good photos with every kind of bad file."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from phenosynth.cli import app
from phenosynth.data import Workspace
from phenosynth.data.imageio import load_rgb
from phenosynth.data.ingest import LayoutOptions, ingest, match_labels

runner = CliRunner()


def _photo(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def messy_source(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    """A folder-layout source; returns (src, good files -> label, bad files -> expected reason)."""
    src = tmp_path / "src"
    (src / "Kabuki").mkdir(parents=True)
    (src / "Noonan" / "clinic" / "2019").mkdir(parents=True)
    (src / "Williams").mkdir()
    good: dict[str, str] = {}
    bad: dict[str, str] = {}

    def put(rel: str, data: bytes) -> None:
        (src / rel).write_bytes(data)

    for i in range(3):
        put(f"Kabuki/k{i}.png", _png_bytes(_photo(i)))
        good[f"Kabuki/k{i}.png"] = "Kabuki"
    put("Noonan/clinic/2019/nested.jpg", _png_bytes(_photo(10), "JPEG"))
    good["Noonan/clinic/2019/nested.jpg"] = "Noonan"
    put("Noonan/cmyk.jpg", _png_bytes(_photo(11).convert("CMYK"), "JPEG"))
    good["Noonan/cmyk.jpg"] = "Noonan"
    sixteen = Image.fromarray((np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 30))
    put("Noonan/sixteen.png", _png_bytes(sixteen))
    good["Noonan/sixteen.png"] = "Noonan"
    rgba = _photo(12).convert("RGBA")
    rgba.putalpha(128)
    put("Williams/alpha.png", _png_bytes(rgba))
    good["Williams/alpha.png"] = "Williams"
    put("Williams/palette.png", _png_bytes(_photo(13).convert("P")))
    good["Williams/palette.png"] = "Williams"
    put("Williams/gray.png", _png_bytes(_photo(14).convert("L")))
    good["Williams/gray.png"] = "Williams"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    put("Williams/rotated.jpg", _png_bytes(_photo(15, (60, 30)), "JPEG", exif=exif))
    good["Williams/rotated.jpg"] = "Williams"
    put("Williams/café_ñ_顔.png", _png_bytes(_photo(16)))
    good["Williams/café_ñ_顔.png"] = "Williams"
    # same bytes twice under one label: one kept, one duplicate
    put("Kabuki/k0_copy.png", (src / "Kabuki/k0.png").read_bytes())
    bad["Kabuki/k0_copy.png"] = "duplicate"
    # same bytes under two labels: both excluded
    conflict = _png_bytes(_photo(99))
    put("Kabuki/conflict.png", conflict)
    put("Williams/conflict.png", conflict)
    bad["Kabuki/conflict.png"] = bad["Williams/conflict.png"] = "label-conflict"
    put("Kabuki/empty.png", b"")
    bad["Kabuki/empty.png"] = "empty-file"
    put("Kabuki/truncated.png", _png_bytes(_photo(20, (200, 200)))[:3000])
    bad["Kabuki/truncated.png"] = "truncated-image"
    put("Kabuki/notes.txt", b"this is not an image\n")
    bad["Kabuki/notes.txt"] = "not-an-image"
    put("Kabuki/bomb.png", _png_bytes(Image.new("1", (10_000, 9_000))))
    bad["Kabuki/bomb.png"] = "decompression-bomb"
    put("Kabuki/.hidden.png", _png_bytes(_photo(21)))
    bad["Kabuki/.hidden.png"] = "hidden"
    put("stray.png", _png_bytes(_photo(22)))
    bad["stray.png"] = "not-in-class-folder"
    outside = tmp_path / "outside.png"
    outside.write_bytes(_png_bytes(_photo(23)))
    os.symlink(outside, src / "Kabuki" / "link_out.png")
    bad["Kabuki/link_out.png"] = "symlink"
    return src, good, bad


def test_ingest_messy_folder_takes_every_good_file_and_names_every_bad_one(messy_source, tmp_path):
    src, good, bad = messy_source
    ws_dir = tmp_path / "ws"
    res = runner.invoke(app, ["ingest", str(src), "-w", str(ws_dir)])
    assert res.exit_code == 0, res.output
    ws = Workspace.open(ws_dir)
    m = ws.load_manifest()
    taken = {Path(p).relative_to(src).as_posix(): lab for p, lab in zip(m["path"], m["label"])}
    assert taken == good
    assert (m["source"] == "real").all() and m["image_id"].is_unique
    report = pd.read_csv(ws.ingest_report_path)
    reasons = dict(zip(report["path"], report["reason"]))
    for path, reason in bad.items():
        assert reasons.get(path) == reason, (path, reasons.get(path))
    assert set(reasons) == set(bad)
    assert "10000x9000" in report.loc[report["path"] == "Kabuki/bomb.png", "detail"].item()
    assert "taken: new" in res.output and "skipped: label-conflict" in res.output


def test_decoding_converts_modes_and_applies_exif(messy_source, tmp_path):
    src, _, _ = messy_source
    rotated = load_rgb(src / "Williams/rotated.jpg")
    assert rotated.shape == (60, 30, 3)  # stored 60 wide x 30 high, displayed rotated
    for name in ("Noonan/cmyk.jpg", "Noonan/sixteen.png", "Williams/alpha.png", "Williams/palette.png"):
        arr = load_rgb(src / name)
        assert arr.dtype == np.uint8 and arr.shape[2] == 3
    assert load_rgb(src / "Noonan/sixteen.png").max() > 200  # 16-bit range mapped to 8 bits, not clipped to black
    alpha = load_rgb(src / "Williams/alpha.png").astype(int)
    assert alpha.min() >= 127  # 50 % alpha over white


def test_decompression_limit_is_per_call_and_leaves_pil_global_alone(tmp_path):
    from phenosynth.data.imageio import ImageDecodeError

    path = tmp_path / "big.png"
    path.write_bytes(_png_bytes(Image.new("1", (300, 200))))
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageDecodeError, match=r"300x200 = 60,000 pixels exceeds the limit of 59,999") as err:
        load_rgb(path, max_pixels=59_999)
    assert err.value.reason == "decompression-bomb"
    assert load_rgb(path, max_pixels=60_000).shape == (200, 300, 3)
    assert load_rgb(path, max_pixels=10 * before).shape == (200, 300, 3)  # a generous limit for this call only
    assert Image.MAX_IMAGE_PIXELS == before  # PIL's process-wide guard is not changed


def test_pils_own_hard_limit_is_a_decompression_bomb_too(tmp_path, monkeypatch):
    from phenosynth.data.imageio import ImageDecodeError

    path = tmp_path / "big.png"
    path.write_bytes(_png_bytes(Image.new("1", (300, 200))))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL errors above 2x this, whatever max_pixels says
    with pytest.raises(ImageDecodeError, match="Pillow's own limit") as err:
        load_rgb(path, max_pixels=10**9)
    assert err.value.reason == "decompression-bomb"


def test_ingest_is_idempotent(messy_source, tmp_path):
    src, good, _ = messy_source
    ws = Workspace.open(tmp_path / "ws", create=True)
    first = ingest(src, ws)
    m1, r1 = ws.load_manifest(), ws.ingest_report_path.read_text()
    second = ingest(src, ws)
    assert first.added == len(good) and second.added == 0 and second.already_present == len(good)
    pd.testing.assert_frame_equal(ws.load_manifest(), m1)
    assert ws.ingest_report_path.read_text() == r1


def test_conflict_policy_first_keeps_one_copy(messy_source, tmp_path):
    src, _, _ = messy_source
    ws = Workspace.open(tmp_path / "ws", create=True)
    ingest(src, ws, on_conflict="first")
    m = ws.load_manifest()
    kept = [p for p in m["path"] if p.endswith("conflict.png")]
    assert [Path(p).relative_to(src).as_posix() for p in kept] == ["Kabuki/conflict.png"]


def test_csv_layout_keeps_metadata_and_subjects(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(4):
        _photo(i).save(imgs / f"p{i}.png")
    table = pd.DataFrame(
        {
            "file": ["imgs/p0.png", "imgs/p1.png", "imgs/p2.png", "imgs/p3.png", "imgs/missing.png"],
            "syndrome": ["A", "A", "B", "B", "B"],
            "patient": ["s1", "s1", "s2", "s3", "s4"],
            "age": ["007", "3", "12", "5", "1"],
            "split": ["x", "x", "x", "x", "x"],
        }
    )
    table.to_csv(tmp_path / "meta.csv", index=False)
    ws_dir = tmp_path / "ws"
    res = runner.invoke(
        app,
        ["ingest", str(tmp_path / "meta.csv"), "-w", str(ws_dir), "--path-col", "file", "--label-col", "syndrome",
         "--subject-col", "patient"],
    )
    assert res.exit_code == 0, res.output
    ws = Workspace.open(ws_dir)
    m = ws.load_manifest().sort_values("path")
    assert m["subject_id"].tolist() == ["s1", "s1", "s2", "s3"]
    assert m["age"].tolist() == ["007", "3", "12", "5"]  # kept as they are (leading zero too)
    assert m["split_user"].tolist() == ["x"] * 4  # a metadata column named like a contract column is renamed
    report = pd.read_csv(ws.ingest_report_path)
    assert report.loc[0, "path"] == "imgs/missing.png" and report.loc[0, "reason"] == "missing-file"


def test_csv_layout_names_a_missing_column(tmp_path):
    pd.DataFrame({"path": ["a.png"], "diagnosis": ["A"]}).to_csv(tmp_path / "t.csv", index=False)
    res = runner.invoke(app, ["ingest", str(tmp_path / "t.csv"), "-w", str(tmp_path / "ws")])
    assert res.exit_code == 2
    assert "Column 'label' not found" in res.output and "--label-col" in res.output


def test_synthetic_ingest_matches_labels_and_reports_unknown(tmp_path):
    real = tmp_path / "real"
    for label in ("Kabuki_syndrome", "Noonan"):
        (real / label).mkdir(parents=True)
    _photo(1).save(real / "Kabuki_syndrome" / "a.png")
    _photo(2).save(real / "Noonan" / "b.png")
    syn = tmp_path / "syn"
    for label in ("kabuki syndrome", "NOONAN", "Unheard-of"):
        (syn / label).mkdir(parents=True)
    _photo(3).save(syn / "kabuki syndrome" / "s1.png")
    _photo(4).save(syn / "NOONAN" / "s2.png")
    _photo(5).save(syn / "Unheard-of" / "s3.png")
    _photo(2).save(syn / "NOONAN" / "copy_of_real.png")  # identical to a real photo
    ws = Workspace.open(tmp_path / "ws", create=True)
    ingest(real, ws)
    result = ingest(syn, ws, synthetic=True, generator="rdface-syn")
    assert result.unknown_labels == ["Unheard-of"]
    m = ws.load_manifest()
    synth = m[m["source"] == "synthetic"].sort_values("label")
    assert synth["label"].tolist() == ["Kabuki_syndrome", "Noonan"]
    assert (synth["generator"] == "rdface-syn").all() and (synth["split"] == "train").all()
    report = pd.read_csv(ws.ingest_report_path)
    assert dict(zip(report["path"], report["reason"])) == {
        "Unheard-of/s3.png": "unknown-label", "NOONAN/copy_of_real.png": "identical-to-real"}


def test_synthetic_ingest_without_real_images_is_refused(tmp_path):
    (tmp_path / "syn" / "A").mkdir(parents=True)
    _photo(1).save(tmp_path / "syn" / "A" / "x.png")
    res = runner.invoke(app, ["ingest", str(tmp_path / "syn"), "-w", str(tmp_path / "ws"), "--synthetic",
                              "--generator", "g"])
    assert res.exit_code == 2 and "ingest the real photos first" in res.output


def test_unknown_layout_lists_valid_ones(tmp_path):
    (tmp_path / "src").mkdir()
    res = runner.invoke(app, ["ingest", str(tmp_path / "src"), "-w", str(tmp_path / "ws"), "--layout", "fodler"])
    assert res.exit_code == 2
    assert "Unknown layout 'fodler'" in res.output and "folder" in res.output


def test_subject_regex_groups_photos_of_one_person(tmp_path):
    for i, name in enumerate(["s1_1.png", "s1_2.png", "s2_1.png"]):
        (tmp_path / "src" / "A").mkdir(parents=True, exist_ok=True)
        _photo(i).save(tmp_path / "src" / "A" / name)
    ws = Workspace.open(tmp_path / "ws", create=True)
    ingest(tmp_path / "src", ws, options=LayoutOptions(subject_regex=r"(s\d+)_\d+\.png$"))
    assert sorted(ws.load_manifest()["subject_id"]) == ["s1", "s1", "s2"]


def test_match_labels_normalises_case_and_punctuation():
    assert match_labels(["cornelia de lange", "x"], ["Cornelia-de-Lange"]) == {
        "cornelia de lange": "Cornelia-de-Lange", "x": None}


def test_commands_without_a_workspace_say_what_to_do(tmp_path):
    res = runner.invoke(app, ["split", "-w", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "does not exist" in res.output and "phenosynth ingest" in res.output


# --- degenerate input (issue 9, item 5) ------------------------------------------------------------------------------


def test_ingest_taking_no_image_exits_2_and_leaves_no_new_workspace(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    texts = tmp_path / "texts" / "Williams"
    texts.mkdir(parents=True)
    (texts / "notes.txt").write_text("not a photo")
    (texts / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    for src, said in ((empty, "holds no files"), (texts.parent, "looked at 2 file(s), skipped all of them"),
                      (tmp_path / "typo", "does not exist")):
        ws_path = tmp_path / f"ws-{src.name}"
        res = runner.invoke(app, ["ingest", str(src), "-w", str(ws_path)])
        assert res.exit_code == 2, res.output
        assert said in " ".join(res.output.split())
        assert not ws_path.exists()  # no empty workspace folder behind


def test_ingest_taking_no_image_into_an_existing_workspace_keeps_it_and_reports_why(messy_source, tmp_path):
    from phenosynth.data.ingest import NothingIngestedError

    src, good, _ = messy_source
    ws = Workspace.open(tmp_path / "ws", create=True)
    ingest(src, ws)
    manifest = ws.load_manifest()
    junk = tmp_path / "junk" / "Williams"
    junk.mkdir(parents=True)
    (junk / "a.txt").write_text("text")
    with pytest.raises(NothingIngestedError, match=r"No image taken from .*junk: looked at 1 file\(s\)"):
        ingest(junk.parent, ws)
    pd.testing.assert_frame_equal(ws.load_manifest(), manifest)  # nothing lost
    report = pd.read_csv(ws.ingest_report_path)
    assert (report["source"] == str(junk.parent)).sum() == 1  # the reason is on record


def test_split_on_one_class_is_a_user_error(tmp_path):
    one = tmp_path / "one" / "Williams"
    one.mkdir(parents=True)
    for i in range(6):
        _photo(i).save(one / f"p{i}.png")
    ws_path = tmp_path / "ws"
    assert runner.invoke(app, ["ingest", str(one.parent), "-w", str(ws_path)]).exit_code == 0
    res = runner.invoke(app, ["split", "-w", str(ws_path)])
    assert res.exit_code == 2
    assert "1 class only (Williams); a classifier needs at least 2" in " ".join(res.output.split())
    assert "Top-1" not in res.output
