"""Training images: load photos from a folder, square them, and cache what never changes between steps.

The VAE's latent distribution (mean and std) of every image is computed once -- a fresh latent is still
*sampled* from it each step, exactly as encoding every step would. With ``random_flip`` the mirrored
images are encoded once too. Masks (the cutout's alpha) are reduced to latent size once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from product_studio.images import to_rgb

if TYPE_CHECKING:
    import torch

    from product_studio.training.config import TrainConfig

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


class PhotoError(ValueError):
    """A photo cannot be used for training; the message names the file."""


@dataclass
class TrainingImage:
    """An RGB image and, when the product was cut out, its alpha mask (L; 255 = product)."""

    image: Image.Image
    mask: Image.Image | None = None
    name: str = ""


def square(image: Image.Image, resolution: int, resample: int = Image.Resampling.BICUBIC) -> Image.Image:
    """Resize the shorter side to ``resolution`` and centre-crop to a square."""
    return ImageOps.fit(image, (resolution, resolution), method=resample)


def from_cutout(rgba: Image.Image, name: str = "") -> TrainingImage:
    """An RGBA cutout -> the product on white plus its alpha as the loss mask."""
    rgba = rgba.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return TrainingImage(Image.alpha_composite(white, rgba).convert("RGB"), rgba.getchannel("A"), name)


def load_training_image(path: Path) -> TrainingImage:
    """A photo as given (EXIF orientation applied); an alpha channel, if any, becomes the loss mask."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
    has_alpha = im.mode in {"RGBA", "LA"} or (im.mode == "P" and "transparency" in im.info)
    if has_alpha and im.convert("RGBA").getchannel("A").getextrema()[0] < 255:
        return from_cutout(im, path.name)
    return TrainingImage(to_rgb(im), None, path.name)


def load_photo_folder(folder: Path, min_photos: int = 3) -> list[TrainingImage]:
    """The photos in ``folder`` (see :func:`load_training_image`).

    Raises :class:`PhotoError` naming each unreadable file, or when fewer than ``min_photos`` are usable.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PhotoError(f"photo folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    images: list[TrainingImage] = []
    problems: list[str] = []
    for path in files:
        try:
            images.append(load_training_image(path))
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            problems.append(f"{path.name}: not a readable image ({exc})")
    if len(images) < min_photos:
        detail = "; ".join(problems) or f"found {len(files)} file(s) ending in {sorted(PHOTO_SUFFIXES)}"
        raise PhotoError(
            f"{folder}: {len(images)} usable photo(s), at least {min_photos} are needed ({detail})"
        )
    return images


def pixels(images: list[Image.Image], resolution: int) -> torch.Tensor:
    """Images -> a float tensor in [-1, 1], NCHW, squared to ``resolution``."""
    import torch

    arrays = [np.asarray(square(im.convert("RGB"), resolution), np.float32) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


@dataclass
class LatentSet:
    """Per-image latent mean/std (N, C, h, w) and loss weights (N, 1, h, w) or None (= all ones).

    With flipping on, images ``N..2N-1`` are the mirrored copies of ``0..N-1``.
    """

    mean: torch.Tensor
    std: torch.Tensor
    weights: torch.Tensor | None
    count: int  # images before mirroring

    def pick(self, index: torch.Tensor, flip: torch.Tensor | None, gen: torch.Generator, scale: float):
        """A fresh latent sample (and weights) for the chosen images."""
        import torch

        if flip is not None:
            index = index + flip.long() * self.count
        mean, std = self.mean[index], self.std[index]
        noise = torch.randn(mean.shape, generator=gen, dtype=mean.dtype).to(mean.device)
        weights = None if self.weights is None else self.weights[index]
        return (mean + std * noise) * scale, weights


def encode_training_latents(
    vae,
    instance: list[TrainingImage],
    classes: list[Image.Image],
    config: TrainConfig,
    resolution: int,
    device: str,
) -> tuple[LatentSet, LatentSet | None]:
    """The instance images' latents (with the cutouts' loss weights when ``masked_loss``) and the class
    images' (None when there are none)."""
    encode = {
        "resolution": resolution,
        "flip": config.random_flip,
        "device": device,
    }
    background = config.background_weight if config.masked_loss else None
    instances = encode_latent_set(vae, instance, background_weight=background, **encode)
    if not classes:
        return instances, None
    return instances, encode_latent_set(
        vae, [TrainingImage(im) for im in classes], background_weight=None, **encode
    )


def alpha_weights(
    masks: list[Image.Image | None], resolution: int, size: tuple[int, int], background_weight: float
) -> torch.Tensor | None:
    """Per-image loss weights (N, 1, h, w) at the latents' ``size``: the cutout's alpha (area-averaged), with
    ``background_weight`` as the floor; an image without a mask weighs 1 everywhere. None when no image has
    a mask."""
    import torch
    import torch.nn.functional as F

    if all(m is None for m in masks):
        return None
    full = [
        np.asarray(square(m, resolution, Image.Resampling.BILINEAR), np.float32) / 255.0
        if m is not None
        else np.ones((resolution, resolution), np.float32)
        for m in masks
    ]
    alpha = F.interpolate(torch.from_numpy(np.stack(full))[:, None], size=size, mode="area")
    return background_weight + (1.0 - background_weight) * alpha


def encode_latent_set(
    vae,
    items: list[TrainingImage],
    resolution: int,
    *,
    flip: bool,
    background_weight: float | None,
    device: str,
    batch: int = 8,
) -> LatentSet:
    """Encode every image once with the frozen VAE (and the mirrored copies when ``flip``): each step draws
    a fresh sample from the cached mean and std."""
    import torch

    images = [it.image for it in items]
    masks = [it.mask for it in items]
    for it in items:
        if it.mask is not None and it.mask.getextrema()[1] == 0:
            raise PhotoError(f"{it.name or 'an instance image'}: its mask is empty (fully transparent)")
    if flip:
        images = images + [ImageOps.mirror(im) for im in images]
        masks = masks + [None if m is None else ImageOps.mirror(m) for m in masks]
    means, stds = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            px = pixels(images[start : start + batch], resolution).to(device, vae.dtype)
            dist = vae.encode(px).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
    mean, std = torch.cat(means), torch.cat(stds)
    weights = None
    if background_weight is not None:
        weights = alpha_weights(masks, resolution, tuple(mean.shape[-2:]), background_weight)
        weights = None if weights is None else weights.to(mean.device)
    return LatentSet(mean, std, weights, len(items))
