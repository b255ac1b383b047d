"""Train: DreamBooth LoRA with class-prior preservation, on a loaded SD 1.x/2.x or SDXL pipeline.

Reads top to bottom like diffusers' ``train_dreambooth_lora.py`` -- freeze, add LoRA, prepare data, loop,
save -- minus its per-step waste: photos are decoded and resized once, the VAE's latent distribution of
every image and (with a frozen text encoder) the prompt embeddings are computed once. On top: a masked
loss from the cutout's alpha, min-SNR weighting, noise offset, resumable checkpoints, validation renders
and a loss curve. The shared pipeline is left exactly as it was found.
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
from product_studio.training.checkpoints import Checkpoints, run_key
from product_studio.training.conditioning import PromptConditioner, repeat
from product_studio.training.data import TrainingImage, encode_latent_set
from product_studio.training.export import KOHYA_FILE, save_diffusers_lora, save_kohya_lora
from product_studio.training.lean_lora import lean_lora_forward
from product_studio.training.losses import dreambooth_loss, min_snr_weights

if TYPE_CHECKING:
    import torch

ADAPTER = "product"
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
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

    def files(self) -> dict[str, Path]:
        """Every output file by its name relative to the output folder."""
        root = self.lora_file.parent
        paths = [self.lora_file, self.kohya_file, self.loss_curve, root / "training.json", *self.validation]
        return {p.relative_to(root).as_posix(): p for p in paths if p is not None and p.exists()}


def _as_training_images(images: list[TrainingImage] | list[Image.Image]) -> list[TrainingImage]:
    return [im if isinstance(im, TrainingImage) else TrainingImage(im.convert("RGB")) for im in images]


def _text_encoders(pipe) -> dict[str, Any]:
    names = ["text_encoder", "text_encoder_2"] if model_family(pipe) == "sdxl" else ["text_encoder"]
    return {n: getattr(pipe, n) for n in names}


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


_CONV_CHOICE: dict[tuple, bool] = {}


@contextlib.contextmanager
def _mkldnn(enabled: bool):
    import torch

    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def _cpu_conv_uses_mkldnn(setting: str, unet, run_step: Callable[[], None]) -> bool:
    """oneDNN (mkldnn) convolutions win on wide layers; small ones run faster natively. ``auto`` times
    both once per model and shape in this process (like ``cudnn.benchmark``) and remembers the winner."""

    if setting != "auto":
        return setting == "mkldnn"
    key = (id(unet), unet.config.sample_size, tuple(unet.config.block_out_channels))
    if key not in _CONV_CHOICE:
        times: dict[bool, list[float]] = {True: [], False: []}
        for enabled in (True, False):  # warm-up both
            with _mkldnn(enabled):
                run_step()
        for _ in range(3):  # interleaved, so a busy moment on the machine hits both alike
            for enabled in (True, False):
                with _mkldnn(enabled):
                    t0 = time.perf_counter()
                    run_step()
                    times[enabled].append(time.perf_counter() - t0)
        _CONV_CHOICE[key] = sorted(times[True])[1] <= sorted(times[False])[1]  # medians
    return _CONV_CHOICE[key]


def _image_bytes(items: list[TrainingImage], classes: list[Image.Image]) -> list[bytes]:
    out = []
    for it in items:
        out.append(it.image.tobytes())
        out.append(b"" if it.mask is None else it.mask.tobytes())
    return out + [im.tobytes() for im in classes]


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
    from diffusers import DDPMScheduler
    from diffusers.models.attention_processor import AttnProcessor
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params, compute_snr
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    instance = _as_training_images(instance_images)
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
    alpha = config.alpha or config.rank
    unet = pipe.unet
    # pipe.device walks every module of every component: read it once, never per step.
    pipe_device = pipe.device
    device_type = pipe_device.type
    device = device_type if pipe_device.index is None else str(pipe_device)
    weight_dtype = unet.dtype
    encoders = _text_encoders(pipe)
    gen = torch.Generator("cpu").manual_seed(config.seed)
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

    for module in (pipe.vae, unet, *encoders.values()):
        module.requires_grad_(False)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    saved_processors = unet.attn_processors if config.attention == "eager" else None
    lora_configs = {
        "unet": LoraConfig(
            r=config.rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=UNET_TARGETS
        )
    }
    trained: dict[str, Any] = {"unet": unet}
    if config.train_text_encoder:
        for name, encoder in encoders.items():
            lora_configs[name] = LoraConfig(
                r=config.rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=TEXT_TARGETS
            )
            trained[name] = encoder
    conv_flags = contextlib.ExitStack()
    try:
        for name, module in trained.items():
            module.add_adapter(lora_configs[name], adapter_name=ADAPTER)
            cast_training_params(module, dtype=torch.float32)  # trainable LoRA weights stay fp32
        if saved_processors is not None:
            unet.set_attn_processor(AttnProcessor())
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            for name in trained.keys() - {"unet"}:
                trained[name].gradient_checkpointing_enable()

        # Everything that does not change between steps, computed once.
        t0 = time.perf_counter()
        scale = pipe.vae.config.scaling_factor
        inst = encode_latent_set(
            pipe.vae,
            instance,
            resolution,
            flip=config.random_flip,
            background_weight=config.background_weight if config.masked_loss else None,
            device=device,
            cache=config.cache_latents,
        )
        cls = (
            encode_latent_set(
                pipe.vae,
                [TrainingImage(im) for im in class_images],
                resolution,
                flip=config.random_flip,
                background_weight=None,
                device=device,
                cache=config.cache_latents,
            )
            if use_prior
            else None
        )
        conditioner = PromptConditioner(pipe, resolution, device)
        prompts = [instance_prompt] + ([class_prompt] if use_prior else [])

        def condition():
            return repeat(conditioner.encode(prompts), config.batch_size)

        fixed_cond = None
        if not config.train_text_encoder:
            with torch.no_grad():
                fixed_cond = condition()
        timings["prepare_s"] = round(time.perf_counter() - t0, 3)

        params = {name: [p for p in m.parameters() if p.requires_grad] for name, m in trained.items()}
        groups = [{"params": params["unet"], "lr": config.learning_rate}]
        for name in trained.keys() - {"unet"}:
            groups.append({"params": params[name], "lr": config.text_encoder_lr or config.learning_rate})
        all_params = [p for g in groups for p in g["params"]]
        optimizer = _make_optimizer(config, groups)
        lr_schedule = get_scheduler(
            config.lr_scheduler,
            optimizer,
            num_warmup_steps=config.lr_warmup_steps,
            num_training_steps=config.steps,
        )
        fp16 = weight_dtype == torch.float16
        scaler = torch.amp.GradScaler(device=device_type, enabled=fp16)  # loss scaling for fp16
        n_timesteps = noise_scheduler.config.num_train_timesteps
        # Per-timestep constants of the noise schedule, looked up each step instead of recomputed.
        all_t = torch.arange(n_timesteps)
        snr_table = compute_snr(noise_scheduler, all_t).to(device)
        alphas = noise_scheduler.alphas_cumprod.to(device, torch.float32)
        signal_table, noise_table = alphas.sqrt(), (1 - alphas).sqrt()
        v_pred = noise_scheduler.config.prediction_type == "v_prediction"
        B = config.batch_size
        losses: list[float] = []
        start_step = 0

        if checkpoints is not None and key is not None:
            state = checkpoints.load(key)
            if state is not None:
                for name, module in trained.items():
                    set_peft_model_state_dict(module, state["lora"][name], adapter_name=ADAPTER)
                optimizer.load_state_dict(state["optimizer"])
                lr_schedule.load_state_dict(state["lr_schedule"])
                scaler.load_state_dict(state["scaler"])
                gen.set_state(state["generator"])
                losses = list(state["losses"])
                start_step = int(state["step"])

        def lora_state() -> dict[str, dict[str, torch.Tensor]]:
            return {
                name: {
                    k: v.detach().cpu().clone()
                    for k, v in get_peft_model_state_dict(m, adapter_name=ADAPTER).items()
                }
                for name, m in trained.items()
            }

        def validate(tag: str) -> list[Path]:
            v0 = time.perf_counter()
            for m in trained.values():
                m.eval()
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
                for m in trained.values():
                    m.train()
                timings["validation_s"] = round(timings.get("validation_s", 0) + time.perf_counter() - v0, 3)

        validation: list[Path] = []
        for m in trained.values():
            m.train()
        autocast = (
            torch.autocast(device_type, dtype=weight_dtype)
            if weight_dtype != torch.float32
            else contextlib.nullcontext()
        )
        conv_flags.enter_context(lean_lora_forward(list(trained.values()), ADAPTER, config.lean_lora))
        if device_type == "cpu":
            trial_gen = torch.Generator("cpu").manual_seed(0)  # keeps the training RNG untouched
            side = resolution // pipe.vae_scale_factor
            shape = ((2 if cls is not None else 1) * B, unet.config.in_channels, side, side)

            def trial() -> None:
                x = torch.randn(shape, generator=trial_gen).to(device, weight_dtype)
                t = torch.randint(0, n_timesteps, (shape[0],), generator=trial_gen).to(device)
                hidden, added = fixed_cond if fixed_cond is not None else condition()
                with autocast:
                    pred = unet(x, t, hidden, added_cond_kwargs=added).sample
                pred.float().square().mean().backward()
                optimizer.zero_grad(set_to_none=True)

            mkldnn = _cpu_conv_uses_mkldnn(config.cpu_conv_backend, unet, trial)
            conv_flags.enter_context(_mkldnn(mkldnn))
            timings["cpu_conv_mkldnn"] = float(mkldnn)
        loop_start = time.perf_counter()
        for step in range(start_step, config.steps):
            step_loss = 0.0
            for _ in range(config.gradient_accumulation_steps):
                i = torch.randint(inst.count, (B,), generator=gen)
                flip_i = torch.randint(2, (B,), generator=gen).bool() if config.random_flip else None
                latents, weights = inst.pick(i, flip_i, gen, scale)
                if cls is not None:
                    j = torch.randint(cls.count, (B,), generator=gen)
                    flip_j = torch.randint(2, (B,), generator=gen).bool() if config.random_flip else None
                    cls_latents, _ = cls.pick(j, flip_j, gen, scale)
                    latents = torch.cat([latents, cls_latents])
                noise = torch.randn(latents.shape, generator=gen)
                if config.noise_offset:
                    noise += config.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=gen)
                noise = noise.to(latents.device)
                timesteps = torch.randint(0, n_timesteps, (latents.shape[0],), generator=gen).to(
                    latents.device
                )
                a = signal_table[timesteps].view(-1, 1, 1, 1)
                b = noise_table[timesteps].view(-1, 1, 1, 1)
                noisy = a * latents + b * noise  # = noise_scheduler.add_noise(latents, noise, timesteps)
                target = a * noise - b * latents if v_pred else noise  # = get_velocity(...)
                hidden, added = fixed_cond if fixed_cond is not None else condition()
                with autocast:
                    pred = unet(noisy.to(weight_dtype), timesteps, hidden, added_cond_kwargs=added).sample
                loss = dreambooth_loss(
                    pred,
                    target,
                    instances=B,
                    weights=weights,
                    sample_weights=(
                        min_snr_weights(snr_table[timesteps], config.snr_gamma, v_pred)
                        if config.snr_gamma is not None
                        else None
                    ),
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
                checkpoints is not None
                and config.checkpoint_every
                and done % config.checkpoint_every == 0
                and done < config.steps
            ):
                c0 = time.perf_counter()
                checkpoints.save(
                    key,
                    done,
                    {
                        "step": done,
                        "lora": lora_state(),
                        "optimizer": optimizer.state_dict(),
                        "lr_schedule": lr_schedule.state_dict(),
                        "scaler": scaler.state_dict(),
                        "generator": gen.get_state(),
                        "losses": losses,
                    },
                )
                timings["checkpoint_s"] = round(timings.get("checkpoint_s", 0) + time.perf_counter() - c0, 3)
            if config.validation_every and done % config.validation_every == 0 and done < config.steps:
                validation += validate(f"step-{done:06d}")
        timings["loop_s"] = round(
            time.perf_counter()
            - loop_start
            - timings.get("validation_s", 0)
            - timings.get("checkpoint_s", 0),
            3,
        )
        if config.steps > start_step:
            timings["step_ms"] = round(1000 * timings["loop_s"] / (config.steps - start_step), 2)

        # Outputs: the LoRA (diffusers format), optional kohya copy, loss curve, final validation renders.
        state = lora_state()
        meta = {
            "family": family,
            "rank": config.rank,
            "alpha": alpha,
            "steps": config.steps,
            "resolution": resolution,
            "instance_prompt": instance_prompt,
            "class_prompt": class_prompt,
            "train_text_encoder": config.train_text_encoder,
            "seed": config.seed,
            **(metadata or {}),
        }
        lora_file = save_diffusers_lora(
            pipe, out_dir, state, {n: c.to_dict() for n, c in lora_configs.items()}, meta
        )
        kohya = (
            save_kohya_lora(out_dir / KOHYA_FILE, state, alpha, family, meta) if config.export_kohya else None
        )
        curve = report.loss_curve_png(losses, out_dir / "loss.png", f"training loss ({instance_prompt})")
        validation += validate("final") if config.validation_prompts else []
        if checkpoints is not None and key is not None:
            checkpoints.clear(key)
    finally:
        conv_flags.close()
        for module in trained.values():
            module.eval()
        if config.gradient_checkpointing:
            unet.disable_gradient_checkpointing()
            for name in trained.keys() - {"unet"}:
                trained[name].gradient_checkpointing_disable()
        if saved_processors is not None:
            unet.set_attn_processor(saved_processors)
        for name, module in trained.items():
            if ADAPTER in (getattr(module, "peft_config", None) or {}):
                module.delete_adapters(ADAPTER) if name == "unet" else module.delete_adapter(ADAPTER)
    seconds = round(time.perf_counter() - started, 3)
    timings["total_s"] = seconds
    result = TrainResult(
        lora_file,
        config.steps,
        resolution,
        config.rank,
        alpha,
        seconds,
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
        "final_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 6),
        "losses": [round(v, 6) for v in losses],
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=1))
    return result
