"""Train: DreamBooth LoRA with class-prior preservation, on a loaded SD 1.x/2.x or SDXL pipeline.

Reads top to bottom like diffusers' ``train_dreambooth_lora.py`` -- prepare, (resume), steps, finish --
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
from typing import Any

from PIL import Image

from product_studio.identifiers import ProductPrompts
from product_studio.models import model_family
from product_studio.training import report
from product_studio.training.adapters import Adapters, trainable_lora
from product_studio.training.checkpoints import Checkpoints, run_key
from product_studio.training.conditioning import PromptConditioner, repeat
from product_studio.training.config import TrainConfig
from product_studio.training.cpu_conv import convolution_backend
from product_studio.training.data import LatentSet, TrainingImage, encode_latent_set
from product_studio.training.export import KOHYA_FILE, save_diffusers_lora, save_kohya_lora
from product_studio.training.flat_params import flat_groups, views_intact
from product_studio.training.losses import NoiseSchedule, dreambooth_loss
from product_studio.training.parallel_halves import Halves, add_gradients, two_halves
from product_studio.training.traced_unet import trace_unet

__all__ = ["TrainResult", "TrainingError", "train_lora", "worth_retrying"]


class TrainingError(RuntimeError):
    """Training could not run or diverged; the message says what to change."""


def worth_retrying(exc: BaseException | None) -> bool:
    """A lost worker or a storage outage is worth another try (the run resumes from its checkpoint);
    divergence, bad input, a storage error that stays (denied, missing) or a GPU too small are not."""
    from product_studio.storage import StorageError

    if isinstance(exc, StorageError):
        return exc.transient
    return not isinstance(exc, TrainingError | ValueError) and type(exc).__name__ != "OutOfMemoryError"


@dataclass
class TrainResult:
    """What a finished run wrote and how it went."""

    lora_file: Path
    steps: int
    resolution: int
    rank: int
    alpha: int
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


@dataclass
class _Run:
    """Everything the steps need, prepared once, and the state a checkpoint saves."""

    config: TrainConfig
    unet: Any
    device: str
    dtype: Any  # the frozen weights' dtype; LoRA weights train in float32
    instances: LatentSet
    classes: LatentSet | None
    encode_prompts: Callable[[], tuple[Any, Any]]  # (hidden states, SDXL extras) for one step's batch
    fixed_prompts: tuple[Any, Any] | None  # the same, computed once when the text encoders are frozen
    schedule: NoiseSchedule
    latent_scale: float
    latent_shape: tuple[int, int, int]  # one image's latents: channels, height, width
    params: list[Any]  # the trainable tensors, as the model uses them
    optimizer: Any
    optimized: list[Any]  # what the optimizer steps and clips: ``params``, or flat buffers (lean_lora)
    lr_schedule: Any
    scaler: Any  # fp16 loss scaling; disabled (every call a no-op) for float32 and bfloat16
    autocast: Any
    generator: Any  # every random draw of the loop, so a resumed run continues the same sequence
    losses: list[float] = field(default_factory=list)
    step: int = 0
    traced: Callable[..., Any] | None = None  # the UNet as a trace (config.trace_unet), else None
    halves: Halves | None = None  # runs a step's two halves at once (config.parallel_halves)

    @property
    def call_batch(self) -> int:
        """Samples per UNet call: both halves of a step together, or one half when they run apart."""
        parts = 2 if self.classes is not None and self.halves is None else 1
        return parts * self.config.batch_size

    def denoise(self, noisy, timesteps, hidden, added):
        """The UNet's prediction for one step's batch."""
        if self.traced is not None:  # never for SDXL's extra conditioning (see _traced_unet)
            return self.traced(noisy, timesteps, hidden)
        return self.unet(noisy, timesteps, hidden, added_cond_kwargs=added).sample

    def prompts(self) -> tuple[Any, Any]:
        return self.fixed_prompts if self.fixed_prompts is not None else self.encode_prompts()

    def draw_latents(self):
        """Fresh latents of ``batch_size`` instance images, then as many class images; instance weights."""
        import torch

        def pick(images: LatentSet):
            index = torch.randint(images.count, (self.config.batch_size,), generator=self.generator)
            flip = self.config.random_flip
            mirrored = torch.randint(2, index.shape, generator=self.generator).bool() if flip else None
            return images.pick(index, mirrored, self.generator, self.latent_scale)

        latents, weights = pick(self.instances)
        if self.classes is not None:
            latents = torch.cat([latents, pick(self.classes)[0]])
        return latents, weights

    def draw_noise(self, latents):
        """Gaussian noise (plus the optional per-channel offset) and a random timestep per sample."""
        import torch

        noise = torch.randn(latents.shape, generator=self.generator)
        if self.config.noise_offset:
            noise += self.config.noise_offset * torch.randn(
                (*latents.shape[:2], 1, 1), generator=self.generator
            )
        timesteps = torch.randint(0, self.schedule.count, (latents.shape[0],), generator=self.generator)
        return noise.to(self.device), timesteps.to(self.device)

    def state(self, lora: Adapters) -> dict[str, Any]:
        return {
            "step": self.step,
            "lora": lora.state(),
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "losses": self.losses,
        }

    def load_state(self, lora: Adapters, state: dict[str, Any]) -> None:
        lora.load_state(state["lora"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        self.losses = list(state["losses"])
        self.step = int(state["step"])


def train_lora(
    pipe,
    instance_images: list[TrainingImage] | list[Image.Image],
    class_images: list[Image.Image],
    *,
    prompts: ProductPrompts,
    config: TrainConfig,
    out_dir: Path,
    metadata: dict[str, str] | None = None,
    progress: Callable[[int, float], None] | None = None,
    checkpoints: Checkpoints | None = None,
) -> TrainResult:
    """Train a LoRA on ``instance_images`` (prior preservation on ``class_images``); write it to ``out_dir``.

    ``instance_images`` may carry masks (:class:`TrainingImage`); with ``config.masked_loss`` the instance
    loss counts product pixels fully and background pixels at ``config.background_weight``. With
    ``checkpoints``, state is saved every ``config.checkpoint_every`` steps and an identical run resumes
    from the latest checkpoint. ``metadata`` is added to the LoRA file's header (identifier and class noun
    are always there).
    """
    instance = [
        im if isinstance(im, TrainingImage) else TrainingImage(im.convert("RGB")) for im in instance_images
    ]
    if not instance:
        raise TrainingError("no instance images to train on")
    if config.uses_prior and not class_images:
        raise TrainingError("prior preservation is on but there are no class images")
    class_images = class_images if config.uses_prior else []
    started = time.perf_counter()
    timings: dict[str, float] = {}
    resolution = config.resolution_for(pipe)
    meta = _lora_metadata(pipe, config, prompts, resolution, metadata)
    import torch

    torch.manual_seed(config.seed)  # peft's initial LoRA weights
    with trainable_lora(pipe, config) as lora, contextlib.ExitStack() as switches:
        # Prepare: everything that does not change between steps, computed once.
        t0 = time.perf_counter()
        run = _prepare(pipe, lora, instance, class_images, prompts, config, resolution)
        timings["prepare_s"] = _since(t0)

        # Resume: the latest checkpoint of this exact run (same settings, prompts, images, base model).
        key = None
        if checkpoints is not None:
            key = run_key(
                config,
                prompts=[prompts.instance, prompts.class_prompt],
                family=meta["family"],
                resolution=resolution,
                dtype=str(run.dtype),
                base_model=str(meta.get("base_model", "")),
                images=instance,
                class_images=class_images,
            )
            if (state := checkpoints.load(key)) is not None:
                run.load_state(lora, state)
        resumed_from = run.step

        # Steps: one optimizer step each, then the side effects a step may be due for.
        lora.train()
        halves = switches.enter_context(contextlib.ExitStack())
        if config.parallel_halves and _halves_apply(run):  # first: it sets the threads and batch to trace for
            run.halves = halves.enter_context(two_halves())
        if config.trace_unet:  # after a resume, which loads weights into the parameters the trace shares
            t0 = time.perf_counter()
            run.traced = _traced_unet(run)
            timings["unet_traced"] = float(run.traced is not None)
            timings["trace_s"] = _since(t0)
        if config.parallel_halves:
            if run.traced is None:  # an eager UNet holds Python's lock: its halves would only take turns
                halves.close()
                run.halves = None
            timings["parallel_halves"] = float(run.halves is not None)
        # Tuned last, for the batch and threads the steps will use (the trace picks the backend as it runs).
        backend = switches.enter_context(_cpu_convolutions(run, config.cpu_conv_backend))
        if backend is not None:
            timings["cpu_conv_mkldnn"] = float(backend)
        if config.lean_lora and not views_intact(run.params, run.optimized):
            raise TrainingError(
                "the LoRA's gradients left their flat buffer before the first step (a bug); "
                "turn lean_lora off"
            )
        validation: list[Path] = []
        loop_start = time.perf_counter()
        while run.step < config.steps:
            loss = _step(run)
            if progress is not None:
                progress(run.step, loss)
            if run.step < config.steps and key is not None and _due(run.step, config.checkpoint_every):
                t0 = time.perf_counter()
                checkpoints.save(key, run.step, run.state(lora))
                timings["checkpoint_s"] = timings.get("checkpoint_s", 0) + _since(t0)
            if run.step < config.steps and _due(run.step, config.validation_every):
                with run.halves.all_threads() if run.halves else contextlib.nullcontext():
                    validation += _validate(
                        pipe, lora, prompts, config, resolution, out_dir, f"step-{run.step:06d}", timings
                    )
        side_effects = timings.get("validation_s", 0) + timings.get("checkpoint_s", 0)
        timings["loop_s"] = round(time.perf_counter() - loop_start - side_effects, 3)
        if config.steps > resumed_from:
            timings["step_ms"] = round(1000 * timings["loop_s"] / (config.steps - resumed_from), 2)

        # Finish: the LoRA files, loss curve and summary, final validation renders, checkpoints cleared.
        switches.close()  # the loop's switches (the halves' threads too) end with the loop
        result = _write_outputs(pipe, lora, config, out_dir, meta, run.losses, prompts)
        if config.validation_prompts:
            validation += _validate(pipe, lora, prompts, config, resolution, out_dir, "final", timings)
        if key is not None:
            checkpoints.clear(key)
    timings["total_s"] = _since(started)
    result.validation, result.resumed_from, result.timings = validation, resumed_from, timings
    _write_summary(result, config, meta, out_dir)
    return result


def _step(run: _Run) -> float:
    """One optimizer step: forward and backward over the accumulated micro-batches, clip, step, zero."""
    import torch

    config = run.config
    accumulate = config.gradient_accumulation_steps
    step_loss = 0.0
    for _ in range(accumulate):
        latents, weights = run.draw_latents()  # instance images first, then as many class images
        noise, timesteps = run.draw_noise(latents)
        noisy, target = run.schedule.noisy_and_target(latents, noise, timesteps)
        snr = None if config.snr_gamma is None else run.schedule.min_snr_weights(timesteps, config.snr_gamma)
        batch = _Batch(noisy.to(run.dtype), timesteps, *run.prompts(), target, weights, snr)
        value = (_backward_halves if run.halves is not None else _backward)(run, batch, accumulate)
        if not math.isfinite(value):
            raise TrainingError(
                f"loss became {value} at step {run.step}; lower the learning rate "
                f"({config.learning_rate}) or train in float32"
            )
        step_loss += value / accumulate
    run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the loss-scaled ones
    torch.nn.utils.clip_grad_norm_(run.optimized, config.max_grad_norm, foreach=True)
    run.scaler.step(run.optimizer)  # with fp16, skipped when the gradients overflowed
    run.scaler.update()
    run.lr_schedule.step()
    run.optimizer.zero_grad(set_to_none=not config.lean_lora)  # flat gradients stay, their views with them
    run.losses.append(step_loss)
    run.step += 1
    return step_loss


@dataclass
class _Batch:
    """One micro-batch: ``batch_size`` instance samples, then (with prior preservation) as many class ones."""

    noisy: Any
    timesteps: Any
    hidden: Any
    added: Any
    target: Any
    weights: Any  # the instance samples' pixel weights (cutout alpha with a background floor), or None
    snr: Any  # per-sample min-SNR weights, or None

    def loss(self, run: _Run, part: slice = slice(None), weights: Any = None) -> Any:
        """The DreamBooth loss of the samples in ``part`` (all: instance + lambda x prior)."""
        with run.autocast:
            pred = run.denoise(self.noisy[part], self.timesteps[part], self.hidden[part], self.added)
        return dreambooth_loss(
            pred,
            self.target[part],
            instances=run.config.batch_size,
            weights=weights,
            sample_weights=None if self.snr is None else self.snr[part],
            prior_loss_weight=run.config.prior_loss_weight,
        )


def _backward(run: _Run, batch: _Batch, accumulate: int) -> float:
    """The whole micro-batch in one UNet call; its gradient accumulated into ``.grad``; its loss."""
    loss = batch.loss(run, weights=batch.weights)
    run.scaler.scale(loss).div(accumulate).backward()
    return float(loss.detach())


def _backward_halves(run: _Run, batch: _Batch, accumulate: int) -> float:
    """The instance half here and the class half on the worker thread, at once (``parallel_halves``)."""
    import torch

    n = run.config.batch_size

    def instance_half():
        loss = batch.loss(run, slice(0, n), batch.weights)
        run.scaler.scale(loss).div(accumulate).backward()
        return float(loss.detach())

    def class_half():
        loss = run.config.prior_loss_weight * batch.loss(run, slice(n, None))
        scaled = run.scaler.scale(loss).div(accumulate)
        return float(loss.detach()), torch.autograd.grad(scaled, run.params, materialize_grads=True)

    instance_loss, (class_loss, grads) = run.halves(instance_half, class_half)
    add_gradients(run.params, grads)  # after the instance half's, always: the same bits every run
    return instance_loss + class_loss


def _prepare(
    pipe,
    lora: Adapters,
    instance: list[TrainingImage],
    class_images: list[Image.Image],
    prompts: ProductPrompts,
    config: TrainConfig,
    resolution: int,
) -> _Run:
    """Latents and loss weights of every image, prompt embeddings, noise schedule, optimizer, scaler."""
    import torch
    from diffusers.optimization import get_scheduler

    # pipe.device walks every module of every component: read it once, never per step.
    device = pipe.device.type if pipe.device.index is None else str(pipe.device)
    encode = {
        "resolution": resolution,
        "flip": config.random_flip,
        "device": device,
        "cache": config.cache_latents,
    }
    background = config.background_weight if config.masked_loss else None
    instances = encode_latent_set(pipe.vae, instance, background_weight=background, **encode)
    classes = None
    if class_images:
        classes = encode_latent_set(
            pipe.vae, [TrainingImage(im) for im in class_images], background_weight=None, **encode
        )
    conditioner = PromptConditioner(pipe, resolution, device)
    texts = [prompts.instance] + ([prompts.class_prompt] if class_images else [])

    def encode_prompts():
        return repeat(conditioner.encode(texts), config.batch_size)

    fixed = None
    if not config.train_text_encoder:
        with torch.no_grad():
            fixed = encode_prompts()
    groups = lora.param_groups(config)
    params = [p for g in groups for p in g["params"]]
    if config.lean_lora:
        groups = flat_groups(groups)
    optimizer = _make_optimizer(config, groups)
    weight_dtype = pipe.unet.dtype
    return _Run(
        config=config,
        unet=pipe.unet,
        device=device,
        dtype=weight_dtype,
        instances=instances,
        classes=classes,
        encode_prompts=encode_prompts,
        fixed_prompts=fixed,
        schedule=NoiseSchedule(pipe, device),
        latent_scale=pipe.vae.config.scaling_factor,
        latent_shape=(pipe.unet.config.in_channels, *(2 * [resolution // pipe.vae_scale_factor])),
        params=params,
        optimizer=optimizer,
        optimized=[p for g in groups for p in g["params"]],
        lr_schedule=get_scheduler(
            config.lr_scheduler,
            optimizer,
            num_warmup_steps=config.lr_warmup_steps,
            num_training_steps=config.steps,
        ),
        scaler=torch.amp.GradScaler(device=pipe.device.type, enabled=weight_dtype == torch.float16),
        autocast=torch.autocast(pipe.device.type, dtype=weight_dtype)
        if weight_dtype != torch.float32
        else contextlib.nullcontext(),
        generator=torch.Generator("cpu").manual_seed(config.seed),
    )


def _make_optimizer(config: TrainConfig, groups: list[dict[str, Any]]):
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


def _example_batch(run: _Run) -> dict[str, Any]:
    """UNet keyword arguments shaped like a training step's, drawn from a throwaway generator (the training
    RNG stays untouched)."""
    import torch

    gen = torch.Generator("cpu").manual_seed(0)
    batch = run.call_batch
    hidden, added = run.prompts()
    return {
        "sample": torch.randn((batch, *run.latent_shape), generator=gen).to(run.device, run.dtype),
        "timestep": torch.randint(0, run.schedule.count, (batch,), generator=gen).to(run.device),
        "encoder_hidden_states": hidden[:batch],
        "added_cond_kwargs": added,
    }


def _cpu_convolutions(run: _Run, setting: str):
    """The CPU convolution backend for the loop (opt-in, see ``cpu_conv``); a no-op on other devices."""
    if run.device != "cpu" or setting == "default":
        return convolution_backend("default", run.unet, {})
    return convolution_backend(setting, run.unet, _example_batch(run), run.autocast)


def _halves_apply(run: _Run) -> bool:
    """Whether a step has two halves to run apart, each as a trace: prior preservation, a frozen text encoder
    (one text-encoder graph cannot take two backward passes at once), the CPU, a float32 SD 1.x/2.x UNet."""
    import torch

    return (
        run.classes is not None
        and run.fixed_prompts is not None
        and run.fixed_prompts[1] is None  # SDXL's extra conditioning: no trace
        and run.device == "cpu"
        and run.dtype == torch.float32
    )


def _traced_unet(run: _Run):
    """The UNet traced on a batch shaped like the steps' (None where a trace does not apply)."""
    import torch

    example = _example_batch(run)
    if example["added_cond_kwargs"] is not None or run.dtype != torch.float32:  # SDXL, autocast: eager
        return None
    return trace_unet(run.unet, example["sample"], example["timestep"], example["encoder_hidden_states"])


def _due(step: int, every: int) -> bool:
    return bool(every) and step % every == 0


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


def _validate(
    pipe,
    lora: Adapters,
    prompts: ProductPrompts,
    config: TrainConfig,
    resolution: int,
    out_dir: Path,
    tag: str,
    timings: dict[str, float],
) -> list[Path]:
    """Render the validation prompts with the LoRA as it is now (adapters in eval mode meanwhile)."""
    t0 = time.perf_counter()
    lora.train(False)
    try:
        return report.render_validation(
            pipe,
            [prompts.fill(p) for p in config.validation_prompts],
            resolution=resolution,
            steps=config.validation_steps,
            seed=config.seed,
            out_dir=out_dir / "validation",
            tag=tag,
        )
    finally:
        lora.train()
        timings["validation_s"] = round(timings.get("validation_s", 0) + time.perf_counter() - t0, 3)


def _lora_metadata(
    pipe, config: TrainConfig, prompts: ProductPrompts, resolution: int, extra: dict[str, str] | None
) -> dict[str, Any]:
    """What the LoRA file's header records about the run."""
    return {
        "family": model_family(pipe),
        "rank": config.rank,
        "alpha": config.lora_alpha,
        "steps": config.steps,
        "resolution": resolution,
        "instance_prompt": prompts.instance,
        "class_prompt": prompts.class_prompt,
        "train_text_encoder": config.train_text_encoder,
        "seed": config.seed,
        "identifier": prompts.identifier,
        "class_noun": prompts.class_noun,
        **(extra or {}),
    }


def _write_outputs(
    pipe,
    lora: Adapters,
    config: TrainConfig,
    out_dir: Path,
    meta: dict[str, Any],
    losses: list[float],
    prompts: ProductPrompts,
) -> TrainResult:
    """The LoRA in diffusers' format, the optional kohya copy and the loss curve."""
    state = lora.state()
    configs = {n: c.to_dict() for n, c in lora.configs.items()}
    lora_file = save_diffusers_lora(pipe, out_dir, state, configs, meta)
    kohya = None
    if config.export_kohya:
        kohya = save_kohya_lora(out_dir / KOHYA_FILE, state, config.lora_alpha, str(meta["family"]), meta)
    curve = report.loss_curve_png(losses, out_dir / "loss.png", f"training loss ({prompts.instance})")
    return TrainResult(
        lora_file=lora_file,
        steps=config.steps,
        resolution=int(meta["resolution"]),
        rank=config.rank,
        alpha=config.lora_alpha,
        losses=losses,
        kohya_file=kohya,
        loss_curve=curve,
    )


def _write_summary(result: TrainResult, config: TrainConfig, meta: dict[str, Any], out_dir: Path) -> None:
    """``training.json``: settings, metadata, timings and every step's loss."""
    summary = {
        "settings": config.model_dump(mode="json"),
        "metadata": {k: str(v) for k, v in meta.items()},
        "resumed_from": result.resumed_from,
        "timings_s": result.timings,
        "final_loss": round(result.final_loss, 6),
        "losses": [round(v, 6) for v in result.losses],
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=1))
