"""The CLI contract and workspace integrity: the writer lock, file modes, errors, warnings, summaries, README
options."""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import phenosynth
from phenosynth.cli import app
from phenosynth.data.ingest import ingest
from phenosynth.data.workspace import Workspace, atomic_write
from phenosynth.errors import PhenosynthError

runner = CliRunner()
SRC_ROOT = str(Path(phenosynth.__file__).resolve().parents[1])
README = Path(__file__).resolve().parents[1] / "README.md"


def make_source(root: Path, tag: str, classes: int = 3, per_class: int = 12) -> int:
    """A folder layout of distinct random PNGs (one sub-folder per class); returns the number of images."""
    for c in range(classes):
        folder = root / f"cond{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            rng = np.random.default_rng([ord(ch) for ch in tag] + [c, i])
            Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(folder / f"{tag}{i:03d}.png")
    return classes * per_class


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([SRC_ROOT, os.environ.get("PYTHONPATH", "")])}


def start_holder(ws_root: Path, command: str, seconds: float) -> subprocess.Popen:
    """Another process that takes the workspace lock, says 'held', and keeps it for ``seconds``."""
    script = textwrap.dedent(f"""
        import sys, time
        from phenosynth.data.workspace import Workspace
        with Workspace.open({str(ws_root)!r}).lock({command!r}):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A workspace holding 12 ingested real images (3 classes x 4)."""
    make_source(tmp_path / "photos", "p", per_class=4)
    ws = Workspace.open(tmp_path / "ws", create=True)
    ingest(tmp_path / "photos", ws, workers=1)
    return ws


def lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.strip()]


# --- item 3: the workspace lock ---------------------------------------------------------------------------------------


def test_two_concurrent_ingests_keep_every_image(tmp_path):
    n_a = make_source(tmp_path / "a", "a", per_class=20)
    n_b = make_source(tmp_path / "b", "b", per_class=20)
    go = tmp_path / "go"
    procs = []
    for tag in ("a", "b"):
        ready = tmp_path / f"ready-{tag}"
        # Import first, then start both ingests at the same moment (the race that lost one of them).
        script = textwrap.dedent(f"""
            import os, sys, time
            from phenosynth.cli import main
            open({str(ready)!r}, "w").close()
            while not os.path.exists({str(go)!r}):
                time.sleep(0.002)
            sys.argv = ["phenosynth", "ingest", {str(tmp_path / tag)!r}, "-w", {str(tmp_path / "ws")!r}]
            main()
        """)
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{t}").exists() for t in "ab") and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    manifest = Workspace.open(tmp_path / "ws").load_manifest()
    assert len(manifest) == n_a + n_b == 120
    assert sorted(Path(p).name[0] for p in manifest["path"]).count("a") == n_a
    flat = [" ".join(o.split()) for o in outputs]  # rich wraps long lines at the terminal width
    assert sum("The manifest now holds 120 images" in o for o in flat) == 1  # the later of the two
    assert sum("The manifest now holds 60 images" in o for o in flat) == 1


def test_lock_timeout_names_the_holder(ws):
    holder = start_holder(ws.root, "phenosynth ingest photos -w ws", 60)
    try:
        t0 = time.monotonic()
        res = runner.invoke(app, ["split", "-w", str(ws.root), "--lock-timeout", "0.5"])
        waited = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert res.exit_code == 2, res.output
    assert f"is locked by pid {holder.pid} (phenosynth ingest photos -w ws) since " in res.output
    assert "gave up after 0.5 s (--lock-timeout)" in res.output
    assert "Traceback" not in res.output
    assert 0.5 <= waited < 10
    assert ws.load_manifest()["split"].isna().all()  # nothing was written


def test_library_writer_waits_for_the_lock_and_says_who_holds_it(ws, tmp_path, caplog):
    make_source(tmp_path / "more", "m", per_class=2)
    holder = start_holder(ws.root, "phenosynth faces -w ws", 1.5)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="phenosynth.data.workspace"):
        result = ingest(tmp_path / "more", ws, workers=1)  # no CLI: the library takes the lock itself
    waited = time.monotonic() - t0
    holder.wait()
    assert waited >= 1.0
    assert result.added == 6 and len(ws.load_manifest()) == 18
    assert f"held by pid {holder.pid} (phenosynth faces -w ws) since" in caplog.text


def test_lock_is_reentrant_and_readers_do_not_wait(ws):
    with ws.lock("outer", timeout=0):
        with ws.lock("inner", timeout=0):  # nested use in one process (a study that generates) does not deadlock
            assert ws.lock_holder().command == "outer"
        res = runner.invoke(app, ["split", "-w", str(ws.root), "--folds", "2", "--lock-timeout", "0"])  # reentrant
        assert res.exit_code == 0, res.output
        assert ws.lock_holder().pid == os.getpid()
    assert ws.lock_holder() is None
    holder = start_holder(ws.root, "writer", 60)
    try:
        res = runner.invoke(app, ["manifest", "-w", str(ws.root)])  # a reader does not take the lock
    finally:
        holder.kill()
        holder.wait()
    assert res.exit_code == 0 and "12" in res.output


# --- item 9: file modes follow the umask ------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_follow_the_umask(tmp_path, fakes, umask, mode):
    from phenosynth.study.runner import run_study

    make_source(tmp_path / "photos", "p", per_class=2)
    old = os.umask(umask)
    try:
        res = runner.invoke(app, ["ingest", str(tmp_path / "photos"), "-w", str(tmp_path / "ws")])
        assert res.exit_code == 0, res.output
        ws = Workspace.open(tmp_path / "ws")
        spec = {"backbones": ["shape68"], "regimes": {"real": True}, "folds": 2, "seeds": [0]}
        run_study(ws, spec, "r", executor="serial", cell_fn="fake_cells:score", build_report=False)
        atomic_write(tmp_path / "x.csv", lambda p: pd.DataFrame({"a": [1]}).to_csv(p))
    finally:
        os.umask(old)
    for path in (ws.manifest_path, ws.ingest_report_path, ws.runs_dir / "r" / "results.csv",
                 ws.runs_dir / "r" / "config.yaml", tmp_path / "x.csv"):
        assert oct(path.stat().st_mode & 0o777) == oct(mode), path


# --- item 10: errors, warnings, progress, summaries -------------------------------------------------------------------


def _raise(exc: BaseException):
    def fake(*args, **kwargs):
        raise exc

    return fake


def test_unexpected_error_prints_one_line_and_the_log_file(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr("phenosynth.data.split.split", _raise(RuntimeError("boom in the splitter")))
    res = runner.invoke(app, ["split", "-w", str(ws.root)])
    assert res.exit_code == 1
    assert len(lines(res.output)) == 1, res.output
    assert "RuntimeError: boom in the splitter" in res.output and "Traceback" not in res.output
    logs = list((tmp_path / "state" / "phenosynth" / "logs").glob("*.log"))
    assert len(logs) == 1 and str(logs[0]) in res.output
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom in the splitter" in text

    res = runner.invoke(app, ["--debug", "split", "-w", str(ws.root)])
    assert res.exit_code == 1
    assert "Traceback (most recent call last)" in res.output and "RuntimeError: boom in the splitter" in res.output


def test_full_disk_names_the_folder_without_a_traceback(ws, monkeypatch):
    target = ws.root / "manifest.parquet"
    monkeypatch.setattr("phenosynth.data.split.split",
                        _raise(OSError(errno.ENOSPC, "No space left on device", str(target))))
    res = runner.invoke(app, ["split", "-w", str(ws.root)])
    assert res.exit_code == 2
    assert lines(res.output) == [
        f"Error: No space left on the device while writing {target}. Free some space in {ws.root} (or its disk) "
        "and run the command again."
    ]


def test_repeated_warnings_are_printed_once_with_a_count(ws, monkeypatch):
    def noisy(*args, **kwargs):
        for _ in range(37):
            warnings.warn("fold 3 has a single class", UserWarning, stacklevel=1)
        for i in range(5):
            logging.getLogger("phenosynth.data.split").warning("slow disk")
        logging.getLogger("phenosynth.data.split").warning("only once")
        raise PhenosynthError("stopped here")

    monkeypatch.setattr("phenosynth.data.split.split", noisy)
    res = runner.invoke(app, ["split", "-w", str(ws.root)])
    assert res.exit_code == 2
    out = res.output
    assert out.count("fold 3 has a single class") == 2  # printed once, then once in the summary
    assert "warning repeated 37 times in all:" in out and "UserWarning: fold 3 has a single class" in out
    assert out.count("slow disk") == 2 and "warning repeated 5 times in all: slow disk" in out
    assert out.count("only once") == 1
    assert "Error: stopped here" in out


def test_no_empty_progress_bar_before_an_error(ws, monkeypatch):
    monkeypatch.setattr("phenosynth.cli.faces.run_face_pass", _raise(PhenosynthError("no images to look at")))
    res = runner.invoke(app, ["faces", "-w", str(ws.root)])
    assert res.exit_code == 2
    assert lines(res.output) == ["Error: no images to look at"]


def test_stage_summaries_end_with_the_next_command(tmp_path):
    make_source(tmp_path / "photos", "p", per_class=4)
    ws = str(tmp_path / "ws")
    res = runner.invoke(app, ["ingest", str(tmp_path / "photos"), "-w", ws])
    assert res.exit_code == 0, res.output
    assert lines(res.output)[-1] == f"Next: phenosynth split -w {ws}"
    res = runner.invoke(app, ["split", "-w", ws, "--folds", "2"])
    assert res.exit_code == 0, res.output
    assert lines(res.output)[-1] == f"Next: phenosynth faces -w {ws}"


# --- item 10: every option the README shows exists -------------------------------------------------------------------


def readme_options(text: str, commands: set[str]) -> list[tuple[str | None, str, str]]:
    """(command, option, context) for every ``--option`` in the README, attributed to the nearest command named
    before it in the same code line / paragraph / list item (``phenosynth [--root-option] CMD`` or a backquoted
    ``CMD``), else to the section's command (a heading that is a command's name), else None (root options too)."""
    cmd_re = "|".join(sorted(commands, key=len, reverse=True))
    token = re.compile(rf"(?:\bphenosynth\s+(?:-[\w-]+\s+)*|`)(?P<cmd>{cmd_re})(?=[\s`]|$)"
                       r"|(?<![\w-])(?P<opt>--[a-z][a-z0-9-]*)")
    found = []
    section: str | None = None
    for block in re.split(r"\n\s*\n|\n(?=\s*- )|\n(?=    \S)", text):
        heading = re.match(r"#+\s+(\w+)\s*$", block.strip())
        if block.lstrip().startswith("#"):
            section = heading.group(1).lower() if heading and heading.group(1).lower() in commands else None
            continue
        current = section
        for m in token.finditer(block):
            if m.group("cmd"):
                found += [(None, o, block.strip()[:80]) for o in re.findall(r"--[a-z][a-z0-9-]*", m.group(0))]
                current = m.group("cmd")
            else:
                found.append((current, m.group("opt"), block.strip()[:80]))
    return found


def test_every_option_in_the_readme_exists():
    group = typer.main.get_command(app)
    commands = {name: cmd for name, cmd in group.commands.items()}
    opts = {name: {o for p in cmd.params if not getattr(p, "hidden", False) for o in (*p.opts, *p.secondary_opts)}
            for name, cmd in commands.items()}
    root = {o for p in group.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    anywhere = root.union(*opts.values())
    found = readme_options(README.read_text(encoding="utf-8"), set(commands))
    assert len(found) >= 20  # the parser sees the README's options
    assert ("train", "--backbone") in {(c, o) for c, o, _ in found}
    missing = [(c, o, ctx) for c, o, ctx in found if o not in (opts[c] | root if c else anywhere)]
    assert missing == []


def test_readme_parser_catches_an_option_a_command_lacks():
    text = ("### Split\n\n`phenosynth split -w WS [--folds 5]`\n\n### Faces, and more\n\n"
            "- `rank --representation X`: then `train --selection top` (or `--per-class`).\n- Trainers (`--mode`).\n"
            "- `study SPEC` (examples: `demo.yaml`; `--resume`)\n"
            "\n    phenosynth --debug faces -w WS --detector mtcnn\n")
    found = [(c, o) for c, o, _ in readme_options(text, {"split", "rank", "train", "faces", "study", "demo"})]
    assert found == [("split", "--folds"), ("rank", "--representation"), ("train", "--selection"),
                     ("train", "--per-class"), (None, "--mode"), ("study", "--resume"), (None, "--debug"),
                     ("faces", "--detector")]
