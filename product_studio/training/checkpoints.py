"""Resumable training checkpoints in the object store (or a local folder).

A checkpoint is the trainable LoRA weights plus optimizer, learning-rate schedule, loss-scaler and RNG
state, written under ``<prefix>/<run key>/step-NNNNNN/``; ``latest.json`` is written last and points at the
newest complete one, so a run killed mid-write resumes from the previous checkpoint. The run key hashes
everything that determines the result (settings, prompts, images, base model), so a changed run never
resumes from another run's state.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from product_studio.layout import checkpoints_prefix
from product_studio.storage import ObjectNotFound, ObjectStore

if TYPE_CHECKING:
    from PIL import Image

    from product_studio.training.config import TrainConfig
    from product_studio.training.data import TrainingImage

# Settings that change how a run is observed or saved, not the weights it reaches.
_NOT_IN_RUN_KEY = {
    "checkpoint_every",
    "validation_every",
    "validation_prompts",
    "validation_steps",
    "export_kohya",
}


def run_key(
    config: TrainConfig,
    *,
    prompts: list[str],
    family: str,
    resolution: int,
    dtype: str,
    base_model: str,
    images: list[TrainingImage],
    class_images: list[Image.Image],
) -> str:
    """A hash of everything that determines a run's weights: only an identical run resumes a checkpoint."""
    parts = {
        "settings": config.model_dump(mode="json", exclude=_NOT_IN_RUN_KEY),
        "prompts": prompts,
        "family": family,
        "resolution": resolution,
        "dtype": dtype,
        "base_model": base_model,
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for item in images:
        digest.update(hashlib.sha256(item.image.tobytes()).digest())
        digest.update(hashlib.sha256(b"" if item.mask is None else item.mask.tobytes()).digest())
    for image in class_images:
        digest.update(hashlib.sha256(image.tobytes()).digest())
    return digest.hexdigest()[:20]


@dataclass
class Checkpoints:
    """Where one training run keeps its checkpoints; ``keep`` old ones are retained besides the latest."""

    store: ObjectStore
    prefix: str
    keep: int = 1

    @classmethod
    def for_sku(cls, store: ObjectStore, catalogue_id: str, sku: str) -> Checkpoints:
        """An SKU's checkpoints in the output bucket: ``_checkpoints/<catalogue>/<sku>/<run key>/``."""
        return cls(store, checkpoints_prefix(catalogue_id, sku))

    def _key(self, run: str, *parts: str) -> str:
        return "/".join([self.prefix.rstrip("/"), run, *parts]) if self.prefix else "/".join([run, *parts])

    def save(self, run: str, step: int, state: dict[str, Any]) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        name = f"step-{step:06d}"
        self.store.write(self._key(run, name, "state.pt"), buf.getvalue())
        self.store.write(
            self._key(run, "latest.json"),
            json.dumps({"step": step, "dir": name}).encode(),
            "application/json",
        )
        steps = sorted({k.split("/")[-2] for k in self.store.list(self._key(run) + "/") if "/step-" in k})
        for old in steps[: -(self.keep + 1)] if self.keep >= 0 else []:
            self.store.delete(self._key(run, old, "state.pt"))

    def load(self, run: str) -> dict[str, Any] | None:
        """The latest complete checkpoint of this run, or None."""
        import torch

        try:
            latest = json.loads(self.store.read(self._key(run, "latest.json")))
            data = self.store.read(self._key(run, latest["dir"], "state.pt"))
        except ObjectNotFound:
            return None
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # no pickled code

    def clear(self, run: str) -> None:
        """Remove a finished run's checkpoints."""
        for key in self.store.list(self._key(run) + "/"):
            self.store.delete(key)
