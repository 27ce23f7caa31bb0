"""VLM phenotype reports (RDFace's check): a vision-language model describes each face region by region, and the
reports of a run's synthetic images are compared with those of the real training photos of the same condition
(:mod:`phenosynth.audit.report_similarity`).

The client speaks the OpenAI ``/v1/chat/completions`` protocol that vLLM, the llama.cpp server and Ollama serve: one
user message with the fixed prompt :data:`PROMPT` and the image as a base64 ``data:`` URL (the OpenAI vision format),
``temperature`` 0. The API key, when the server needs one, is read from the environment variable named by
``VLMConfig.key_env`` (default ``PHENOSYNTH_VLM_API_KEY``) and sent as ``Authorization: Bearer``; it is never an
option value and never written anywhere.

- **Failures are per image.** A timeout, an HTTP error, a connection error or an answer that is not an OpenAI chat
  completion (not JSON, no ``choices``, no text: ``garbage``) is retried a few times with exponential backoff
  (timeouts, connection errors, HTTP 429 and 5xx only), then recorded as that image's status; the audit goes on.
- **Cache.** Answers are stored under ``WS/cache/vlm/<sha256>.json``, keyed by (image id, model, prompt text, prompt
  version): a second audit asks nothing it asked before. Failures are not cached: the next audit asks again.
- **Concurrency.** ``VLMConfig.workers`` requests in flight at most (a thread pool).
- **What is sent.** The run's synthetic images and the real *training* photos (never the held-out test photos),
  downscaled to at most :data:`MAX_SIDE` px, as PNG. Real photos are patient photos: point the client at a server
  you control (a local one); a non-loopback URL is logged as a warning.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from phenosynth.audit import report_similarity as rs
from phenosynth.data.workspace import Workspace, atomic_write
from phenosynth.errors import PhenosynthError

log = logging.getLogger(__name__)

#: The face regions every report describes, in order.
REGIONS = ("forehead", "eyes", "nose", "philtrum and mouth", "chin", "ears", "overall gestalt")
#: Bump when :data:`PROMPT` changes meaning (it is part of the cache key, as is the prompt text itself).
PROMPT_VERSION = "1"
PROMPT = (
    "You are a clinical geneticist writing the dysmorphology section of a report from this facial photograph. "
    "Describe only what is visible, in short neutral clinical terms, one line per region, in this order and with "
    "these labels:\n" + "\n".join(f"{r}: ..." for r in REGIONS) + "\n"
    "Do not name a syndrome or diagnosis, do not guess age, sex or ethnicity, and write 'not visible' for a region "
    "you cannot see."
)
DEFAULT_KEY_ENV = "PHENOSYNTH_VLM_API_KEY"
#: Longest side of the image sent (pixels).
MAX_SIDE = 512

OK = "ok"
TIMEOUT = "timeout"
HTTP_ERROR = "http-error"
CONNECTION_ERROR = "connection-error"
GARBAGE = "garbage"
UNREADABLE = "unreadable-image"
NOT_SENT = "not-sent"  # beyond VLMConfig.max_images
#: audit.parquet columns added when the audit ran with a VLM.
VLM_COLUMNS = ["vlm_status", "vlm_error", "vlm_report"]


@dataclass(frozen=True)
class VLMConfig:
    """Where and how to ask for the reports (``phenosynth audit --vlm-url ... --vlm-model ...``).

    ``url``: the server's base (``http://127.0.0.1:8000``), its ``/v1``, or the full ``.../chat/completions``.
    ``embedder``: folder of a sentence-transformers model for the embedding similarity (None: TF-IDF only).
    ``max_images``: at most this many synthetic images per run and this many real training photos, balanced across
    conditions (None: all).
    """

    url: str
    model: str
    key_env: str = DEFAULT_KEY_ENV
    embedder: Path | None = None
    max_images: int | None = None
    timeout: float = 120.0
    retries: int = 2
    backoff: float = 1.0
    workers: int = 4
    max_tokens: int = 400

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise PhenosynthError(f"--vlm-url must be an http(s) URL of an OpenAI-compatible server, got '{self.url}'.")
        if not self.model:
            raise PhenosynthError("--vlm-model is required with --vlm-url (the model name the server serves).")
        if self.max_images is not None and self.max_images < 1:
            raise PhenosynthError(f"--vlm-max-images must be at least 1, got {self.max_images}.")
        if self.workers < 1 or self.retries < 0 or self.timeout <= 0:
            raise PhenosynthError("VLM workers must be >= 1, retries >= 0 and the timeout > 0.")

    @property
    def endpoint(self) -> str:
        """The chat-completions URL.

        >>> VLMConfig("http://127.0.0.1:8000", "m").endpoint, VLMConfig("http://h:11434/v1/", "m").endpoint
        ('http://127.0.0.1:8000/v1/chat/completions', 'http://h:11434/v1/chat/completions')
        """
        url = self.url.rstrip("/")
        if url.endswith("/chat/completions"):
            return url
        return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")

    def settings(self) -> dict[str, Any]:
        """What summary.json records (the key's variable name, never its value)."""
        d = asdict(self)
        d["embedder"] = None if self.embedder is None else str(self.embedder)
        d["prompt_version"] = PROMPT_VERSION
        return d


@dataclass(frozen=True)
class VLMAnswer:
    """One image's report, or why there is none."""

    image_id: str
    status: str  # OK | TIMEOUT | HTTP_ERROR | CONNECTION_ERROR | GARBAGE | UNREADABLE | NOT_SENT
    text: str | None = None
    error: str = ""
    cached: bool = False
    attempts: int = 0


def cache_key(image_id: str, model: str, prompt: str = PROMPT, version: str = PROMPT_VERSION) -> str:
    """sha256 of (image id, model, prompt text, prompt version): the answer's file name in the cache."""
    return hashlib.sha256(json.dumps([image_id, model, prompt, version]).encode()).hexdigest()


def image_data_url(path: Path) -> str:
    """The image as a ``data:image/png;base64,...`` URL, longest side at most :data:`MAX_SIDE`."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((MAX_SIDE, MAX_SIDE))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_request(model: str, data_url: str, max_tokens: int) -> dict[str, Any]:
    """The OpenAI chat-completions body: one user message, the prompt and the image."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": PROMPT},
            {"type": "image_url", "image_url": {"url": data_url}},
        ]}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }


def answer_text(body: bytes) -> str:
    """The text of an OpenAI chat completion; raises ValueError (a ``garbage`` answer) when there is none.

    >>> answer_text(b'{"choices": [{"message": {"role": "assistant", "content": "eyes: wide"}}]}')
    'eyes: wide'
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"not JSON: {body[:60]!r}") from None
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not isinstance(choices, list) or not choices:
        raise ValueError("JSON without choices")
    content = (choices[0].get("message") or {}).get("content") if isinstance(choices[0], dict) else None
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        raise ValueError("no text in the first choice")
    return content.strip()


class VLMClient:
    """Asks the VLM of ``config`` for reports, through the on-disk cache ``cache_dir``."""

    def __init__(self, config: VLMConfig, cache_dir: Path) -> None:
        self.config = config
        self.cache_dir = Path(cache_dir)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.config.key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _cached(self, image_id: str) -> str | None:
        path = self.cache_dir / f"{cache_key(image_id, self.config.model)}.json"
        try:
            return str(json.loads(path.read_text())["text"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _store(self, image_id: str, text: str) -> None:
        doc = {"image_id": image_id, "model": self.config.model, "prompt_version": PROMPT_VERSION, "text": text}
        atomic_write(self.cache_dir / f"{cache_key(image_id, self.config.model)}.json",
                     lambda p: Path(p).write_text(json.dumps(doc)))

    def _post(self, body: bytes) -> tuple[str, str | None, str, bool]:
        """One request: (status, text, error, worth retrying)."""
        req = urllib.request.Request(self.config.endpoint, data=body, headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.config.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            return HTTP_ERROR, None, f"HTTP {exc.code} {exc.reason}", exc.code == 429 or exc.code >= 500
        except (TimeoutError, socket.timeout):
            return TIMEOUT, None, f"no answer within {self.config.timeout:g} s", True
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                return TIMEOUT, None, f"no answer within {self.config.timeout:g} s", True
            return CONNECTION_ERROR, None, str(exc.reason), True
        except (ConnectionError, OSError) as exc:
            return CONNECTION_ERROR, None, str(exc), True
        try:
            return OK, answer_text(raw), "", False
        except ValueError as exc:
            return GARBAGE, None, str(exc), False

    def describe(self, image_id: str, path: Path) -> VLMAnswer:
        """The report of one image: from the cache, else asked (with retries); never raises for a failed request."""
        text = self._cached(image_id)
        if text is not None:
            return VLMAnswer(image_id, OK, text, cached=True)
        try:
            body = json.dumps(chat_request(self.config.model, image_data_url(path), self.config.max_tokens)).encode()
        except OSError as exc:
            return VLMAnswer(image_id, UNREADABLE, error=str(exc))
        attempt = 0
        while True:
            attempt += 1
            status, text, error, retry = self._post(body)
            if status == OK and text is not None:
                self._store(image_id, text)
                return VLMAnswer(image_id, OK, text, attempts=attempt)
            if not retry or attempt > self.config.retries:
                log.warning("VLM report of %s failed (%s: %s) after %d attempt(s)", image_id, status, error, attempt)
                return VLMAnswer(image_id, status, error=error, attempts=attempt)
            time.sleep(self.config.backoff * 2 ** (attempt - 1))

    def describe_many(self, images: dict[str, Path]) -> dict[str, VLMAnswer]:
        """Reports of ``images`` (image id -> file), at most ``config.workers`` requests in flight."""
        if not images:
            return {}
        with ThreadPoolExecutor(max_workers=min(self.config.workers, len(images))) as pool:
            answers = pool.map(lambda item: self.describe(*item), images.items())
            return {a.image_id: a for a in answers}


def balanced_subset(rows: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """At most ``n`` rows, taken in turn from each condition (``label``), by image id within a condition; all rows
    when ``n`` is None. Deterministic.

    >>> df = pd.DataFrame({"image_id": list("abcde"), "label": ["A", "A", "A", "B", "B"]})
    >>> balanced_subset(df, 3)["image_id"].tolist()
    ['a', 'd', 'b']
    """
    if n is None or len(rows) <= n:
        return rows
    ordered = rows.sort_values(["label", "image_id"], kind="stable")
    rank = ordered.groupby("label", sort=False).cumcount()
    return ordered.assign(_rank=rank).sort_values(["_rank", "label"], kind="stable").head(n).drop(columns="_rank")


def _status_counts(answers: list[VLMAnswer]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in answers:
        counts[a.status] = counts.get(a.status, 0) + 1
    return dict(sorted(counts.items()))


@dataclass
class ReportAudit:
    """One run's VLM report check (summary.json ``reports``)."""

    model: str
    prompt_version: str
    similarity: list[rs.ReportSimilarity] = field(default_factory=list)
    synthetic_status: dict[str, int] = field(default_factory=dict)  # status -> synthetic images of the run
    real_status: dict[str, int] = field(default_factory=dict)  # status -> real training photos
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlparse(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def report_assessor(ws: Workspace, real_train: pd.DataFrame, syn: pd.DataFrame,
                    config: VLMConfig | None) -> Callable[[str, pd.DataFrame], tuple[pd.DataFrame, ReportAudit | None]]:
    """Ask for the real training photos' reports once; returns ``(run, audit frame) -> (the frame with
    :data:`VLM_COLUMNS`, the run's :class:`ReportAudit`)``. With ``config`` None the frame is returned unchanged.

    ``real_train``: the real training photos (manifest rows with a ``subject`` column); ``syn``: the synthetic rows
    (column ``run``). The sentence embedder is loaded before any request, so a wrong path fails at once.
    """
    if config is None:
        return lambda run, frame: (frame, None)
    encode = None if config.embedder is None else rs.load_sentence_embedder(config.embedder)
    if not _is_loopback(config.url):
        log.warning("the VLM at %s is not on this machine: real patient photos are sent to it", config.url)
    client = VLMClient(config, ws.cache_dir / "vlm")
    reals = balanced_subset(real_train, config.max_images)
    real_answers = client.describe_many({str(i): ws.resolve(str(p)) for i, p in zip(reals["image_id"], reals["path"])})

    def assess(run: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, ReportAudit]:
        rows = balanced_subset(syn[syn["run"] == run], config.max_images)
        answers = client.describe_many({str(i): ws.resolve(str(p)) for i, p in zip(rows["image_id"], rows["path"])})
        frame = frame.copy()
        got = [answers.get(str(i), VLMAnswer(str(i), NOT_SENT)) for i in frame["image_id"]]
        frame["vlm_status"] = [a.status for a in got]
        frame["vlm_error"] = [a.error for a in got]
        frame["vlm_report"] = [a.text for a in got]
        out = ReportAudit(config.model, PROMPT_VERSION, synthetic_status=_status_counts(got),
                          real_status=_status_counts(list(real_answers.values())))
        ok_syn = frame[frame["vlm_status"] == OK]
        ok_real = reals[reals["image_id"].astype(str).map(lambda i: real_answers[i].status == OK)]
        if ok_syn.empty or ok_real.empty:
            out.notes.append(f"no comparison: {len(ok_syn)} synthetic and {len(ok_real)} real reports")
            return frame, out
        reports = pd.concat([
            pd.DataFrame({"image_id": ok_syn["image_id"].astype(str), "label": ok_syn["label"].astype(str),
                          "subject": ok_syn["image_id"].astype(str), "synthetic": True,
                          "parents": ok_syn["parents"].map(list), "text": ok_syn["vlm_report"]}),
            pd.DataFrame({"image_id": ok_real["image_id"].astype(str), "label": ok_real["label"].astype(str),
                          "subject": ok_real["subject"].astype(str), "synthetic": False, "parents": None,
                          "text": [real_answers[str(i)].text for i in ok_real["image_id"]]}),
        ], ignore_index=True)
        out.similarity = rs.similarity_tables(reports, encode)
        return frame, out

    return assess


__all__ = ["VLMConfig", "VLMClient", "VLMAnswer", "ReportAudit", "report_assessor", "balanced_subset", "cache_key",
           "answer_text", "chat_request", "PROMPT", "PROMPT_VERSION", "REGIONS", "VLM_COLUMNS", "DEFAULT_KEY_ENV"]
