"""Train: DreamBooth LoRA with class-prior preservation, on a loaded SD 1.x/2.x, SDXL or FLUX.2 [klein]
pipeline.

Reads top to bottom like diffusers' ``train_dreambooth_lora.py``: prepare, resume, steps, finish; one
:func:`training_step` takes the family's loss (``unet.py``: noise prediction; ``klein.py``: flow matching)
over its micro-batches, backpropagates, clips, steps and zeroes. Unlike the scripts it encodes every image
with the VAE once (and the prompts, with a frozen text encoder); on top: a masked loss from the cutout's
alpha, resumable checkpoints, validation renders and a loss curve. The shared pipeline is left exactly as
it was found.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from product_studio.families import family_for
from product_studio.identifiers import ProductPrompts
from product_studio.records import TrainResult
from product_studio.training import report
from product_studio.training.adapters import Adapters, denoiser, trainable_lora
from product_studio.training.checkpoints import Checkpoints, run_key
from product_studio.training.config import TrainConfig
from product_studio.training.data import TrainingImage
from product_studio.training.errors import TrainingError
from product_studio.training.export import lora_metadata, save_lora
from product_studio.training.klein import prepare_klein
from product_studio.training.optimizers import make_optimizer
from product_studio.training.unet import prepare_unet

# Each family's objective (``Family.objective``): how it is prepared (latents, conditioning, the loss).
OBJECTIVES: dict[str, Callable[..., Any]] = {"noise-prediction": prepare_unet, "flow-matching": prepare_klein}

__all__ = ["RunState", "TrainingError", "train_lora", "training_step", "worth_retrying"]


def worth_retrying(exc: BaseException | None) -> bool:
    """A lost worker or a storage outage is worth another try (the run resumes from its checkpoint);
    divergence, bad input, a storage error that stays (denied, missing) or a GPU too small are not."""
    from product_studio.storage import StorageError

    if isinstance(exc, StorageError):
        return exc.transient
    return not isinstance(exc, TrainingError | ValueError) and type(exc).__name__ != "OutOfMemoryError"


@dataclass
class RunState:
    """Everything the steps need, prepared once; ``state`` is what a checkpoint keeps of it."""

    config: TrainConfig
    # The family's objective: one micro-batch's loss (unet.UNetObjective, klein.KleinObjective).
    objective: Any
    device: str
    dtype: Any  # the frozen weights' dtype; the LoRA weights train in float32
    params: list[Any]  # the trainable LoRA tensors: what is clipped and stepped
    autocast: Any  # a no-op for float32 weights: the step has one path
    optimizer: Any
    lr_schedule: Any
    scaler: Any  # fp16 loss scaling; disabled (every call a no-op) for float32 and bfloat16
    generator: Any  # every random draw of the steps, so a resumed run continues the same sequence
    losses: list[float] = field(default_factory=list)
    step: int = 0

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


def training_step(run: RunState) -> float:
    """One optimizer step over ``gradient_accumulation_steps`` micro-batches; returns the step's loss."""
    import torch

    config = run.config
    accumulate = config.gradient_accumulation_steps
    step_loss = 0.0
    for _ in range(accumulate):
        # The family's objective: sample latents, noise and timesteps, add the noise, predict, and take
        # the loss (instance + prior_loss_weight x class prior).
        loss = run.objective.loss(run.generator, run.autocast)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(
                f"loss became {value} at step {run.step}; lower the learning rate "
                f"({config.learning_rate}) or train in float32"
            )
        run.scaler.scale(loss).div(accumulate).backward()
        step_loss += value / accumulate
    run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the loss-scaled ones
    torch.nn.utils.clip_grad_norm_(run.params, config.max_grad_norm, foreach=True)
    run.scaler.step(run.optimizer)  # with fp16, skipped when the gradients overflowed
    run.scaler.update()
    run.lr_schedule.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.losses.append(step_loss)
    run.step += 1
    return step_loss


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
    ``config`` is taken as it is (resolved for the product and family: ``config.resolve_config``).

    ``instance_images`` may carry masks (:class:`TrainingImage`); with ``config.masked_loss`` the instance
    loss counts product pixels fully and background pixels at ``config.background_weight``. With
    ``checkpoints``, state is saved every ``config.checkpoint_every`` steps and an identical run resumes
    from the latest checkpoint. ``metadata`` is added to the LoRA file's header (identifier and class noun
    are always there).
    """
    instance, class_images = _check_inputs(pipe, instance_images, class_images, config)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    resolution = config.resolution_for(pipe)
    meta = lora_metadata(pipe, config, prompts, resolution, metadata)
    import torch

    torch.manual_seed(config.seed)  # peft's initial LoRA weights
    with trainable_lora(pipe, config) as lora:
        # Prepare: everything that does not change between steps, computed once.
        with _timed(timings, "prepare_s"):
            run = prepare_run(pipe, lora, instance, class_images, prompts, config, resolution)

        # Resume: the latest checkpoint of this exact run (same settings, prompts, images, base model).
        key = _resume(run, lora, checkpoints, prompts, meta, instance, class_images)
        resumed_from = run.step

        # Steps, with the checkpoints and validation renders they are due for.
        texts = [prompts.fill(p) for p in config.validation_prompts]
        render = functools.partial(
            report.validate, pipe, lora, texts, config, resolution, out_dir / "validation"
        )
        save = None if key is None else (lambda: checkpoints.save(key, run.step, run.state(lora)))
        lora.train()
        validation = _train_steps(run, progress=progress, save=save, render=render, timings=timings)

        # Finish: the LoRA files and loss curve, final validation renders, checkpoints cleared.
        result = _finish(pipe, lora, run, out_dir, meta, prompts, timings)
        if config.validation_prompts:
            with _timed(timings, "validation_s"):
                validation += render("final")
        if key is not None:
            checkpoints.clear(key)
    timings["total_s"] = round(time.perf_counter() - started, 3)
    result = result.model_copy(
        update={"validation": validation, "resumed_from": resumed_from, "timings": timings}
    )
    report.write_summary(out_dir / "training.json", result, config, meta)
    return result


def _resume(
    run: RunState,
    lora: Adapters,
    checkpoints: Checkpoints | None,
    prompts: ProductPrompts,
    meta: dict[str, Any],
    instance: list[TrainingImage],
    class_images: list[Image.Image],
) -> str | None:
    """The run's checkpoint key (None without checkpoints), its latest checkpoint loaded if there is one."""
    if checkpoints is None:
        return None
    key = _run_key(run, prompts, meta, instance, class_images)
    if (state := checkpoints.load(key)) is not None:
        run.load_state(lora, state)
    return key


def _finish(
    pipe,
    lora: Adapters,
    run: RunState,
    out_dir: Path,
    meta: dict[str, Any],
    prompts: ProductPrompts,
    timings: dict[str, float],
) -> TrainResult:
    """The LoRA file (and its kohya copy when asked) and the loss curve, as the run's result so far."""
    config = run.config
    kohya_alpha = config.lora_alpha if config.export_kohya else None
    lora_file, kohya_file = save_lora(pipe, lora, out_dir, meta, kohya_alpha=kohya_alpha)
    curve = report.loss_curve_png(run.losses, out_dir / "loss.png", f"training loss ({prompts.instance})")
    return TrainResult(
        lora_file=lora_file,
        kohya_file=kohya_file,
        loss_curve=curve,
        steps=config.steps,
        resolution=int(meta["resolution"]),
        rank=config.rank,
        alpha=config.lora_alpha,
        losses=run.losses,
        timings=timings,
    )


def _train_steps(
    run: RunState,
    *,
    progress: Callable[[int, float], None] | None,
    save: Callable[[], None] | None,
    render: Callable[[str], list[Path]],
    timings: dict[str, float],
) -> list[Path]:
    """Steps up to ``config.steps``, saving a checkpoint and rendering when due; the renders' files."""
    config = run.config
    validation: list[Path] = []
    resumed_from, loop_start = run.step, time.perf_counter()
    while run.step < config.steps:
        loss = training_step(run)
        if progress is not None:
            progress(run.step, loss)
        if run.step < config.steps and save is not None and _due(run.step, config.checkpoint_every):
            with _timed(timings, "checkpoint_s"):
                save()
        if run.step < config.steps and _due(run.step, config.validation_every):
            with _timed(timings, "validation_s"):
                validation += render(f"step-{run.step:06d}")
    side_effects = timings.get("validation_s", 0) + timings.get("checkpoint_s", 0)
    timings["loop_s"] = round(time.perf_counter() - loop_start - side_effects, 3)
    if config.steps > resumed_from:
        timings["step_ms"] = round(1000 * timings["loop_s"] / (config.steps - resumed_from), 2)
    return validation


def prepare_run(
    pipe,
    lora: Adapters,
    instance: list[TrainingImage],
    class_images: list[Image.Image],
    prompts: ProductPrompts,
    config: TrainConfig,
    resolution: int,
) -> RunState:
    """The family's objective (latents, loss weights, prompt embeddings, schedule), optimizer, scaler."""
    import torch
    from diffusers.optimization import get_scheduler

    # pipe.device walks every module of every component: read it once, never per step.
    device = pipe.device.type if pipe.device.index is None else str(pipe.device)
    prepare = OBJECTIVES[family_for(pipe).objective]
    objective = prepare(pipe, instance, class_images, prompts, config, resolution, device)
    groups = lora.param_groups(config)
    optimizer = make_optimizer(config, groups, device)
    dtype = denoiser(pipe)[1].dtype
    return RunState(
        config=config,
        objective=objective,
        device=device,
        dtype=dtype,
        params=[p for g in groups for p in g["params"]],
        autocast=contextlib.nullcontext()
        if dtype == torch.float32
        else torch.autocast(pipe.device.type, dtype=dtype),
        optimizer=optimizer,
        lr_schedule=get_scheduler(
            config.lr_scheduler,
            optimizer,
            num_warmup_steps=config.lr_warmup_steps,
            num_training_steps=config.steps,
        ),
        scaler=torch.amp.GradScaler(device=pipe.device.type, enabled=dtype == torch.float16),
        generator=torch.Generator("cpu").manual_seed(config.seed),
    )


def _run_key(
    run: RunState,
    prompts: ProductPrompts,
    meta: dict[str, Any],
    instance: list[TrainingImage],
    class_images: list[Image.Image],
) -> str:
    """The checkpoints' key of this run: a hash of everything that determines its weights."""
    return run_key(
        run.config,
        prompts=[prompts.instance, prompts.class_prompt],
        family=meta["family"],
        resolution=int(meta["resolution"]),
        dtype=str(run.dtype),
        base_model=str(meta.get("base_model", "")),
        images=instance,
        class_images=class_images,
    )


def _check_inputs(
    pipe,
    instance_images: list[TrainingImage] | list[Image.Image],
    class_images: list[Image.Image],
    config: TrainConfig,
) -> tuple[list[TrainingImage], list[Image.Image]]:
    """The instance images as :class:`TrainingImage`; the class images, or none without prior preservation.
    Refuses options the base model's family cannot train with, before any work starts."""
    refusals = family_for(pipe).training_refusals(config.model_dump(), config.resolution_for(pipe))
    if refusals:
        raise TrainingError("; ".join(refusals))
    instance = [
        im if isinstance(im, TrainingImage) else TrainingImage(im.convert("RGB")) for im in instance_images
    ]
    if not instance:
        raise TrainingError("no instance images to train on")
    if config.uses_prior and not class_images:
        raise TrainingError("prior preservation is on but there are no class images")
    return instance, class_images if config.uses_prior else []


def _due(step: int, every: int) -> bool:
    return bool(every) and step % every == 0


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the block's seconds to ``timings[name]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(timings.get(name, 0) + time.perf_counter() - t0, 3)
