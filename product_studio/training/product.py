"""Photos -> product LoRA: the one training path that the flows and ``product-studio train`` share.

``train_product`` binds a product to its identifier on a loaded pipeline: the photos (cutouts with their
alpha as the loss mask, or photos as given), the class images, the DreamBooth prompts and the LoRA
metadata. (``folder_training.train_folder`` drives it for local folders.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from product_studio.identifiers import ProductPrompts
from product_studio.records import TrainResult
from product_studio.training.checkpoints import Checkpoints
from product_studio.training.config import TrainConfig
from product_studio.training.data import TrainingImage, load_training_image
from product_studio.training.loop import train_lora


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
