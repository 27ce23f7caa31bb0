"""VLM phenotype reports: the OpenAI-compatible client against a small server on loopback (answers, timeouts, garbage,
the cache, the API key), the report similarities against brute force, the sentence-embedding path with a tiny model
built in code, and the audit end to end (per-image failures recorded, test photos never sent)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import combinations
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from phenosynth.audit import report_similarity as rs
from phenosynth.audit import vlm as V
from phenosynth.errors import PhenosynthError
from tests.test_audit import PIXELS, _pixel_embedder, audited_ws  # noqa: F401  (fixtures of the audit's workspace)

CONDITION_TEXT = {
    "A": "forehead: broad high. eyes: upslanting palpebral fissures, epicanthic folds. nose: flat nasal bridge. "
         "philtrum and mouth: protruding tongue. chin: small. ears: small low-set. overall gestalt: flat profile",
    "B": "forehead: bitemporal narrowing. eyes: long palpebral fissures, arched eyebrows. nose: prominent tip. "
         "philtrum and mouth: long smooth philtrum, thin upper lip. chin: pointed. ears: large cupped. overall "
         "gestalt: long narrow face",
    "C": "forehead: frontal bossing. eyes: hypertelorism, downslanting. nose: anteverted nares. philtrum and mouth: "
         "wide mouth, full lips. chin: retrognathia. ears: posteriorly rotated. overall gestalt: coarse features",
}
SUBJECT_NOTE = ["freckles", "glasses", "beard", "scar", "tan", "mole", "dimples", "wrinkles"]

Reply = tuple[str, object]  # (kind, payload): ok text | sleep seconds | not-json | no-choices | http500


class FakeVLM:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 (a free port) in a thread. ``reply(data_url)``
    decides each answer; every request's headers and body are recorded."""

    def __init__(self, reply: Callable[[str], Reply]) -> None:
        self.reply = reply
        self.requests: list[tuple[dict[str, str], dict]] = []
        self.in_flight = self.most_in_flight = 0
        lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    fake.requests.append((dict(self.headers), body))
                    fake.in_flight += 1
                    fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
                try:
                    self._answer(body)
                finally:
                    with lock:
                        fake.in_flight -= 1

            def _answer(self, body: dict) -> None:
                kind, payload = fake.reply(body["messages"][0]["content"][1]["image_url"]["url"])
                if kind == "sleep":
                    time.sleep(float(payload))  # type: ignore[arg-type]
                    kind, payload = "ok", "too late"
                if kind == "http500":
                    self.send_error(500, "model crashed")
                    return
                out = {"not-json": b"<html>502 bad gateway</html>",
                       "no-choices": json.dumps({"object": "error", "message": "model not loaded"}).encode(),
                       "ok": json.dumps({"id": "x", "object": "chat.completion", "model": body["model"], "choices": [
                           {"index": 0, "message": {"role": "assistant", "content": payload},
                            "finish_reason": "stop"}]}).encode()}[kind]
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeVLM:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def urls(self) -> list[str]:
        return [b["messages"][0]["content"][1]["image_url"]["url"] for _, b in self.requests]


def _image(tmp_path: Path, name: str, value: int) -> Path:
    from PIL import Image

    path = tmp_path / f"{name}.png"
    Image.fromarray(np.full((40, 30, 3), value, np.uint8)).save(path)
    return path


def _config(url: str, **kw: object) -> V.VLMConfig:
    return V.VLMConfig(url, **{"model": "tiny-vlm", "timeout": 0.5, "retries": 1, "backoff": 0.0, "workers": 3, **kw})


# --- the client -----------------------------------------------------------------------------------------------------


def test_client_sends_the_openai_vision_request_with_the_key_from_the_named_variable_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_VLM_KEY", "sk-test-123")
    img = _image(tmp_path, "face", 120)
    with FakeVLM(lambda url: ("ok", "eyes: wide")) as server:
        client = V.VLMClient(_config(server.url, key_env="MY_VLM_KEY"), tmp_path / "cache")
        first = client.describe("img1", img)
        assert (first.status, first.text, first.cached, first.attempts) == ("ok", "eyes: wide", False, 1)
        headers, body = server.requests[0]
        assert headers["Authorization"] == "Bearer sk-test-123"
        assert body["model"] == "tiny-vlm" and body["temperature"] == 0
        text, image = body["messages"][0]["content"]
        assert body["messages"][0]["role"] == "user" and text == {"type": "text", "text": V.PROMPT}
        assert all(region in V.PROMPT for region in V.REGIONS)
        assert image["type"] == "image_url" and image["image_url"]["url"] == V.image_data_url(img)
        assert image["image_url"]["url"].startswith("data:image/png;base64,")

        again = client.describe("img1", img)  # the cache answers: no second request
        assert (again.status, again.text, again.cached) == ("ok", "eyes: wide", True) and len(server.requests) == 1
        cached = tmp_path / "cache" / f"{V.cache_key('img1', 'tiny-vlm')}.json"
        assert json.loads(cached.read_text())["text"] == "eyes: wide"
        assert "sk-test-123" not in cached.read_text()
        # another model or another prompt is another question
        assert V.cache_key("img1", "other-model") != V.cache_key("img1", "tiny-vlm")
        assert V.cache_key("img1", "tiny-vlm", V.PROMPT, "2") != V.cache_key("img1", "tiny-vlm")
        V.VLMClient(_config(server.url, model="other-model"), tmp_path / "cache").describe("img1", img)
        assert len(server.requests) == 2

        monkeypatch.delenv("MY_VLM_KEY")
        V.VLMClient(_config(server.url + "/v1"), tmp_path / "cache2").describe("img1", img)
        assert "Authorization" not in server.requests[-1][0]


@pytest.mark.parametrize("kind, status, error, requests", [
    ("sleep", "timeout", "no answer within 0.5 s", 2),  # retried once, then recorded
    ("http500", "http-error", "HTTP 500", 2),
    ("not-json", "garbage", "not JSON", 1),  # a garbage answer is not retried
    ("no-choices", "garbage", "JSON without choices", 1),
])
def test_a_failed_request_is_recorded_with_its_reason_and_never_cached(tmp_path, kind, status, error, requests):
    img = _image(tmp_path, "face", 7)
    with FakeVLM(lambda url: (kind, 0.8)) as server:
        client = V.VLMClient(_config(server.url), tmp_path / "cache")
        t0 = time.perf_counter()
        answer = client.describe("img1", img)
        assert answer.status == status and error in answer.error and answer.text is None
        assert answer.attempts == requests == len(server.requests)
        assert time.perf_counter() - t0 < 3
        assert not list((tmp_path / "cache").glob("*.json"))
        client.describe("img1", img)  # asked again next time
        assert len(server.requests) == 2 * requests


def test_describe_many_keeps_a_few_requests_in_flight_and_records_each_failure(tmp_path):
    images = {f"i{k}": _image(tmp_path, f"i{k}", 10 * k) for k in range(8)}
    bad = V.image_data_url(images["i2"])

    def reply(url: str) -> Reply:
        time.sleep(0.1)
        return ("not-json", None) if url == bad else ("ok", "nose: small")

    with FakeVLM(reply) as server:
        answers = V.VLMClient(_config(server.url, workers=3), tmp_path / "c").describe_many(images)
    assert {i: a.status for i, a in answers.items()} == {**{i: "ok" for i in images}, "i2": "garbage"}
    assert len(server.requests) == 8 and 1 < server.most_in_flight <= 3


def test_config_errors_are_user_errors():
    with pytest.raises(PhenosynthError, match="--vlm-model is required"):
        V.VLMConfig("http://127.0.0.1:8000", "")
    with pytest.raises(PhenosynthError, match="http"):
        V.VLMConfig("127.0.0.1:8000", "m")
    with pytest.raises(PhenosynthError, match="at least 1"):
        V.VLMConfig("http://127.0.0.1:8000", "m", max_images=0)
    assert V.VLMConfig("http://h/v1/chat/completions", "m").endpoint == "http://h/v1/chat/completions"
    assert "sk-" not in json.dumps(V.VLMConfig("http://h", "m").settings())


# --- report similarity ----------------------------------------------------------------------------------------------


def _hand_made_reports() -> pd.DataFrame:
    rows = []
    for label in "ABC":
        for s in range(3):
            for k in range(2):
                rows.append({"image_id": f"{label}{s}_{k}", "label": label, "subject": f"{label}{s}",
                             "synthetic": False, "parents": None,
                             "text": f"{CONDITION_TEXT[label]}. note: {SUBJECT_NOTE[s + k]}"})
        for k in range(2):  # synthetic: the condition's words, another note; made from the first real photo
            rows.append({"image_id": f"syn{label}{k}", "label": label, "subject": f"syn{label}{k}", "synthetic": True,
                         "parents": [f"{label}0_0"], "text": f"{CONDITION_TEXT[label]}. note: smooth skin"})
    return pd.DataFrame(rows)


def _brute_force(reports: pd.DataFrame, S: np.ndarray, cond: str) -> tuple[float, float, float, int, int, int]:
    r = reports.reset_index(drop=True)
    syn_real, same, other = [], [], []
    for i, j in combinations(range(len(r)), 2):
        for a, b in ((i, j), (j, i)):
            A, B = r.loc[a], r.loc[b]
            if A.label != cond:
                continue
            if A.synthetic and not B.synthetic and B.label == cond and B.image_id not in A.parents:
                syn_real.append(S[a, b])
            if not A.synthetic and not B.synthetic and B.label == cond and A.subject != B.subject and a < b:
                same.append(S[a, b])
            if not A.synthetic and not B.synthetic and B.label != cond:
                other.append(S[a, b])
    return (float(np.mean(syn_real)), float(np.mean(same)), float(np.mean(other)), len(syn_real), len(same),
            len(other))


def test_tfidf_similarity_matches_brute_force_and_same_condition_beats_other_condition():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    reports = _hand_made_reports()
    S = cosine_similarity(TfidfVectorizer(stop_words="english", sublinear_tf=True).fit_transform(reports["text"]))
    rows = {r.condition: r for r in rs.similarity_tables(reports)}
    assert list(rows) == ["A", "B", "C", "overall"] and {r.method for r in rows.values()} == {"tfidf"}
    for cond in "ABC":
        row = rows[cond]
        sr, same, other, n_sr, n_same, n_other = _brute_force(reports, S, cond)
        assert (row.synthetic_real, row.real_real_same, row.real_real_other) == pytest.approx((sr, same, other))
        # 2 synthetic x 6 real, less the parent; 15 pairs less 3 same-subject pairs; 6 x 12 real of other conditions
        assert (n_sr, n_same, n_other) == (row.n_pairs_synthetic_real, row.n_pairs_same, row.n_pairs_other)
        assert (row.n_pairs_synthetic_real, row.n_pairs_same, row.n_pairs_other) == (10, 12, 72)
        assert (row.n_synthetic, row.n_real) == (2, 6)
        assert row.synthetic_real > row.real_real_other + 0.3 and row.real_real_same > row.real_real_other + 0.3
    overall = rows["overall"]
    assert (overall.n_pairs_synthetic_real, overall.n_pairs_same, overall.n_pairs_other) == (30, 36, 108)
    assert overall.synthetic_real == pytest.approx(np.mean([rows[c].synthetic_real for c in "ABC"]))

    # reports that say nothing of the condition: synthetic<->real falls to the other-condition floor
    shuffled = reports.copy()
    syn = shuffled["synthetic"].to_numpy()
    shuffled.loc[syn, "text"] = "eyes: two. nose: one. mouth: one. note: smooth skin"
    flat = {r.condition: r for r in rs.similarity_tables(shuffled)}
    assert all(flat[c].synthetic_real < flat[c].real_real_same - 0.3 for c in "ABC")


@pytest.fixture(scope="module")
def tiny_sentence_model(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden size 16) over the test reports' words, mean pooling, saved as a sentence-transformers
    model folder: built in code, nothing downloaded."""
    pytest.importorskip("sentence_transformers")
    import re

    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny_st")
    words = sorted({w for t in [*CONDITION_TEXT.values(), *SUBJECT_NOTE, "smooth skin"]
                    for w in re.findall(r"[a-z]+|[^\sa-z]", t.lower())})
    (root / "bert").mkdir()
    (root / "bert" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    BertTokenizerFast(vocab_file=str(root / "bert" / "vocab.txt")).save_pretrained(root / "bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=128)).save_pretrained(root / "bert")
    bert = models.Transformer(str(root / "bert"), max_seq_length=128)
    SentenceTransformer(modules=[bert, models.Pooling(16, "mean")], device="cpu").save(str(root / "st"))
    return root / "st"


def test_the_sentence_embedding_path_with_a_tiny_model_built_in_code(tiny_sentence_model):
    from sentence_transformers import SentenceTransformer

    reports = _hand_made_reports()
    encode = rs.load_sentence_embedder(tiny_sentence_model)
    rows = rs.similarity_tables(reports, encode)
    emb = {r.condition: r for r in rows if r.method == "embedding"}
    assert list(emb) == ["A", "B", "C", "overall"] and len(rows) == 8
    E = SentenceTransformer(str(tiny_sentence_model), device="cpu").encode(reports["text"].tolist())
    E = E / np.linalg.norm(E, axis=1, keepdims=True)
    for cond in "ABC":
        sr, same, other, *counts = _brute_force(reports, E @ E.T, cond)
        row = emb[cond]
        assert (row.synthetic_real, row.real_real_same, row.real_real_other) == pytest.approx((sr, same, other),
                                                                                                abs=1e-5)
        assert counts == [row.n_pairs_synthetic_real, row.n_pairs_same, row.n_pairs_other]
    assert np.allclose(np.diag(rs.embedding_similarity(reports["text"].tolist(), encode)), 1.0)
    again = rs.similarity_tables(reports, rs.load_sentence_embedder(tiny_sentence_model))
    assert [r.synthetic_real for r in again] == [r.synthetic_real for r in rows]  # deterministic


def test_a_missing_sentence_model_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(PhenosynthError, match=f"not found: {tmp_path / 'nope'}"):
        rs.load_sentence_embedder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PhenosynthError, match=str(tmp_path / "empty")):
        rs.load_sentence_embedder(tmp_path / "empty")


def test_balanced_subset_takes_conditions_in_turn():
    df = pd.DataFrame({"image_id": [f"i{k}" for k in range(9)], "label": list("AAAAAABBC")})
    assert V.balanced_subset(df, 4)["label"].tolist() == ["A", "B", "C", "A"]
    assert V.balanced_subset(df, None) is df and len(V.balanced_subset(df, 100)) == 9


# --- the audit end to end -------------------------------------------------------------------------------------------


def _replies(ws, fail: dict[str, str]) -> tuple[dict[str, Reply], set[str]]:
    """data URL -> reply for every image of the workspace (the condition's text, a note per subject); and the data
    URLs of the real test photos."""
    m = ws.load_manifest()
    replies, test_urls = {}, set()
    for r in m.itertuples():
        url = V.image_data_url(ws.resolve(str(r.path)))
        note = "smooth skin" if r.source == "synthetic" else SUBJECT_NOTE[int(str(r.subject_id)[1:]) * 2 + len(url) % 2]
        replies[url] = {"sleep": ("sleep", 0.8), "not-json": ("not-json", None), "no-choices": ("no-choices", None)}.get(
            fail.get(str(r.image_id), ""), ("ok", f"{CONDITION_TEXT[r.label]}. note: {note}"))
        if r.source == "real" and r.split == "test":
            test_urls.add(url)
    return replies, test_urls


def test_audit_records_vlm_failures_per_image_compares_reports_and_never_sends_test_photos(audited_ws, tmp_path,
                                                                                          tiny_sentence_model):
    from typer.testing import CliRunner

    from phenosynth.audit.privacy import AUDIT_COLUMNS, audit
    from phenosynth.cli import app

    ws, _, _ = audited_ws
    m = ws.load_manifest()
    others = sorted(m.loc[m["generator"] == "other", "image_id"])
    fail = {others[0]: "sleep", others[1]: "not-json", others[2]: "no-choices"}
    replies, test_urls = _replies(ws, fail)
    with FakeVLM(lambda url: replies[url]) as server:
        res = audit(ws, "others", embedder=PIXELS, n_boot=20, kid_backbone=None, probe_backbone=None,
                    vlm=_config(server.url))
        first = len(server.requests)
        assert not test_urls & set(server.urls())  # the held-out test photos are never sent
        assert first == 18 + 15 + 2 + 1 + 1  # real training photos, ok synthetic images, the failures (timeout twice)

        frame = pd.read_parquet(ws.root / "audit" / "others" / "audit.parquet").set_index("image_id")
        assert frame.columns.tolist() == [c for c in AUDIT_COLUMNS if c != "image_id"] + V.VLM_COLUMNS
        assert frame.at[others[0], "vlm_status"] == "timeout" and "0.5 s" in frame.at[others[0], "vlm_error"]
        assert frame.at[others[1], "vlm_status"] == "garbage" and "not JSON" in frame.at[others[1], "vlm_error"]
        assert frame.at[others[2], "vlm_error"] == "JSON without choices"
        assert (frame.loc[others[3:], "vlm_status"] == "ok").all()
        assert frame.at[others[3], "vlm_report"].startswith(CONDITION_TEXT[frame.at[others[3], "label"]])

        rep = res.runs[0].reports
        assert rep.synthetic_status == {"garbage": 2, "ok": 15, "timeout": 1} and rep.real_status == {"ok": 18}
        rows = {r.condition: r for r in rep.similarity}
        assert list(rows) == ["A", "B", "C", "overall"]
        n_ok = frame[frame["vlm_status"] == "ok"].groupby("label").size()
        for cond in "ABC":  # 6 real training photos of 3 patients per condition; a synthetic image's parent is left out
            r = rows[cond]
            assert (r.n_synthetic, r.n_real) == (n_ok[cond], 6)
            assert (r.n_pairs_synthetic_real, r.n_pairs_same, r.n_pairs_other) == (5 * n_ok[cond], 12, 72)
            assert r.synthetic_real > r.real_real_other + 0.3 and r.real_real_same > r.real_real_other + 0.3
        summary = json.loads((ws.root / "audit" / "others" / "summary.json").read_text())
        assert summary["reports"]["similarity"][0]["synthetic_real"] == pytest.approx(rows["A"].synthetic_real)
        assert summary["settings"]["vlm"]["model"] == "tiny-vlm"
        assert summary["settings"]["vlm"]["key_env"] == "PHENOSYNTH_VLM_API_KEY"
        page = (ws.root / "audit" / "others" / "audit.html").read_text()
        assert "VLM phenotype reports (tiny-vlm" in page and "garbage 2, ok 15, timeout 1" in page

        # the CLI: cached answers are not asked again, the failures are; the table and the embedding rows
        result = CliRunner().invoke(app, [
            "audit", "-w", str(ws.root), "--run", "others", "--embedder", PIXELS, "--bootstrap", "20",
            "--kid-backbone", "none", "--probe-backbone", "none", "--vlm-url", server.url, "--vlm-model", "tiny-vlm",
            "--vlm-embedder", str(tiny_sentence_model)])
        assert result.exit_code == 0, result.output
        assert len(server.requests) - first == 3  # only the three failed images (the CLI's 120 s timeout waits)
        summary = json.loads((ws.root / "audit" / "others" / "summary.json").read_text())
        assert summary["reports"]["synthetic_status"] == {"garbage": 2, "ok": 16}
        tfidf_a, emb_a = (r for r in summary["reports"]["similarity"] if r["condition"] == "A")
        assert (tfidf_a["method"], emb_a["method"]) == ("tfidf", "embedding")
        out = " ".join(result.output.split())
        assert "VLM phenotype reports" in out and "embedding" in out
        assert f"{tfidf_a['synthetic_real']:.3f} ({tfidf_a['n_pairs_synthetic_real']})" in out
        assert ("others: VLM reports (tiny-vlm) of the synthetic images: garbage 2, ok 16; of the real training photos: "
                "ok 18.") in out

        before = len(server.requests)
        bad = CliRunner().invoke(app, [
            "audit", "-w", str(ws.root), "--run", "others", "--embedder", PIXELS, "--vlm-url", server.url,
            "--vlm-model", "tiny-vlm", "--vlm-embedder", str(tmp_path / "no-model")])
        assert bad.exit_code == 2 and str(tmp_path / "no-model") in bad.output.replace("\n", "")
        assert len(server.requests) == before  # the wrong path fails before any photo is sent
        no_model = CliRunner().invoke(app, ["audit", "-w", str(ws.root), "--vlm-url", server.url])
        assert no_model.exit_code == 2 and "--vlm-model is required" in no_model.output
        alone = CliRunner().invoke(app, ["audit", "-w", str(ws.root), "--vlm-embedder", str(tiny_sentence_model)])
        assert alone.exit_code == 2 and "need --vlm-url and --vlm-model" in alone.output
