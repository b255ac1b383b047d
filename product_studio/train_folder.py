"""``product-studio train``: DreamBooth LoRA on a local folder of photos, without Prefect or S3.

The photos are used as given (no background removal; an alpha channel, if present, becomes the loss
mask). Class images come from ``class_dir`` when given, else from a content-addressed cache folder that
the base model fills once per class -- the same cache layout the flows keep in the output bucket.
Checkpoints go to ``<out>/checkpoints``: run the same command again after an interruption and it resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image

from product_studio import identifiers, priors
from product_studio.settings import TrainSettings
from product_studio.storage import LocalStore
from product_studio.training import Checkpoints, TrainResult, load_photo_folder, train_lora
from product_studio.training.data import PHOTO_SUFFIXES, PhotoError


def load_class_folder(folder: Path, count: int) -> list[Image.Image]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)[:count]
    if len(files) < count:
        raise PhotoError(f"class image folder {folder} holds {len(files)} image(s); {count} are needed")
    return [Image.open(p).convert("RGB") for p in files]


def train_folder(
    photos_dir: Path,
    class_noun: str,
    out_dir: Path,
    *,
    base_model: str,
    config: TrainSettings,
    identifier: str | None = None,
    class_dir: Path | None = None,
    priors_dir: Path,
    device: str = "cpu",
    dtype: str = "float32",
    prior_steps: int = 30,
    min_photos: int = 3,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[TrainResult, str]:
    """Train on the photos in ``photos_dir``; returns the result and the identifier used."""
    from product_studio.models import load_pipeline, model_identity, native_resolution

    class_noun = identifiers.validate_class_noun(class_noun)
    photos = load_photo_folder(photos_dir, min_photos=min_photos)  # fail on bad photos before loading models
    pipe = load_pipeline(base_model, device, dtype)
    token = identifier or identifiers.choose_identifier(
        pipe.tokenizer, Path(photos_dir).resolve().name, set()
    )
    resolution = config.resolution or native_resolution(pipe)
    use_prior = config.prior_images > 0 and config.prior_loss_weight > 0
    classes: list[Image.Image] = []
    if use_prior and class_dir is not None:
        classes = load_class_folder(class_dir, config.prior_images)
    elif use_prior:
        spec = priors.prior_spec(
            pipe,
            model_identity(base_model),
            identifiers.class_prompt(class_noun),
            resolution=resolution,
            steps=prior_steps,
        )
        paths = priors.ensure_class_images(
            LocalStore(priors_dir), pipe, spec, config.prior_images, out_dir / "class_images"
        )
        classes = [Image.open(p).convert("RGB") for p in paths]
    result = train_lora(
        pipe,
        photos,
        classes,
        instance_prompt=identifiers.instance_prompt(token, class_noun),
        class_prompt=identifiers.class_prompt(class_noun),
        config=config,
        out_dir=out_dir,
        metadata={"identifier": token, "class_noun": class_noun, "base_model": base_model},
        progress=progress,
        checkpoints=Checkpoints(LocalStore(out_dir / "checkpoints"), ""),
    )
    return result, token
