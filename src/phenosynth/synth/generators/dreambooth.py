"""``dreambooth`` and ``dreambooth-lora``: one Stable Diffusion model per condition, fine-tuned on that condition's
real training photos (the papers' generator; optional extra ``diffusion``: diffusers, peft, transformers, accelerate).

``dreambooth`` is RDFace's recipe: UNet and text encoder fully fine-tuned, lr 1e-6 constant, 800 steps, 512 px,
batch 1, prompt "photo of a sks child" (``{token}``: a rare token), no prior preservation. ``dreambooth-lora`` trains
peft LoRA adapters on the UNet's attention (rank 8, optionally the text encoder's) at lr 1e-4 for 800 steps: the
same model at a fraction of the memory, time and disk.

The base model (``base``) is a diffusers folder, a single ``.safetensors`` checkpoint (diffusers' ``from_single_file``)
or a hub id already in the local Hugging Face cache (nothing is downloaded). Per condition the generator writes, under
``WS/synthetic/<run>/models/<condition>/``, the weights (``pytorch_lora_weights.safetensors``, or ``unet/`` and
``text_encoder/``) and ``model_card.json`` (base model and its SHA-256, steps, lr, rank, seed, the image_ids fit on,
losses). A condition whose card matches what it is asked to train is not trained again; a crash mid-condition
resumes from ``checkpoint.pt``, written every ``checkpoint_every`` steps.

Sampling: image ``i`` of a condition draws its seed from ``sample_rng(seed, label, i)`` (recorded in ``params``);
DDIM or DPM-Solver, ``inference_steps`` and ``guidance_scale`` are options; no safety checker. A black or blank output
(max pixel below ``blank_max`` or standard deviation below ``blank_std``, what the RDFace authors deleted by hand) is
drawn again from the next seed of the same stream (``params["image_seed"]``); ``params["blank_redraws"]`` and
``params["rejected_seeds"]`` say so, and ``generate`` reports the total.

Lineage and privacy: every pixel of the condition's photos may be in every image (a DreamBooth model memorises its
four or five photos), so ``parents`` of each image are the condition's training photos and ``fit_set_role`` is
``"pixel"``. ``uses_patient_pixels`` is False because no image is a patient's photo transformed: it is drawn from a
model. That is not a privacy claim: whether an image is shareable is decided per image by the audit (identity match
and near-copy against the training photos), which a memorised DreamBooth image fails.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phenosynth.errors import MissingWeightsError, PhenosynthError
from phenosynth.synth.generators.base import GENERATORS, Generator, SyntheticSample, sample_rng

log = logging.getLogger(__name__)

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
MODEL_CARD = "model_card.json"
CHECKPOINT = "checkpoint.pt"
SCHEDULERS = ("ddim", "dpm-solver")
#: Rough seconds per training step at 512 px on a laptop CPU (for the warning; measured orders of magnitude only).
CPU_SECONDS_PER_STEP_512 = 20.0
CPU_SECONDS_PER_IMAGE_512 = 90.0


# --- the base model -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model: ``kind`` ``folder`` (a diffusers folder) or ``single-file`` (one checkpoint), its
    ``path``, what the user asked for (``spec``) and the SHA-256 of its weight files (``digest``)."""

    spec: str
    kind: str
    path: Path
    digest: str
    config: Path | None = None  # diffusers folder whose configs a single-file checkpoint is read with


def resolve_base_model(spec: str | None, config: str | None = None) -> BaseModel:
    """The base model ``spec`` names: a diffusers folder (with ``model_index.json``), a ``.safetensors`` /
    ``.ckpt`` checkpoint, or a hub id resolved from the local Hugging Face cache only.

    Raises:
        MissingWeightsError: nothing there; the message names what to put where.
    """
    from phenosynth.models.weights import hf_cache_dir

    if not spec:
        raise PhenosynthError("DreamBooth needs a Stable Diffusion 1.5 base model: pass --base PATH (a diffusers "
                              "folder or a .safetensors checkpoint) or --base HUB_ID (in the Hugging Face cache).")
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "model_index.json").is_file():
            raise MissingWeightsError(f"{p} is not a diffusers model folder: model_index.json is missing (save one "
                                      f"with StableDiffusionPipeline.save_pretrained, or pass a .safetensors file).")
        return BaseModel(spec, "folder", p.resolve(), _folder_digest(p))
    if p.suffix in (".safetensors", ".ckpt"):
        if not p.is_file():
            raise MissingWeightsError(f"Base model checkpoint {p} does not exist: put the file there, or pass "
                                      f"--base with a diffusers folder or a hub id in {hf_cache_dir()}.")
        from phenosynth.models.weights import file_digest

        return BaseModel(spec, "single-file", p.resolve(), file_digest(p), Path(config) if config else None)
    if "/" in spec and not p.exists() and spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        folder = _local_folder(spec, "Base model (pass --base PATH to a folder or a .safetensors checkpoint instead)")
        return BaseModel(spec, "folder", folder, _folder_digest(folder))
    raise MissingWeightsError(f"Base model {p} not found: put a diffusers folder (with model_index.json) or a "
                              f".safetensors checkpoint there, or pass --base HUB_ID of a model in {hf_cache_dir()}.")


def _local_folder(spec: str, what: str) -> Path:
    """A diffusers model folder: ``spec`` itself, or hub id ``spec`` from the local Hugging Face cache."""
    from phenosynth.models.weights import hf_cache_dir

    p = Path(spec).expanduser()
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True, cache_dir=str(hf_cache_dir())))
    except Exception as exc:  # noqa: BLE001 - not a folder, not in the cache
        raise MissingWeightsError(
            f"{what} '{spec}' is neither a folder nor in the Hugging Face cache {hf_cache_dir()} (nothing is "
            f"downloaded): on a machine with internet run `huggingface-cli download {spec}` and copy the cache here, "
            f"or pass a path to a diffusers folder. ({type(exc).__name__})") from exc


def _folder_digest(folder: Path) -> str:
    """SHA-256 over the relative paths and contents of a diffusers folder's files (weights and configs)."""
    from phenosynth.models.weights import file_digest

    h = hashlib.sha256()
    for f in sorted(q for q in folder.rglob("*") if q.is_file() and not q.name.startswith(".")):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()


def load_pipeline(base: BaseModel, dtype: Any = None) -> Any:
    """A ``StableDiffusionPipeline`` of ``base`` without safety checker, from local files only."""
    from phenosynth._optional import require

    diffusers = require("diffusers", extra="diffusion", purpose="the dreambooth generators")
    kw = {"safety_checker": None, "requires_safety_checker": False, "local_files_only": True}
    if dtype is not None:
        kw["dtype"] = dtype
    cls = diffusers.StableDiffusionPipeline
    if base.kind == "single-file":
        if base.config is not None:
            kw["config"] = str(base.config)
        return cls.from_single_file(str(base.path), **kw)
    return cls.from_pretrained(str(base.path), **kw)


# --- devices --------------------------------------------------------------------------------------------------------


def pick_device(mixed_precision: str) -> tuple[Any, Any]:
    """(device, dtype of the frozen weights and of autocast): CUDA with bf16 (fp16 where bf16 is missing) unless
    ``mixed_precision="no"``; CPU with float32."""
    import torch

    if mixed_precision not in ("auto", "no", "fp16", "bf16"):
        raise PhenosynthError(f"mixed_precision must be auto, no, fp16 or bf16 (got '{mixed_precision}').")
    if not torch.cuda.is_available():
        return torch.device("cpu"), torch.float32
    if mixed_precision == "no":
        return torch.device("cuda"), torch.float32
    if mixed_precision == "fp16" or (mixed_precision == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.device("cuda"), torch.float16
    return torch.device("cuda"), torch.bfloat16


def warn_cpu(what: str, count: int, resolution: int, per_unit_512: float) -> None:
    """Log how long ``count`` units of work take on a CPU at ``resolution`` px (scaled by pixel count)."""
    seconds = count * per_unit_512 * (resolution / 512) ** 2
    log.warning("No CUDA device: %d %s at %d px on the CPU take roughly %.1f hours (a GPU does it in minutes)",
                count, what, resolution, seconds / 3600)


# --- training one condition ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSettings:
    """Everything that defines one condition's fine-tune (recorded in its model card)."""

    mode: str  # "full" | "lora"
    steps: int
    lr: float
    rank: int
    train_text_encoder: bool
    resolution: int
    prompt: str
    class_prompt: str
    class_images: str | None
    prior_weight: float
    mixed_precision: str
    gradient_checkpointing: bool
    use_8bit_adam: bool | None
    checkpoint_every: int
    seed: int


@dataclass(frozen=True)
class ConditionJob:
    """One condition's training: its photos (``(H, W, 3)`` uint8) and their image_ids, the base model, the settings
    and the folder its model goes to."""

    label: str
    images: tuple[np.ndarray, ...]
    image_ids: tuple[str, ...]
    base: BaseModel
    settings: TrainingSettings
    folder: Path

    def fingerprint(self) -> dict[str, Any]:
        """What a saved model must match to be reused (base, settings, photos)."""
        return {"base_sha256": self.base.digest, "settings": asdict(self.settings),
                "image_ids": sorted(self.image_ids)}


def is_trained(job: ConditionJob) -> bool:
    """Whether ``job.folder`` holds a finished model of exactly this job (weights and a matching card)."""
    card = job.folder / MODEL_CARD
    if not card.is_file() or not _weights_present(job.folder, job.settings.mode):
        return False
    try:
        data = json.loads(card.read_text())
    except ValueError:
        return False
    fp = job.fingerprint()
    return all(data.get(k) == v for k, v in fp.items())


def _weights_present(folder: Path, mode: str) -> bool:
    if mode == "lora":
        return (folder / LORA_WEIGHTS).is_file()
    return (folder / "unet").is_dir() and (folder / "text_encoder").is_dir()


def _prompt(template: str, label: str, token: str) -> str:
    return template.format(token=token, label=label)


def _to_tensor(images: list[np.ndarray], resolution: int) -> Any:
    """N images -> ``(N, 3, R, R)`` float32 in [-1, 1]: resized (shorter side to R) and centre-cropped."""
    import torch
    from PIL import Image

    out = []
    for im in images:
        pil = Image.fromarray(np.asarray(im, dtype=np.uint8)).convert("RGB")
        w, h = pil.size
        s = resolution / min(w, h)
        pil = pil.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.Resampling.BICUBIC)
        w, h = pil.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        arr = np.asarray(pil.crop((left, top, left + resolution, top + resolution)), dtype=np.float32)
        out.append(torch.from_numpy(arr / 127.5 - 1.0).permute(2, 0, 1))
    return torch.stack(out)


def _class_images(folder: str) -> list[np.ndarray]:
    from phenosynth.data.imageio import load_rgb

    files = sorted(p for p in Path(folder).expanduser().glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise PhenosynthError(f"Prior preservation needs class images: no .png/.jpg in {folder} (generate some "
                              f"'photo of a child' images with the base model and put them there).")
    return [load_rgb(p) for p in files]


def train_condition(job: ConditionJob) -> dict[str, Any]:
    """Fine-tune the base model on one condition's photos and save it (weights, then ``model_card.json``) in
    ``job.folder``; resumes from ``checkpoint.pt``; returns the model card. Deterministic on a CPU for a given seed,
    whether or not it was interrupted at a checkpoint."""
    return save_fine_tuned(job, fine_tune(job))


@dataclass
class FineTuned:
    """A condition's fine-tuned pipeline (LoRA adapters attached, or the full weights) and how it got there."""

    pipe: Any
    losses: list[float]
    resumed_from_step: int
    device: str
    dtype: str
    seconds: float


def fine_tune(job: ConditionJob) -> FineTuned:
    """The DreamBooth loop (batch 1, constant lr, gradient clipping at 1, optional prior-preservation term), from
    ``checkpoint.pt`` when one of this job is there; checkpoints every ``checkpoint_every`` steps."""
    import torch
    import torch.nn.functional as F

    s = job.settings
    t0 = time.perf_counter()
    device, dtype = pick_device(s.mixed_precision)
    if device.type == "cpu":
        warn_cpu(f"training steps of condition {job.label}", s.steps, s.resolution, CPU_SECONDS_PER_STEP_512)
    pipe = load_pipeline(job.base)
    unet, text_encoder, vae, tokenizer = pipe.unet, pipe.text_encoder, pipe.vae, pipe.tokenizer
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):  # seeded adapters, no global side effect
        torch.manual_seed(s.seed)
        trainable = _prepare_trainable(unet, text_encoder, vae, s, device, dtype)
    optimizer = _optimizer(trainable, s, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    gen = torch.Generator(device="cpu").manual_seed(s.seed)
    instance = _to_tensor(list(job.images), s.resolution)
    ids = _token_ids(tokenizer, _prompt(s.prompt, job.label, "sks"))
    prior = None
    if s.class_images:
        prior = (_to_tensor(_class_images(s.class_images), s.resolution), _token_ids(tokenizer, s.class_prompt))
    start, losses = _load_checkpoint(job, trainable, optimizer, gen)
    unet.train()
    text_encoder.train(s.train_text_encoder)
    for step in range(start, s.steps):
        pairs = [(instance, ids)] + ([prior] if prior is not None else [])
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = 0.0
            for weight, (pixels, tokens) in zip((1.0, s.prior_weight), pairs):
                i = int(torch.randint(len(pixels), (1,), generator=gen))
                pred, target = _denoising_pair(pixels[i:i + 1], tokens, unet, text_encoder, vae, noise_scheduler,
                                               gen, device, dtype)
                loss = loss + weight * F.mse_loss(pred.float(), target.float())
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        total = float(loss.detach())
        if not math.isfinite(total):
            raise PhenosynthError(f"DreamBooth training of condition {job.label} diverged at step {step + 1} (loss "
                                  f"{total}); lower the learning rate or use mixed_precision=no.")
        losses.append(total)
        if s.checkpoint_every and (step + 1) % s.checkpoint_every == 0 and step + 1 < s.steps:
            _save_checkpoint(job, trainable, optimizer, gen, step + 1, losses)
    return FineTuned(pipe, losses, start, str(device), str(dtype).replace("torch.", ""),
                     round(time.perf_counter() - t0, 3))


def save_fine_tuned(job: ConditionJob, tuned: FineTuned) -> dict[str, Any]:
    """Save the weights, then the model card (its presence marks the condition done), then drop the checkpoint."""
    from phenosynth.data.workspace import atomic_write

    s = job.settings
    _save_weights(job, tuned.pipe)
    card = {**job.fingerprint(), "generator": "dreambooth-lora" if s.mode == "lora" else "dreambooth",
            "condition": job.label, "base": job.base.spec, "base_kind": job.base.kind, "steps": s.steps, "lr": s.lr,
            "rank": s.rank if s.mode == "lora" else None, "seed": s.seed, "device": tuned.device,
            "dtype": tuned.dtype, "losses": [round(v, 6) for v in tuned.losses],
            "final_loss": tuned.losses[-1] if tuned.losses else None, "resumed_from_step": tuned.resumed_from_step,
            "seconds": tuned.seconds}
    atomic_write(job.folder / MODEL_CARD, lambda p: Path(p).write_text(json.dumps(card, indent=2)))
    (job.folder / CHECKPOINT).unlink(missing_ok=True)
    return card


def _prepare_trainable(unet: Any, text_encoder: Any, vae: Any, s: TrainingSettings, device: Any,
                       dtype: Any) -> list[Any]:
    """Freeze what is not trained, add LoRA adapters (``lora``), move to ``device``; the trainable parameters
    (float32, whatever the frozen weights' dtype)."""
    import torch

    vae.requires_grad_(False)
    vae.to(device, dtype=dtype)
    if s.mode == "lora":
        from peft import LoraConfig

        unet.requires_grad_(False)
        text_encoder.requires_grad_(False)
        unet.to(device, dtype=dtype)
        text_encoder.to(device, dtype=dtype)
        unet.add_adapter(LoraConfig(r=s.rank, lora_alpha=s.rank, init_lora_weights="gaussian",
                                    target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        if s.train_text_encoder:  # peft directly: transformers' own add_adapter wants a newer peft than exists
            from peft import inject_adapter_in_model

            inject_adapter_in_model(LoraConfig(r=s.rank, lora_alpha=s.rank, init_lora_weights="gaussian",
                                               target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]), text_encoder)
    else:
        unet.requires_grad_(True)
        text_encoder.requires_grad_(s.train_text_encoder)
        unet.to(device, dtype=torch.float32)
        text_encoder.to(device, dtype=torch.float32 if s.train_text_encoder else dtype)
    if s.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if s.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    params = [p for m in (unet, text_encoder) for p in m.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    return params


def _optimizer(params: list[Any], s: TrainingSettings, device: Any) -> Any:
    """AdamW (constant lr); bitsandbytes' 8-bit AdamW on CUDA when it is importable (``use_8bit_adam`` None) or
    asked for."""
    import importlib.util

    import torch

    want = s.use_8bit_adam if s.use_8bit_adam is not None else (
        device.type == "cuda" and importlib.util.find_spec("bitsandbytes") is not None)
    if want:
        from phenosynth._optional import require

        bnb = require("bitsandbytes", extra="diffusion", purpose="8-bit Adam")
        return bnb.optim.AdamW8bit(params, lr=s.lr, weight_decay=1e-2)
    return torch.optim.AdamW(params, lr=s.lr, weight_decay=1e-2)


def _token_ids(tokenizer: Any, prompt: str) -> Any:
    return tokenizer(prompt, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                     return_tensors="pt").input_ids


def _denoising_pair(pixels: Any, tokens: Any, unet: Any, text_encoder: Any, vae: Any, scheduler: Any, gen: Any,
                    device: Any, dtype: Any) -> tuple[Any, Any]:
    """(the UNet's prediction, its target) for one image at a random timestep (the DreamBooth loss's two terms)."""
    import torch

    latents = vae.encode(pixels.to(device, dtype=dtype)).latent_dist.mean * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=gen).to(device, dtype=latents.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (1,), generator=gen).to(device)
    noisy = scheduler.add_noise(latents, noise, t)
    hidden = text_encoder(tokens.to(device))[0]
    pred = unet(noisy, t, hidden).sample
    target = scheduler.get_velocity(latents, noise, t) if scheduler.config.prediction_type == "v_prediction" else noise
    return pred, target


def _save_checkpoint(job: ConditionJob, params: list[Any], optimizer: Any, gen: Any, step: int,
                     losses: list[float]) -> None:
    import torch

    from phenosynth.data.workspace import atomic_write

    state = {"fingerprint": job.fingerprint(), "step": step, "params": [p.detach().cpu() for p in params],
             "optimizer": optimizer.state_dict(), "rng": gen.get_state(), "losses": list(losses)}
    atomic_write(job.folder / CHECKPOINT, lambda p: torch.save(state, p))


def _load_checkpoint(job: ConditionJob, params: list[Any], optimizer: Any, gen: Any) -> tuple[int, list[float]]:
    """The step to start from and the losses so far (0, [] without a checkpoint of this job)."""
    import torch

    path = job.folder / CHECKPOINT
    if not path.is_file():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != job.fingerprint() or len(state["params"]) != len(params):
        log.warning("Ignoring %s: it belongs to other settings or photos", path)
        return 0, []
    with torch.no_grad():
        for p, saved in zip(params, state["params"]):
            p.copy_(saved.to(p.device, p.dtype))
    optimizer.load_state_dict(state["optimizer"])
    gen.set_state(state["rng"])
    log.info("Condition %s: resuming DreamBooth training at step %d", job.label, state["step"])
    return int(state["step"]), list(state["losses"])


def _save_weights(job: ConditionJob, pipe: Any) -> None:
    """LoRA: ``pytorch_lora_weights.safetensors`` (diffusers' layout); full: ``unet/`` and ``text_encoder/``."""
    job.folder.mkdir(parents=True, exist_ok=True)
    if job.settings.mode == "lora":
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
        text_layers = None
        if job.settings.train_text_encoder:
            text_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.text_encoder))
        StableDiffusionPipeline.save_lora_weights(str(job.folder), unet_lora_layers=unet_layers,
                                                  text_encoder_lora_layers=text_layers, safe_serialization=True)
        return
    pipe.unet.save_pretrained(str(job.folder / "unet"), safe_serialization=True)
    pipe.text_encoder.save_pretrained(str(job.folder / "text_encoder"), safe_serialization=True)


# --- sampling --------------------------------------------------------------------------------------------------------


def fine_tuned_pipeline(base: BaseModel, folder: Path, mode: str, scheduler: str, vae: str | None = None) -> Any:
    """The base pipeline with one condition's fine-tuned weights from ``folder``, on CUDA when present, with the
    sampling ``scheduler`` (``ddim`` or ``dpm-solver``) and, when given, another ``vae`` for decoding (RDFace:
    ``stabilityai/sd-vae-ft-mse``; a folder or a hub id in the local cache)."""
    import diffusers

    vae_folder = _local_folder(vae, "VAE") if vae else None
    device, dtype = pick_device("auto")
    pipe = load_pipeline(base, dtype=dtype)
    if vae_folder is not None:
        pipe.vae = diffusers.AutoencoderKL.from_pretrained(str(vae_folder), dtype=dtype, local_files_only=True)
    if mode == "lora":
        pipe.load_lora_weights(str(folder), weight_name=LORA_WEIGHTS)
    else:
        pipe.unet = diffusers.UNet2DConditionModel.from_pretrained(str(folder / "unet"), dtype=dtype)
        from transformers import CLIPTextModel

        pipe.text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), dtype=dtype)
    if scheduler not in SCHEDULERS:
        raise PhenosynthError(f"scheduler must be one of {', '.join(SCHEDULERS)} (got '{scheduler}').")
    cls = diffusers.DDIMScheduler if scheduler == "ddim" else diffusers.DPMSolverMultistepScheduler
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def is_blank(image: np.ndarray, max_below: float, std_below: float) -> bool:
    """Whether ``image`` ``(H, W, 3)`` uint8 is black (max pixel < ``max_below``) or blank (std < ``std_below``).

    >>> is_blank(np.zeros((4, 4, 3), np.uint8), 10, 2), is_blank(np.full((4, 4, 3), 128, np.uint8), 10, 2)
    (True, True)
    >>> is_blank(np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5, 10, 2)
    False
    """
    return float(image.max()) < max_below or float(image.std()) < std_below


# --- the generators ------------------------------------------------------------------------------------------------


@dataclass(kw_only=True, eq=False)
class _DreamBoothBase(Generator):
    """Shared by ``dreambooth`` (full fine-tune) and ``dreambooth-lora`` (see the module docstring)."""

    uses_patient_pixels = False  # images are drawn from a model, not photos transformed: the audit decides per image
    fit_set_role = "pixel"  # a DreamBooth model may reproduce any of its photos' pixels
    in_process = True
    mode = "full"

    base: str | None = None
    base_config: str | None = None  # diffusers folder of configs for a single-file checkpoint
    steps: int = 800
    lr: float = 1e-6
    rank: int = 8
    train_text_encoder: bool = True
    resolution: int = 512
    prompt: str = "photo of a {token} child"
    token: str = "sks"
    class_prompt: str = "photo of a child"
    class_images: str | None = None  # folder of class images: prior preservation when given
    prior_weight: float = 1.0
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = True
    use_8bit_adam: bool | None = None  # None: when bitsandbytes is importable and CUDA present
    checkpoint_every: int = 100
    train_seed: int = 0
    scheduler: str = "dpm-solver"
    vae: str | None = None  # another VAE for decoding samples (RDFace: stabilityai/sd-vae-ft-mse), folder or hub id
    inference_steps: int = 30
    guidance_scale: float = 7.5
    blank_max: float = 10.0
    blank_std: float = 2.0
    max_redraws: int = 5
    _run_dir: Path | None = field(default=None, init=False, repr=False)
    _executor: str = field(default="local", init=False, repr=False)
    _pipe: tuple[str, Any] | None = field(default=None, init=False, repr=False)

    def bind_run(self, run_dir: Path, *, executor: str = "local") -> None:
        self._run_dir = Path(run_dir)
        self._executor = executor

    def __getstate__(self) -> dict[str, Any]:  # a loaded pipeline never travels to another process
        return {**self.__dict__, "_pipe": None}

    def settings(self) -> TrainingSettings:
        if self.steps < 1 or self.lr <= 0 or not 1 <= self.rank <= 256 or self.resolution % 8:
            raise PhenosynthError("steps must be >= 1, lr > 0, rank in 1..256 and resolution a multiple of 8 "
                                  f"(got steps={self.steps}, lr={self.lr}, rank={self.rank}, "
                                  f"resolution={self.resolution}).")
        return TrainingSettings(
            mode=self.mode, steps=int(self.steps), lr=float(self.lr), rank=int(self.rank),
            train_text_encoder=bool(self.train_text_encoder), resolution=int(self.resolution),
            prompt=self.prompt.replace("{token}", self.token), class_prompt=self.class_prompt,
            class_images=self.class_images, prior_weight=float(self.prior_weight),
            mixed_precision=self.mixed_precision, gradient_checkpointing=bool(self.gradient_checkpointing),
            use_8bit_adam=self.use_8bit_adam, checkpoint_every=int(self.checkpoint_every), seed=int(self.train_seed))

    def condition_jobs(self, images: list[np.ndarray], labels: list[str], image_ids: list[str]) -> list[ConditionJob]:
        """One training job per condition (its photos only), its model folder under the run's ``models/``."""
        from phenosynth.data.filenames import safe_name

        if self._run_dir is None:
            raise PhenosynthError("A DreamBooth generator needs a folder for its models: call bind_run(run_dir) "
                                  "before fit (generate does).")
        settings, base = self.settings(), self.base_model_
        jobs = []
        for label in sorted(set(labels)):
            idx = [i for i, v in enumerate(labels) if v == label]
            jobs.append(ConditionJob(label, tuple(images[i] for i in idx), tuple(image_ids[i] for i in idx), base,
                                     settings, self._run_dir / "models" / safe_name(label)))
        return jobs

    def _fit(self, images: list[np.ndarray], landmarks: np.ndarray, labels: list[str], image_ids: list[str], *,
             folds: list[int | None], subjects: list[str], identities: object = None) -> None:
        del landmarks, folds, subjects, identities  # each condition's model learns from its photos' pixels only
        self.base_model_ = resolve_base_model(self.base, self.base_config)
        if self.vae:  # fail before hours of training, not after
            _local_folder(self.vae, "VAE")
        jobs = self.condition_jobs(images, labels, image_ids)
        todo = [j for j in jobs if not is_trained(j)]
        if len(todo) < len(jobs):
            log.info("%d of %d condition model(s) already trained; training %d", len(jobs) - len(todo), len(jobs),
                     len(todo))
        self.cards_: dict[str, dict[str, Any]] = {}
        if self._executor == "ray" and todo:
            from phenosynth.synth.scaleout import ray_session, remote_tasks

            with ray_session() as ray:
                for job, card in remote_tasks(ray, train_condition, todo):
                    self.cards_[job.label] = card
        else:
            for job in todo:
                self.cards_[job.label] = train_condition(job)
        self.folders_ = {j.label: j.folder for j in jobs}
        self.parents_ = {j.label: sorted(j.image_ids) for j in jobs}
        self.trained_now_ = [j.label for j in todo]

    @property
    def classes_(self) -> list[str]:
        return sorted(self.folders_)

    def pipeline(self, label: str) -> Any:
        """The condition's fine-tuned pipeline (the last one used is kept: sampling goes condition by condition)."""
        if self._pipe is None or self._pipe[0] != label:
            self._pipe = None
            self._pipe = (label, fine_tuned_pipeline(self.base_model_, self.folders_[label], self.mode,
                                                     self.scheduler, self.vae))
        return self._pipe[1]

    def sample_one(self, label: str, index: int, seed: int) -> SyntheticSample:
        import torch

        pipe = self.pipeline(label)
        rng = sample_rng(seed, label, index)
        prompt = _prompt(self.settings().prompt, label, self.token)
        rejected: list[int] = []
        while True:
            image_seed = int(rng.integers(2**31 - 1))
            out = pipe(prompt, num_inference_steps=int(self.inference_steps), guidance_scale=float(self.guidance_scale),
                       height=int(self.resolution), width=int(self.resolution), output_type="np",
                       generator=torch.Generator(device="cpu").manual_seed(image_seed))
            image = np.clip(np.round(np.asarray(out.images[0]) * 255), 0, 255).astype(np.uint8)
            if not is_blank(image, self.blank_max, self.blank_std):
                break
            rejected.append(image_seed)
            if len(rejected) > self.max_redraws:
                raise PhenosynthError(f"Condition {label}, image {index}: {len(rejected)} black or blank outputs in a "
                                      f"row (seeds {rejected}); the model of this condition is broken (retrain it "
                                      f"with a lower lr or fewer steps).")
            log.warning("Condition %s, image %d: black or blank output (seed %d), drawing again", label, index,
                        image_seed)
        params = {"image_seed": image_seed, "prompt": prompt, "scheduler": self.scheduler,
                  "inference_steps": int(self.inference_steps), "guidance_scale": float(self.guidance_scale),
                  "blank_redraws": len(rejected), "rejected_seeds": rejected, "model": self.folders_[label].name}
        return SyntheticSample(image=image, label=label, parents=list(self.parents_[label]), params=params,
                               index=index)


@GENERATORS.register("dreambooth")
@dataclass(kw_only=True, eq=False)
class DreamBoothGenerator(_DreamBoothBase):
    """Full DreamBooth fine-tune of UNet and text encoder per condition (RDFace: lr 1e-6, 800 steps, 512 px)."""

    name = "dreambooth"
    mode = "full"
    checkpoint_every: int = 200  # a full checkpoint holds the UNet, the text encoder and Adam's moments (~10 GB)


@GENERATORS.register("dreambooth-lora")
@dataclass(kw_only=True, eq=False)
class DreamBoothLoraGenerator(_DreamBoothBase):
    """LoRA DreamBooth per condition: peft adapters on the UNet's attention (and the text encoder's when
    ``train_text_encoder``); rank 4-16, lr 1e-4, 500-1000 steps."""

    name = "dreambooth-lora"
    mode = "lora"
    lr: float = 1e-4
    train_text_encoder: bool = False
