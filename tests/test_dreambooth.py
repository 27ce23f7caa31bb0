"""dreambooth / dreambooth-lora on a CPU with a tiny Stable Diffusion built in code (diffusers' dummy-component sizes,
a byte-level CLIP tokenizer written to tmp_path, 32 px): training steps, saved weights, generate with lineage, resume,
black-image re-draws, the base-model errors and the Ray task plumbing. Nothing here needs a GPU or a download."""

from __future__ import annotations

import json
import math
import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("peft")

import torch  # noqa: E402

from phenosynth.errors import LeakageError, MissingWeightsError, PhenosynthError  # noqa: E402
from phenosynth.synth.generators import create_generator  # noqa: E402
from phenosynth.synth.generators import dreambooth as db  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # tiny models: one thread is faster

#: The settings every test trains with: two steps at 32 px, sampled with two denoising steps.
TINY = {"steps": 2, "resolution": 32, "inference_steps": 2, "rank": 4, "train_seed": 3, "gradient_checkpointing": False}


def _byte_level_tokenizer(folder: Path):
    """A CLIP tokenizer whose vocabulary is the 256 byte symbols (and their word-final forms): no merges."""
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(s, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=32)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


def build_tiny_sd(root: Path) -> Path:
    """A seeded tiny Stable Diffusion 1.5-architecture pipeline saved as a diffusers folder ``root/sd``."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _byte_level_tokenizer(root / "tokenizer_src")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=2, attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=[4, 8], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=2, sample_size=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
        vocab_size=len(tokenizer), max_position_embeddings=32))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(root / "sd")
    return root / "sd"


def _job(tiny_sd: Path, folder: Path, generator: str = "dreambooth-lora", **overrides) -> db.ConditionJob:
    gen = create_generator(generator, base=str(tiny_sd), **{**TINY, **overrides})
    rng = np.random.default_rng(0)
    photos = tuple(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(3))
    return db.ConditionJob("A", photos, ("a1", "a2", "a3"), db.resolve_base_model(str(tiny_sd)), gen.settings(),
                           folder)


def _unet_output(unet) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 16, 16, generator=g)
    hidden = torch.randn(1, 8, 16, generator=g)
    with torch.no_grad():
        return unet(x.to(unet.dtype), torch.tensor([10]), hidden.to(unet.dtype)).sample


def test_two_lora_steps_give_finite_losses_and_the_saved_weights_reload_to_identical_outputs(tiny_sd, tmp_path):
    job = _job(tiny_sd, tmp_path / "A", lr=5e-2, train_text_encoder=True)
    tuned = db.fine_tune(job)
    assert len(tuned.losses) == 2 and all(math.isfinite(v) for v in tuned.losses)
    card = db.save_fine_tuned(job, tuned)
    assert (tmp_path / "A" / "pytorch_lora_weights.safetensors").is_file()
    saved = json.loads((tmp_path / "A" / "model_card.json").read_text())
    assert saved == json.loads(json.dumps(card))
    assert saved["image_ids"] == ["a1", "a2", "a3"] and saved["steps"] == 2 and saved["rank"] == 4
    assert saved["base_sha256"] == db.resolve_base_model(str(tiny_sd)).digest and len(saved["base_sha256"]) == 64
    trained = _unet_output(tuned.pipe.unet)
    reloaded = db.fine_tuned_pipeline(job.base, job.folder, "lora", "ddim", vae=str(tiny_sd / "vae"))
    assert torch.allclose(_unet_output(reloaded.unet), trained, atol=1e-6)
    base = db.load_pipeline(job.base)
    assert not torch.allclose(_unet_output(base.unet), trained, atol=1e-4)  # the adapters changed the model
    assert db.is_trained(job) and not db.is_trained(_job(tiny_sd, tmp_path / "A", lr=1e-3))  # other settings


def test_prior_preservation_trains_on_class_images_too(tiny_sd, tmp_path):
    from PIL import Image

    with pytest.raises(PhenosynthError, match="Prior preservation needs class images: no .png/.jpg in"):
        db.fine_tune(_job(tiny_sd, tmp_path / "none", class_images=str(tmp_path)))
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(tmp_path / f"child{i}.png")
    plain = db.fine_tune(_job(tiny_sd, tmp_path / "plain"))
    prior = db.fine_tune(_job(tiny_sd, tmp_path / "prior", class_images=str(tmp_path), prior_weight=1.0))
    assert all(math.isfinite(v) for v in prior.losses)
    assert prior.losses[0] > plain.losses[0]  # the same instance term plus a class-image term


def test_a_full_fine_tune_trains_unet_and_text_encoder_and_reloads_to_identical_outputs(tiny_sd, tmp_path):
    job = _job(tiny_sd, tmp_path / "A", "dreambooth", lr=1e-2)
    assert job.settings.mode == "full" and job.settings.train_text_encoder and job.settings.checkpoint_every == 200
    base = db.load_pipeline(job.base)
    tuned = db.fine_tune(job)
    assert len(tuned.losses) == 2 and all(math.isfinite(v) for v in tuned.losses)
    card = db.save_fine_tuned(job, tuned)
    assert card["generator"] == "dreambooth" and card["rank"] is None and card["lr"] == 1e-2
    assert (job.folder / "unet").is_dir() and (job.folder / "text_encoder").is_dir()
    reloaded = db.fine_tuned_pipeline(job.base, job.folder, "full", "dpm-solver")
    assert torch.allclose(_unet_output(reloaded.unet), _unet_output(tuned.pipe.unet), atol=1e-6)
    assert not torch.allclose(_unet_output(base.unet), _unet_output(tuned.pipe.unet), atol=1e-4)
    ids = base.tokenizer("photo", return_tensors="pt").input_ids
    with torch.no_grad():  # the text encoder was trained too
        assert not torch.allclose(base.text_encoder(ids)[0], reloaded.text_encoder(ids)[0], atol=1e-5)


def test_a_crash_mid_condition_resumes_from_the_checkpoint_to_the_same_weights(tiny_sd, tmp_path, monkeypatch):
    straight = db.fine_tune(_job(tiny_sd, tmp_path / "straight", lr=5e-2, checkpoint_every=1,
                                 gradient_checkpointing=True))  # recomputes activations: same numbers
    job = _job(tiny_sd, tmp_path / "crashed", lr=5e-2, checkpoint_every=1)
    save = db._save_checkpoint

    def save_then_die(job, *args):
        save(job, *args)
        if args[3] == 1:
            raise RuntimeError("killed")

    monkeypatch.setattr(db, "_save_checkpoint", save_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        db.fine_tune(job)
    assert (job.folder / "checkpoint.pt").is_file()
    monkeypatch.setattr(db, "_save_checkpoint", save)
    resumed = db.fine_tune(job)
    assert resumed.resumed_from_step == 1 and resumed.losses == straight.losses
    assert torch.equal(_unet_output(resumed.pipe.unet), _unet_output(straight.pipe.unet))


def test_a_test_photo_is_refused_before_any_model_is_loaded(tmp_path):
    gen = create_generator("dreambooth-lora", base=str(tmp_path / "no-such-model"))
    gen.bind_run(tmp_path / "run")
    photo = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(LeakageError):
        gen.fit([photo, photo], np.zeros((2, 5, 2)), ["A", "A"], image_ids=["t1", "t2"], splits=["train", "test"])
    assert not (tmp_path / "run").exists()


def test_a_missing_base_model_names_what_to_put_where(tmp_path, monkeypatch):
    with pytest.raises(MissingWeightsError, match=r"no-such\.safetensors does not exist: put the file there"):
        db.resolve_base_model(str(tmp_path / "no-such.safetensors"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingWeightsError, match="model_index.json is missing"):
        db.resolve_base_model(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match=r"huggingface-cli download someone/sd15"):
        db.resolve_base_model("someone/sd15")
    with pytest.raises(PhenosynthError, match="--base PATH"):
        db.resolve_base_model(None)
    with pytest.raises(MissingWeightsError, match="huggingface-cli download stabilityai/sd-vae-ft-mse"):
        db.fine_tuned_pipeline(None, tmp_path, "lora", "ddim", vae="stabilityai/sd-vae-ft-mse")


class _FakePipe:
    """A pipeline whose first ``n_black`` calls return a black image, then noise from the seed it is given."""

    def __init__(self, n_black: int) -> None:
        self.n_black, self.seeds = n_black, []

    def __call__(self, prompt, *, generator, height, width, **_):
        seed = generator.initial_seed()
        self.seeds.append(seed)
        if len(self.seeds) <= self.n_black:
            return type("Out", (), {"images": [np.zeros((height, width, 3), np.float32)]})
        rng = np.random.default_rng(seed)
        return type("Out", (), {"images": [rng.random((height, width, 3)).astype(np.float32)]})


def test_black_outputs_are_drawn_again_with_a_new_recorded_seed(monkeypatch, tmp_path):
    gen = create_generator("dreambooth-lora", base="x", **TINY)
    gen.folders_, gen.parents_, gen.base_model_ = {"A": tmp_path / "A"}, {"A": ["a1", "a2"]}, None
    pipe = _FakePipe(n_black=2)
    monkeypatch.setattr(db, "fine_tuned_pipeline", lambda *a: pipe)
    s = gen.sample_one("A", 0, seed=7)
    assert s.params["blank_redraws"] == 2 and s.params["rejected_seeds"] == pipe.seeds[:2]
    assert s.params["image_seed"] == pipe.seeds[2] and len(set(pipe.seeds)) == 3
    assert s.image.max() > 200 and s.parents == ["a1", "a2"]
    again = gen.sample_one("A", 0, seed=7)  # no black output this time: the stream's first seed
    assert again.params["image_seed"] == pipe.seeds[0] and again.params["blank_redraws"] == 0
    with pytest.raises(PhenosynthError, match="black or blank outputs in a row"):
        pipe.n_black, pipe.seeds = 100, []
        gen.sample_one("A", 1, seed=7)


def test_generate_trains_one_model_per_condition_with_lineage_and_resumes_after_a_crash(
        tiny_sd, tmp_path, monkeypatch, make_landmark_workspace):
    from phenosynth.synth.generation import generate

    ws, faces = make_landmark_workspace(tmp_path)
    manifest = ws.load_manifest()
    options = {"base": str(tiny_sd), **TINY}
    trained: list[str] = []
    train = db.train_condition

    def train_then_crash(job):
        trained.append(job.label)
        if len(trained) == 2:
            raise RuntimeError("power cut")
        return train(job)

    monkeypatch.setattr(db, "train_condition", train_then_crash)
    with pytest.raises(RuntimeError, match="power cut"):
        generate(ws, "dreambooth-lora", per_class=2, seed=0, faces=faces, options=options, n_jobs=2)
    models = ws.synthetic_dir / "dreambooth-lora-seed0" / "models"
    assert (models / "A" / "model_card.json").is_file() and not (models / "B").exists()

    first = {"done": False}
    blank = db.is_blank

    def first_image_black(image, *a):  # the first image drawn is reported black once
        if not first["done"]:
            first["done"] = True
            return True
        return blank(image, *a)

    monkeypatch.setattr(db, "is_blank", first_image_black)
    s = generate(ws, "dreambooth-lora", per_class=2, seed=0, faces=faces, options=options, n_jobs=2)
    assert trained == ["A", "B", "B", "C"]  # A was not trained again
    assert (s.images, s.new_images, s.workers, s.blank_redraws) == (6, 6, 1, 1)
    run = json.loads((ws.synthetic_dir / s.run / "run.json").read_text())
    assert run["blank_redraws"] == 1 and run["fit_set_role"] == "pixel" and run["uses_patient_pixels"] is False
    train_ids = manifest.loc[manifest["split"] == "train"]
    assert sorted(run["training_images"]) == sorted(train_ids["image_id"])
    m = ws.load_manifest()
    syn = m[m["source"] == "synthetic"]
    assert len(syn) == 6 and (syn["generator"] == "dreambooth-lora").all()
    for _, row in syn.iterrows():
        own = sorted(train_ids.loc[train_ids["label"] == row["label"], "image_id"])
        assert sorted(row["parents"]) == own  # the condition's training photos, never a test photo
        params = json.loads(row["params"])
        assert params["run"] == s.run and isinstance(params["image_seed"], int) and params["inference_steps"] == 2
        assert ws.resolve(row["path"]).is_file()
    own_a = sorted(train_ids.loc[train_ids["label"] == "A", "image_id"])
    for label in "ABC":
        card = json.loads((models / label / "model_card.json").read_text())
        assert card["image_ids"] == sorted(train_ids.loc[train_ids["label"] == label, "image_id"])
    assert sum(json.loads(p)["blank_redraws"] for p in syn["params"]) == 1

    # downstream: a re-split that moves one of A's photos into the test set drops every image of the run (A's have
    # it as a parent; B's and C's come from a run fit on it)
    from phenosynth.data.leakage import FIT_ON_TEST, PARENT_IN_TEST, leak_reasons, load_fit_sets

    moved = m.copy()
    moved.loc[moved["image_id"] == own_a[0], "split"] = "test"
    reasons = leak_reasons(moved, load_fit_sets(ws))
    labels = moved.loc[reasons.index, "label"]
    assert set(reasons[labels == "A"]) == {PARENT_IN_TEST} and set(reasons[labels != "A"]) == {FIT_ON_TEST}


class _FakeRay:
    """Ray's task API, run at once in this process: records what each task asked for."""

    def __init__(self, gpus: float) -> None:
        self.gpus, self.asked = gpus, []

    def cluster_resources(self):
        return {"CPU": 4.0, "GPU": self.gpus} if self.gpus else {"CPU": 4.0}

    def remote(self, **resources):
        self.asked.append(resources)
        return lambda task: type("Remote", (), {"remote": staticmethod(lambda *a: _Ref(task(*a)))})

    def put(self, value):
        return value

    def wait(self, refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.value


class _Ref:
    def __init__(self, value) -> None:
        self.value = value


def test_ray_runs_one_task_per_condition_with_one_gpu_each(tmp_path, monkeypatch, make_landmark_workspace):
    from phenosynth.synth import scaleout
    from phenosynth.synth.generation import generate

    fake = _FakeRay(gpus=8)
    monkeypatch.setattr(scaleout, "ray_session", lambda address=None: nullcontext(fake))
    done = list(scaleout.remote_tasks(fake, lambda item, k: item * k, [1, 2, 3], 10))
    assert sorted(done) == [(1, 10), (2, 20), (3, 30)] and fake.asked == [{"num_gpus": 1, "num_cpus": 1}]
    assert scaleout.task_resources({"CPU": 2.0}) == {"num_gpus": 0, "num_cpus": 1}

    ws, faces = make_landmark_workspace(tmp_path)
    monkeypatch.setattr(db, "train_condition", lambda job: {"condition": job.label})
    monkeypatch.setattr(db, "resolve_base_model", lambda spec, config=None: None)
    monkeypatch.setattr(db, "fine_tuned_pipeline", lambda *a: _FakePipe(n_black=0))
    fake.asked.clear()
    s = generate(ws, "dreambooth-lora", per_class=3, seed=0, faces=faces, options={"base": "x", **TINY},
                 executor="ray")
    # one training task per condition, then one sampling task per condition, each with one GPU
    assert fake.asked == [{"num_gpus": 1, "num_cpus": 1}] * 2 and s.executor == "ray"
    assert (s.images, s.workers, s.per_class) == (9, 3, {"A": 3, "B": 3, "C": 3})
    with pytest.raises(PhenosynthError, match="Unknown executor 'dask'"):
        generate(ws, "dreambooth-lora", per_class=1, faces=faces, options={"base": "x"}, executor="dask")


def test_cli_generate_dreambooth_lora_with_base_and_options(tiny_sd, tmp_path, make_landmark_workspace):
    from typer.testing import CliRunner

    from phenosynth.cli import app
    from tests._workspaces import faces_parquet_rows, write_faces_parquet  # noqa: F401

    ws, faces = make_landmark_workspace(tmp_path)
    write_faces_parquet(ws, faces_parquet_rows(faces))
    missing = tmp_path / "sd15.safetensors"
    r = CliRunner().invoke(app, ["generate", "-w", str(ws.root), "--generator", "dreambooth-lora", "--base",
                                 str(missing), "--per-class", "100"])
    assert r.exit_code == 2, r.output
    assert "sd15.safetensors does not exist" in " ".join(r.output.split())
    bad = CliRunner().invoke(app, ["generate", "-w", str(ws.root), "-g", "dreambooth-lora", "--executor", "dask"])
    assert bad.exit_code == 2 and "Unknown executor 'dask'" in bad.output
    tiny = [x for k, v in TINY.items() for x in ("-o", f"{k}={v}")]
    ok = CliRunner().invoke(app, ["generate", "-w", str(ws.root), "--generator", "dreambooth-lora", "--base",
                                  str(tiny_sd), "--per-class", "1", *tiny])
    assert ok.exit_code == 0, ok.output
    assert "Run dreambooth-lora-seed0: 3 images of 3 conditions" in " ".join(ok.output.split())
    card = json.loads((ws.synthetic_dir / "dreambooth-lora-seed0" / "models" / "B" / "model_card.json").read_text())
    assert (card["steps"], card["rank"], card["settings"]["resolution"], card["seed"]) == (2, 4, 32, 3)


@pytest.mark.ray
@pytest.mark.skipif(not os.environ.get("PHENOSYNTH_RAY_TESTS"),
                    reason="a real local Ray cluster (~20-60 s on 2 cores); set PHENOSYNTH_RAY_TESTS=1 to run")
def test_generate_on_a_one_cpu_local_ray_trains_and_samples_every_condition(tiny_sd, tmp_path,
                                                                          make_landmark_workspace):
    ray = pytest.importorskip("ray")
    from phenosynth.synth.generation import generate

    ws, faces = make_landmark_workspace(tmp_path)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        s = generate(ws, "dreambooth-lora", per_class=1, seed=0, faces=faces, options={"base": str(tiny_sd), **TINY},
                     executor="ray")
    finally:
        ray.shutdown()
    assert (s.images, s.new_images, s.workers, s.executor) == (3, 3, 3, "ray")
    models = ws.synthetic_dir / s.run / "models"
    assert all((models / c / "pytorch_lora_weights.safetensors").is_file() for c in "ABC")
    m = ws.load_manifest()
    syn = m[m["source"] == "synthetic"]
    train = m[(m["source"] == "real") & (m["split"] == "train")]
    assert all(sorted(r["parents"]) == sorted(train.loc[train["label"] == r["label"], "image_id"])
               for _, r in syn.iterrows())
