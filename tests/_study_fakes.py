"""Source of a fake cell function for the study tests, written into tmp_path as an importable module, so that
spawned worker processes and Ray workers can import it by name (``fake_cells:score``)."""

FAKE_CELLS = '''
import hashlib
import os
import signal
from pathlib import Path


def _u(key, salt):
    h = hashlib.sha256(f"{key}|{salt}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def score(ws, spec, cell):
    """Deterministic numbers from the cell's identity; top-k monotone in k."""
    key = cell.key
    top1 = 0.1 + 0.5 * _u(key, 1)
    top5 = min(1.0, top1 + 0.3 * _u(key, 5))
    top10 = min(1.0, top5 + 0.1 * _u(key, 10))
    return {"top1": top1, "top5": top5, "top10": top10, "top30": min(1.0, top10 + 0.05),
            "macro_f1": top1 * 0.8, "n_train": 10 + cell.n_synthetic, "n_test": 40, "pid": 0}


def crash_after(ws, spec, cell):
    """Like score, but the process kills itself (SIGKILL, like kill -9) once CRASH_AFTER cells are stored."""
    run_dir = Path(os.environ["FAKE_RUN_DIR"])
    if len(list((run_dir / "cells").glob("*.json"))) >= int(os.environ["CRASH_AFTER"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return score(ws, spec, cell)


def fail_on_mixed(ws, spec, cell):
    if cell.regime == "mixed" and not os.environ.get("FAKE_FIXED"):
        raise ValueError("mixed is broken")
    return score(ws, spec, cell)


def with_pid(ws, spec, cell):
    """Like score, plus the worker's pid. Each worker checks in (a file named by its pid in FAKE_SYNC_DIR) and waits
    until FAKE_WORKERS workers have checked in, so every worker of the pool is known to run a cell: no timing guess."""
    import time

    sync = Path(os.environ["FAKE_SYNC_DIR"])
    sync.mkdir(parents=True, exist_ok=True)
    (sync / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(sync.iterdir())) < int(os.environ["FAKE_WORKERS"]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {sorted(p.name for p in sync.iterdir())} of {os.environ['FAKE_WORKERS']} workers ran")
        time.sleep(0.01)
    row = score(ws, spec, cell)
    row["pid"] = os.getpid()
    return row
'''
