"""Small records passed between stages and written to manifests: keys and metadata, never pixels."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PhotoProblem(Record):
    """A seller photo that was not used, and why."""

    file: str
    reason: str


class PhotoRecord(Record):
    """A validated seller photo and its local copy (the original in storage is never changed)."""

    file: str
    sha256: str
    bytes: int
    format: str
    width: int
    height: int
    local_path: Path


class CleanedPhoto(Record):
    """A background-removed, centred, square RGBA cutout of one seller photo."""

    source: str
    cutout_path: Path
    coverage: float


class CardRecord(Record):
    """One published card image and how it was made."""

    file: str
    preset: str
    width: int
    height: int
    kind: str  # "cutout" (the real product photo) or "scene" (generated)
    template: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    local_path: Path
    scores: dict[str, float]


class SkuOutcome(Record):
    """What happened to one SKU in a run."""

    catalogue_id: str
    sku: str
    status: str  # "published" or "failed"
    manifest: str | None = None
    error: str | None = None
    identifier: str | None = None
    cards: int = 0
    problems: list[PhotoProblem] = []
