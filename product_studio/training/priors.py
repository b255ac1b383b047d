"""Priors: class images ("a photo of a teapot") from the frozen base model, cached in the object store.

The cache key hashes everything that changes the images: base model id and weights revision, prompt,
resolution, scheduler and its config, steps, guidance and seed. Image ``i`` always uses seed ``seed + i``,
so asking for more images extends a set instead of regenerating it, and every SKU of the class -- in any
catalogue or run -- reuses it. Each image is written with a conditional put (If-None-Match), so two flows
filling the same set at once never overwrite each other: the loser keeps the winner's image.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from product_studio.identifiers import ProductPrompts
from product_studio.layout import LEASE, PRIOR_SPEC, prior_file, prior_prefix
from product_studio.leases import Lease, acquire
from product_studio.models import model_identity
from product_studio.storage import ObjectStore

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from product_studio.training.config import TrainConfig


def prior_spec(
    pipe: DiffusionPipeline,
    model: dict[str, str],
    prompt: str,
    *,
    resolution: int,
    steps: int,
    guidance_scale: float = 7.5,
    seed: int = 0,
) -> dict[str, Any]:
    """The full description of a class-image set; its hash is the cache key."""
    scheduler = pipe.scheduler
    return {
        "base_model": model,
        "prompt": prompt,
        "resolution": resolution,
        "scheduler": type(scheduler).__name__,
        "scheduler_config": hashlib.sha256(
            json.dumps(dict(scheduler.config), sort_keys=True, default=str).encode()
        ).hexdigest()[:16],
        "steps": steps,
        "guidance_scale": guidance_scale,
        "seed": seed,
    }


def prior_key(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def generate_class_images(
    pipe: DiffusionPipeline, spec: dict[str, Any], indices: list[int], batch_size: int = 4
) -> list[Image.Image]:
    """Generate the images with the given indices (image ``i`` uses seed ``spec['seed'] + i``)."""
    import torch

    images: list[Image.Image] = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        generators = [torch.Generator("cpu").manual_seed(spec["seed"] + i) for i in chunk]
        out = pipe(
            prompt=[spec["prompt"]] * len(chunk),  # by name: FLUX.2 [klein]'s first argument is an image
            height=spec["resolution"],
            width=spec["resolution"],
            num_inference_steps=spec["steps"],
            guidance_scale=spec["guidance_scale"],
            generator=generators,
        )
        images.extend(out.images)
    return images


def ensure_class_images(
    store: ObjectStore,
    pipe: DiffusionPipeline,
    spec: dict[str, Any],
    count: int,
    local_dir: Path,
    *,
    owner: str = "",
    lease_seconds: int = 1800,
) -> list[Path]:
    """At least ``count`` class images for ``spec`` in the store, downloaded to ``local_dir``.

    Missing images are generated under the class's lease; a run that finds the lease held waits for it (up
    to ``lease_seconds``), then generates only what is still missing.
    """
    key = prior_key(spec)
    store.write(
        prior_file(key, PRIOR_SPEC), json.dumps(spec, indent=2).encode(), "application/json", if_absent=True
    )
    local_dir.mkdir(parents=True, exist_ok=True)
    wanted = [f"{i:05d}.png" for i in range(count)]

    def missing() -> list[int]:
        existing = {k.rsplit("/", 1)[-1] for k in store.list(prior_prefix(key)) if k.endswith(".png")}
        return [i for i, name in enumerate(wanted) if name not in existing]

    todo = missing()
    lease = None
    if todo:
        # Two SKUs of a new class: one generates, the other waits for its images instead of making its own.
        got = acquire(store, prior_file(key, LEASE), owner or "priors", lease_seconds, wait=lease_seconds)
        lease = got if isinstance(got, Lease) else None
        todo = missing()
    try:
        for i, image in zip(todo, generate_class_images(pipe, spec, todo) if todo else [], strict=True):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            store.write(prior_file(key, wanted[i]), buf.getvalue(), "image/png", if_absent=True)
    finally:
        if lease is not None:
            lease.release()
    paths: list[Path] = []
    for name in wanted:  # cached, or written just now (by this run or another)
        path = local_dir / name
        path.write_bytes(store.read(prior_file(key, name)))
        paths.append(path)
    return paths


def class_images_for(
    pipe: DiffusionPipeline,
    base_model: str,
    prompts: ProductPrompts,
    config: TrainConfig,
    cache: ObjectStore,
    local_dir: Path,
    *,
    steps: int,
    owner: str = "",
    lease_seconds: int = 1800,
) -> list[Path]:
    """The class images a training run needs (none when prior preservation is off), from the cache.

    The same rule for the flows (cache in the output bucket) and ``product-studio train`` (a local folder).
    """
    if not config.uses_prior:
        return []
    spec = prior_spec(
        pipe,
        model_identity(base_model),
        prompts.class_prompt,
        resolution=config.resolution_for(pipe),
        steps=steps,
    )
    return ensure_class_images(
        cache, pipe, spec, config.prior_images, local_dir, owner=owner, lease_seconds=lease_seconds
    )
