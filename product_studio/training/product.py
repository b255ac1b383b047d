"""Photos -> product LoRA: the one training path that the flows and ``product-studio train`` share.

``train_product`` binds a product to its identifier on a loaded pipeline: the photos (cutouts with their
alpha as the loss mask, or photos as given), the class images, the DreamBooth prompts and the LoRA
metadata. ``train_folder`` is the same for local folders, without Prefect or S3: it loads the pipeline,
chooses the identifier and fills a local class-image cache laid out like the bucket's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from product_studio import identifiers, priors
from product_studio.identifiers import ProductPrompts
from product_studio.storage import LocalStore
from product_studio.training.checkpoints import Checkpoints
from product_studio.training.config import TrainConfig
from product_studio.training.data import (
    PHOTO_SUFFIXES,
    PhotoError,
    TrainingImage,
    load_photo_folder,
    load_training_image,
)
from product_studio.training.loop import TrainResult, train_lora


def train_product(
    pipe,
    photos: Sequence[TrainingImage | Path],
    prompts: ProductPrompts,
    config: TrainConfig,
    out_dir: Path,
    *,
    base_model: str,
    class_images: Sequence[Path] = (),
    checkpoints: Checkpoints | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train the product LoRA into ``out_dir``; ``photos`` are images or files (alpha = loss mask)."""
    images = [p if isinstance(p, TrainingImage) else load_training_image(Path(p)) for p in photos]
    classes = [Image.open(p).convert("RGB") for p in class_images]
    return train_lora(
        pipe,
        images,
        classes,
        prompts=prompts,
        config=config,
        out_dir=out_dir,
        metadata={"base_model": base_model},
        progress=progress,
        checkpoints=checkpoints,
    )


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
    import time

    started = time.perf_counter()
    from product_studio.models import load_pipeline

    class_noun = identifiers.validate_class_noun(class_noun)
    photos = load_photo_folder(photos_dir, min_photos=min_photos)  # fail on bad photos before loading models
    phases = {"photos_s": time.perf_counter() - started}
    pipe = load_pipeline(base_model, device, dtype)  # the first call also imports diffusers
    phases["load_model_s"] = time.perf_counter() - started - phases["photos_s"]
    token = identifier or identifiers.choose_identifier(pipe.tokenizer, Path(photos_dir).resolve().name)
    prompts = ProductPrompts(token, class_noun)
    if class_dir is not None and config.uses_prior:
        classes = class_folder_images(class_dir, config.prior_images)
    else:
        classes = priors.class_images_for(
            pipe,
            base_model,
            class_noun,
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
    result.timings.update({k: round(v, 3) for k, v in phases.items()})
    return result, prompts
