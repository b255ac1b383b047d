"""Is the product in a card the seller's, and is the scene the prompt's? DreamBench's metrics, ranking, gate.

- ``identity_dino``: cosine similarity of DINO ViT-S/16 CLS embeddings between the card's product region and
  each of the seller's cutouts (on white): the mean (``identity_dino``) and the best (``identity_dino_max``).
  DINO is trained without labels, so it tells apart two teapots of one class -- the paper's preferred metric.
- ``identity_clip``: the same with CLIP image embeddings (CLIP-I; mean and ``identity_clip_max``).
- ``prompt_clip``: CLIP text-image similarity between the whole card and its scene prompt with the identifier
  removed (CLIP-T, as the paper does: the identifier means nothing to CLIP).

The product region: composite and cutout cards know their box; a generated card's is found by the cleaner's
mask, or is the whole image when the cleaner finds none. Encoders load once per worker; scores are batched.
Candidates are ranked by ``RANK_WEIGHTS`` and gated by thresholds (``Gate``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from product_studio.models import load_clip, load_dino

# The combined score candidates are ranked by: identity first (DINO counts most), then the scene.
RANK_WEIGHTS = {"identity_dino": 0.5, "identity_clip": 0.25, "prompt_clip": 0.25}


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``."""
    a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)
    b = b / np.clip(np.linalg.norm(b, axis=1, keepdims=True), 1e-12, None)
    return a @ b.T


def product_region(
    image: Image.Image,
    box: tuple[int, int, int, int] | None = None,
    segment: Callable[[Image.Image], Image.Image] | None = None,
    margin: float = 0.05,
) -> Image.Image:
    """The part of a card that shows the product: its box (with a small margin), else what the cleaner
    segments, else the whole card."""
    if box is None and segment is not None:
        # A coarse box is all scoring needs: segment a small copy (GrabCut's cost grows with the pixels).
        small = image.convert("RGB")
        small.thumbnail((160, 160), Image.Resampling.BILINEAR)
        try:
            found = segment(small).point(lambda v: 255 if v >= 128 else 0).getbbox()
        except ValueError:
            found = None
        if found is not None:
            sx, sy = image.width / small.width, image.height / small.height
            box = (round(found[0] * sx), round(found[1] * sy), round(found[2] * sx), round(found[3] * sy))
    if box is None:
        return image.convert("RGB")
    left, top, right, bottom = box
    dx, dy = round(margin * (right - left)), round(margin * (bottom - top))
    width, height = image.size
    grown = (max(0, left - dx), max(0, top - dy), min(width, right + dx), min(height, bottom + dy))
    return image.convert("RGB").crop(grown)


def combined(scores: dict[str, float]) -> float:
    """The score candidates are ranked by (``RANK_WEIGHTS``)."""
    return sum(weight * scores.get(name, 0.0) for name, weight in RANK_WEIGHTS.items())


@dataclass(frozen=True)
class Gate:
    """A card below either threshold is never published: identity on ``identity_dino``, prompt on
    ``prompt_clip``."""

    min_identity: float
    min_prompt: float

    def reason(self, scores: dict[str, float]) -> str | None:
        """Why a card fails the gate, or None when it passes."""
        problems = []
        if scores.get("identity_dino", 1.0) < self.min_identity:
            problems.append(f"identity_dino {scores['identity_dino']:.3f} < min_identity {self.min_identity}")
        if scores.get("prompt_clip", 1.0) < self.min_prompt:
            problems.append(f"prompt_clip {scores['prompt_clip']:.3f} < min_prompt {self.min_prompt}")
        return "; ".join(problems) or None


class Scorer:
    """DINO and CLIP encoders, loaded once per worker process, scoring batches of images."""

    def __init__(self, dino_model: str, clip_model: str, device: str = "cpu") -> None:
        self.dino_model, self.clip_model, self.device = dino_model, clip_model, device
        self.dino, self.dino_processor = load_dino(dino_model, device)
        self.clip, self.clip_processor = load_clip(clip_model, device)

    def _inputs(self, processor: Any, **kwargs: Any) -> dict[str, Any]:
        if "images" in kwargs:  # cards are megapixels; the encoders see 224 px: shrink first, fast
            kwargs["images"] = [_shrink(im) for im in kwargs["images"]]
        return {k: v.to(self.device) for k, v in processor(return_tensors="pt", **kwargs).items()}

    def dino_embeddings(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.dino(**self._inputs(self.dino_processor, images=[im.convert("RGB") for im in images]))
        return out.last_hidden_state[:, 0].float().cpu().numpy()  # the CLS token, as DreamBench uses

    def clip_embeddings(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        with torch.no_grad():
            inputs = self._inputs(self.clip_processor, images=[im.convert("RGB") for im in images])
            return self.clip.get_image_features(**inputs).pooler_output.float().cpu().numpy()

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            inputs = self._inputs(self.clip_processor, text=list(texts), padding=True, truncation=True)
            return self.clip.get_text_features(**inputs).pooler_output.float().cpu().numpy()

    def references(self, cutouts: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """DINO and CLIP embeddings of the seller's cutouts (on white), computed once per SKU."""
        on_white = [_on_white(c) for c in cutouts]
        return self.dino_embeddings(on_white), self.clip_embeddings(on_white)

    def score(
        self,
        regions: Sequence[Image.Image],
        cards: Sequence[Image.Image],
        prompts: Sequence[str],
        references: tuple[np.ndarray, np.ndarray],
    ) -> list[dict[str, float]]:
        """Identity (of each product region against every reference) and prompt scores, in one batch."""
        regions, cards = [_shrink(r) for r in regions], [_shrink(c) for c in cards]  # once for both encoders
        dino = cosine_matrix(self.dino_embeddings(regions), references[0])
        clip = cosine_matrix(self.clip_embeddings(regions), references[1])
        text = np.diag(cosine_matrix(self.clip_embeddings(cards), self.text_embeddings(prompts)))
        return [
            {
                "identity_dino": round(float(dino[i].mean()), 4),
                "identity_dino_max": round(float(dino[i].max()), 4),
                "identity_clip": round(float(clip[i].mean()), 4),
                "identity_clip_max": round(float(clip[i].max()), 4),
                "prompt_clip": round(float(text[i]), 4),
            }
            for i in range(len(regions))
        ]


def _shrink(image: Image.Image, side: int = 448) -> Image.Image:
    """At most ``side`` px (twice the encoders' input), so preprocessing never works on megapixels."""
    if max(image.size) > side:
        image = image.copy()
        image.thumbnail((side, side), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return image if image.mode == "RGB" else image.convert("RGB")


def _on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
