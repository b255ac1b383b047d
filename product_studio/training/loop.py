"""Train: DreamBooth LoRA with class-prior preservation, on a loaded SD 1.x/2.x or SDXL pipeline.

Reads top to bottom like diffusers' ``train_dreambooth_lora.py`` -- add LoRA, prepare data, loop, save --
minus its per-step waste: photos are decoded and resized once, the VAE's latent distribution of every
image and (with a frozen text encoder) the prompt embeddings are computed once. On top: a masked loss from
the cutout's alpha, min-SNR weighting, noise offset, resumable checkpoints, validation renders and a loss
curve. The shared pipeline is left exactly as it was found.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from product_studio.models import model_family, native_resolution
from product_studio.settings import TrainSettings
from product_studio.training import report
from product_studio.training.adapters import ADAPTER, Adapters, trainable_lora
from product_studio.training.checkpoints import Checkpoints, run_key
from product_studio.training.conditioning import PromptConditioner, repeat
from product_studio.training.cpu_conv import mkldnn_enabled, use_mkldnn
from product_studio.training.data import LatentSet, TrainingImage, encode_latent_set
from product_studio.training.export import KOHYA_FILE, save_diffusers_lora, save_kohya_lora
from product_studio.training.losses import dreambooth_loss, min_snr_weights

if TYPE_CHECKING:
    pass

__all__ = ["ADAPTER", "TrainResult", "TrainingError", "train_lora"]

# Settings that change how a run is observed or saved, not the weights it reaches.
_NOT_IN_RUN_KEY = {
    "checkpoint_every",
    "validation_every",
    "validation_prompts",
    "validation_steps",
    "export_kohya",
}


class TrainingError(RuntimeError):
    """Training could not run or diverged; the message says what to change."""


@dataclass
class TrainResult:
    lora_file: Path
    steps: int
    resolution: int
    rank: int
    alpha: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    kohya_file: Path | None = None
    loss_curve: Path | None = None
    validation: list[Path] = field(default_factory=list)
    resumed_from: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        """Mean loss of the last 20 steps (a single step's loss is too noisy to compare runs)."""
        tail = self.losses[-20:]
        return sum(tail) / max(1, len(tail))

    def files(self) -> dict[str, Path]:
        """Every output file by its name relative to the output folder."""
        root = self.lora_file.parent
        paths = [self.lora_file, self.kohya_file, self.loss_curve, root / "training.json", *self.validation]
        return {p.relative_to(root).as_posix(): p for p in paths if p is not None and p.exists()}


class _NoiseSchedule:
    """The training noise schedule's per-timestep constants, as tables looked up each step.

    ``noisy`` equals diffusers' ``DDPMScheduler.add_noise`` and the v target its ``get_velocity``.
    """

    def __init__(self, pipe, device: str) -> None:
        import torch
        from diffusers import DDPMScheduler
        from diffusers.training_utils import compute_snr

        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.count = scheduler.config.num_train_timesteps
        self.v_prediction = scheduler.config.prediction_type == "v_prediction"
        alphas = scheduler.alphas_cumprod.to(device, torch.float32)
        self.signal, self.noise = alphas.sqrt(), (1 - alphas).sqrt()
        self.snr = compute_snr(scheduler, torch.arange(self.count)).to(device)

    def noisy_and_target(self, latents, noise, timesteps):
        a = self.signal[timesteps].view(-1, 1, 1, 1)
        b = self.noise[timesteps].view(-1, 1, 1, 1)
        return a * latents + b * noise, (a * noise - b * latents if self.v_prediction else noise)

    def min_snr_weights(self, timesteps, gamma: float):
        return min_snr_weights(self.snr[timesteps], gamma, self.v_prediction)


def _draw(inst: LatentSet, cls: LatentSet | None, batch: int, flip: bool, gen, scale: float):
    """Fresh latents of ``batch`` instance images (then as many class images) and the instance weights."""
    import torch

    def pick(images: LatentSet):
        index = torch.randint(images.count, (batch,), generator=gen)
        mirrored = torch.randint(2, (batch,), generator=gen).bool() if flip else None
        return images.pick(index, mirrored, gen, scale)

    latents, weights = pick(inst)
    if cls is not None:
        latents = torch.cat([latents, pick(cls)[0]])
    return latents, weights


def _image_bytes(items: list[TrainingImage], classes: list[Image.Image]) -> list[bytes]:
    out = []
    for it in items:
        out.append(it.image.tobytes())
        out.append(b"" if it.mask is None else it.mask.tobytes())
    return out + [im.tobytes() for im in classes]


def _make_optimizer(config: TrainSettings, groups: list[dict[str, Any]]):
    import torch

    if config.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise TrainingError(
                "optimizer 'adamw8bit' needs bitsandbytes (pip install bitsandbytes, CUDA only); "
                "or use optimizer 'adamw'"
            ) from exc
        return bnb.optim.AdamW8bit(groups, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay, fused=True)  # one kernel, CPU and GPU


def train_lora(
    pipe,
    instance_images: list[TrainingImage] | list[Image.Image],
    class_images: list[Image.Image],
    *,
    instance_prompt: str,
    class_prompt: str,
    config: TrainSettings,
    out_dir: Path,
    metadata: dict[str, str] | None = None,
    progress: Callable[[int, float], None] | None = None,
    checkpoints: Checkpoints | None = None,
    product_phrase: str | None = None,
) -> TrainResult:
    """Train a LoRA on ``instance_images`` (prior preservation on ``class_images``); write it to ``out_dir``.

    ``instance_images`` may carry masks (:class:`TrainingImage`); with ``config.masked_loss`` the instance
    loss counts product pixels fully and background pixels at ``config.background_weight``. With
    ``checkpoints``, state is saved every ``config.checkpoint_every`` steps and an identical run resumes
    from the latest checkpoint. ``product_phrase`` replaces ``{product}`` in validation prompts (default:
    the instance prompt without its leading "a photo of ").
    """
    import torch
    from diffusers.optimization import get_scheduler

    instance = [
        im if isinstance(im, TrainingImage) else TrainingImage(im.convert("RGB")) for im in instance_images
    ]
    if not instance:
        raise TrainingError("no instance images to train on")
    use_prior = config.prior_loss_weight > 0 and config.prior_images > 0
    if use_prior and not class_images:
        raise TrainingError("prior preservation is on but there are no class images")
    class_images = class_images if use_prior else []
    started = time.perf_counter()
    timings: dict[str, float] = {}
    family = model_family(pipe)
    resolution = config.resolution or native_resolution(pipe)
    unet = pipe.unet
    # pipe.device walks every module of every component: read it once, never per step.
    pipe_device = pipe.device
    device_type = pipe_device.type
    device = device_type if pipe_device.index is None else str(pipe_device)
    weight_dtype = unet.dtype
    fp16 = weight_dtype == torch.float16
    B = config.batch_size
    gen = torch.Generator("cpu").manual_seed(config.seed)  # every random draw of the loop
    torch.manual_seed(config.seed)  # peft's initial LoRA weights
    phrase = product_phrase or instance_prompt.removeprefix("a photo of ").strip()
    key = None
    if checkpoints is not None:
        parts = {
            "settings": config.model_dump(mode="json", exclude=_NOT_IN_RUN_KEY),
            "prompts": [instance_prompt, class_prompt],
            "family": family,
            "resolution": resolution,
            "dtype": str(weight_dtype),
            "base_model": (metadata or {}).get("base_model", ""),
        }
        key = run_key(parts, _image_bytes(instance, class_images))

    with trainable_lora(pipe, config) as lora, contextlib.ExitStack() as switches:
        # Everything that does not change between steps, computed once.
        t0 = time.perf_counter()
        encode = {
            "resolution": resolution,
            "flip": config.random_flip,
            "device": device,
            "cache": config.cache_latents,
        }
        bg = config.background_weight if config.masked_loss else None
        inst = encode_latent_set(pipe.vae, instance, background_weight=bg, **encode)
        cls = None
        if use_prior:
            cls = encode_latent_set(
                pipe.vae, [TrainingImage(im) for im in class_images], background_weight=None, **encode
            )
        conditioner = PromptConditioner(pipe, resolution, device)
        prompts = [instance_prompt] + ([class_prompt] if use_prior else [])

        def condition():
            return repeat(conditioner.encode(prompts), B)

        fixed_cond = None
        if not config.train_text_encoder:
            with torch.no_grad():
                fixed_cond = condition()
        schedule = _NoiseSchedule(pipe, device)
        scale = pipe.vae.config.scaling_factor
        timings["prepare_s"] = round(time.perf_counter() - t0, 3)

        groups = lora.param_groups(config)
        all_params = [p for g in groups for p in g["params"]]
        optimizer = _make_optimizer(config, groups)
        lr_schedule = get_scheduler(
            config.lr_scheduler,
            optimizer,
            num_warmup_steps=config.lr_warmup_steps,
            num_training_steps=config.steps,
        )
        scaler = torch.amp.GradScaler(device=device_type, enabled=fp16)  # loss scaling for fp16
        autocast = (
            torch.autocast(device_type, dtype=weight_dtype)
            if weight_dtype != torch.float32
            else contextlib.nullcontext()
        )
        losses: list[float] = []
        start_step = 0
        if key is not None and (state := checkpoints.load(key)) is not None:
            lora.load_state(state["lora"])
            optimizer.load_state_dict(state["optimizer"])
            lr_schedule.load_state_dict(state["lr_schedule"])
            scaler.load_state_dict(state["scaler"])
            gen.set_state(state["generator"])
            losses = list(state["losses"])
            start_step = int(state["step"])

        def validate(tag: str) -> list[Path]:
            v0 = time.perf_counter()
            lora.train(False)
            try:
                return report.render_validation(
                    pipe,
                    [p.replace("{product}", phrase) for p in config.validation_prompts],
                    resolution=resolution,
                    steps=config.validation_steps,
                    seed=config.seed,
                    out_dir=out_dir / "validation",
                    tag=tag,
                )
            finally:
                lora.train()
                timings["validation_s"] = round(timings.get("validation_s", 0) + time.perf_counter() - v0, 3)

        def save_checkpoint(done: int) -> None:
            c0 = time.perf_counter()
            state = {
                "step": done,
                "lora": lora.state(),
                "optimizer": optimizer.state_dict(),
                "lr_schedule": lr_schedule.state_dict(),
                "scaler": scaler.state_dict(),
                "generator": gen.get_state(),
                "losses": losses,
            }
            checkpoints.save(key, done, state)
            timings["checkpoint_s"] = round(timings.get("checkpoint_s", 0) + time.perf_counter() - c0, 3)

        lora.train()
        if device_type == "cpu":
            trial_gen = torch.Generator("cpu").manual_seed(0)  # keeps the training RNG untouched
            side = resolution // pipe.vae_scale_factor
            shape = ((2 if cls is not None else 1) * B, unet.config.in_channels, side, side)

            def trial() -> None:
                x = torch.randn(shape, generator=trial_gen).to(device, weight_dtype)
                t = torch.randint(0, schedule.count, (shape[0],), generator=trial_gen).to(device)
                hidden, added = fixed_cond if fixed_cond is not None else condition()
                with autocast:
                    pred = unet(x, t, hidden, added_cond_kwargs=added).sample
                pred.float().square().mean().backward()
                optimizer.zero_grad(set_to_none=True)

            mkldnn = use_mkldnn(config.cpu_conv_backend, unet, trial)
            switches.enter_context(mkldnn_enabled(mkldnn))
            timings["cpu_conv_mkldnn"] = float(mkldnn)

        validation: list[Path] = []
        loop_start = time.perf_counter()
        for step in range(start_step, config.steps):
            step_loss = 0.0
            for _ in range(config.gradient_accumulation_steps):
                latents, weights = _draw(inst, cls, B, config.random_flip, gen, scale)
                noise = torch.randn(latents.shape, generator=gen)
                if config.noise_offset:
                    noise += config.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=gen)
                timesteps = torch.randint(0, schedule.count, (latents.shape[0],), generator=gen).to(device)
                noisy, target = schedule.noisy_and_target(latents, noise.to(device), timesteps)
                hidden, added = fixed_cond if fixed_cond is not None else condition()
                with autocast:
                    pred = unet(noisy.to(weight_dtype), timesteps, hidden, added_cond_kwargs=added).sample
                loss = dreambooth_loss(
                    pred,
                    target,
                    instances=B,
                    weights=weights,
                    sample_weights=None
                    if config.snr_gamma is None
                    else schedule.min_snr_weights(timesteps, config.snr_gamma),
                    prior_loss_weight=config.prior_loss_weight,
                )
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingError(
                        f"loss became {value} at step {step}; lower the learning rate "
                        f"({config.learning_rate}) or train in float32"
                    )
                (scaler.scale(loss) if fp16 else loss).div(config.gradient_accumulation_steps).backward()
                step_loss += value / config.gradient_accumulation_steps
            if fp16:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(all_params, config.max_grad_norm, foreach=True)
            if fp16:
                scaler.step(optimizer)  # skips the step when the fp16 gradients overflowed
                scaler.update()
            else:
                optimizer.step()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            done = step + 1
            if progress is not None:
                progress(done, step_loss)
            if (
                key is not None
                and config.checkpoint_every
                and done % config.checkpoint_every == 0
                and done < config.steps
            ):
                save_checkpoint(done)
            if config.validation_every and done % config.validation_every == 0 and done < config.steps:
                validation += validate(f"step-{done:06d}")
        extras = timings.get("validation_s", 0) + timings.get("checkpoint_s", 0)
        timings["loop_s"] = round(time.perf_counter() - loop_start - extras, 3)
        if config.steps > start_step:
            timings["step_ms"] = round(1000 * timings["loop_s"] / (config.steps - start_step), 2)

        meta = {
            "family": family,
            "rank": config.rank,
            "alpha": config.lora_alpha,
            "steps": config.steps,
            "resolution": resolution,
            "instance_prompt": instance_prompt,
            "class_prompt": class_prompt,
            "train_text_encoder": config.train_text_encoder,
            "seed": config.seed,
            **(metadata or {}),
        }
        lora_file, kohya, curve = _write_outputs(pipe, lora, config, out_dir, meta, losses, instance_prompt)
        validation += validate("final") if config.validation_prompts else []
        if key is not None:
            checkpoints.clear(key)
    timings["total_s"] = round(time.perf_counter() - started, 3)
    result = TrainResult(
        lora_file,
        config.steps,
        resolution,
        config.rank,
        config.lora_alpha,
        timings["total_s"],
        losses,
        kohya,
        curve,
        validation,
        start_step,
        timings,
    )
    summary = {
        "settings": config.model_dump(mode="json"),
        "metadata": {k: str(v) for k, v in meta.items()},
        "resumed_from": start_step,
        "timings_s": timings,
        "final_loss": round(result.final_loss, 6),
        "losses": [round(v, 6) for v in losses],
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=1))
    return result


def _write_outputs(
    pipe,
    lora: Adapters,
    config: TrainSettings,
    out_dir: Path,
    meta: dict[str, Any],
    losses: list[float],
    instance_prompt: str,
) -> tuple[Path, Path | None, Path]:
    """The LoRA in diffusers' format, the optional kohya copy and the loss curve."""
    state = lora.state()
    configs = {n: c.to_dict() for n, c in lora.configs.items()}
    lora_file = save_diffusers_lora(pipe, out_dir, state, configs, meta)
    kohya = None
    if config.export_kohya:
        kohya = save_kohya_lora(out_dir / KOHYA_FILE, state, config.lora_alpha, str(meta["family"]), meta)
    curve = report.loss_curve_png(losses, out_dir / "loss.png", f"training loss ({instance_prompt})")
    return lora_file, kohya, curve
