"""Train a product LoRA from local folders, without Prefect or S3: what ``product-studio train`` and
``product-studio eval`` run.

``train_folder`` loads the pipeline, chooses the identifier, fills a local class-image cache laid out like
the bucket's (or takes the user's own class images) and trains through ``training.train_product``, resuming
from ``out_dir/checkpoints``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from product_studio import identifiers
from product_studio.identifiers import ProductPrompts
from product_studio.records import TrainResult
from product_studio.storage import LocalStore
from product_studio.training import Checkpoints, TrainConfig, priors, train_product
from product_studio.training.data import PHOTO_SUFFIXES, PhotoError, load_photo_folder


def class_folder_images(folder: Path, count: int) -> list[Path]:
    """The first ``count`` images of a folder of class images the user supplies."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)[:count]
    if len(files) < count:
        raise PhotoError(f"class image folder {folder} holds {len(files)} image(s); {count} are needed")
    return files


def train_folder(
    photos_dir: Path,
    class_noun: str,
    out_dir: Path,
    *,
    base_model: str,
    config: TrainConfig,
    identifier: str | None = None,
    class_dir: Path | None = None,
    priors_dir: Path,
    device: str = "cpu",
    dtype: str = "float32",
    prior_steps: int = 30,
    min_photos: int = 3,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[TrainResult, ProductPrompts]:
    """Train on the photos in ``photos_dir`` as given; resumes from ``out_dir/checkpoints``."""
    started = time.perf_counter()
    from product_studio.models import load_pipeline

    class_noun = identifiers.validate_class_noun(class_noun)
    if identifier is not None:  # before any photo or model is read; its token count once the model is loaded
        identifiers.check_identifier(identifier, class_noun)
    photos = load_photo_folder(photos_dir, min_photos=min_photos)  # fail on bad photos before loading models
    phases = {"photos_s": time.perf_counter() - started}
    pipe = load_pipeline(base_model, device, dtype)  # the first call also imports diffusers
    phases["load_model_s"] = time.perf_counter() - started - phases["photos_s"]
    if identifier is not None:
        token = identifiers.check_identifier(identifier, class_noun, pipe.tokenizer)
    else:
        token = identifiers.choose_identifier(pipe.tokenizer, Path(photos_dir).resolve().name)
    prompts = ProductPrompts(token, class_noun)
    if class_dir is not None and config.uses_prior:
        classes = class_folder_images(class_dir, config.prior_images)
    else:
        classes = priors.class_images_for(
            pipe,
            base_model,
            prompts,
            config,
            LocalStore(priors_dir),
            out_dir / "class_images",
            steps=prior_steps,
        )
    phases["class_images_s"] = time.perf_counter() - started - sum(phases.values())
    result = train_product(
        pipe,
        photos,
        prompts,
        config,
        out_dir,
        base_model=base_model,
        class_images=classes,
        checkpoints=Checkpoints(LocalStore(out_dir / "checkpoints"), ""),
        progress=progress,
    )
    # Where the time before training went (training.json has the loop's own timings).
    timings = {**result.timings, **{k: round(v, 3) for k, v in phases.items()}}
    return result.model_copy(update={"timings": timings}), prompts
