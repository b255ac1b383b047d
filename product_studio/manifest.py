"""The output contract: ``<catalogue>/<sku>/manifest.json``, a typed :class:`Manifest` built in one place.

:func:`build_manifest` decides every published key (``cards/``, ``cutouts/``, ``lora/``, ``training/``)
together with the record that describes it, so the manifest and the files it names cannot disagree.
``publish.publish_sku`` adds the review page, the files' sha256 and the publishing time, and writes the
manifest last. Readers validate a published manifest with ``Manifest.model_validate_json``.
"""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from product_studio.identifiers import ProductPrompts
from product_studio.ingest import ProductSpec
from product_studio.models import model_identity
from product_studio.records import CardRecord, CleanedPhoto, PhotoProblem, PhotoRecord
from product_studio.settings import Settings
from product_studio.training.loop import TrainResult

SCHEMA = "product-studio/manifest/v1"
REVIEW_PAGE = "review/index.html"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Python and the versions of the packages that make a card, for reproducing it."""
    found = {"python": platform.python_version()}
    for dist in ("product-studio", "torch", "diffusers", "transformers", "peft", "rembg", "pillow"):
        try:
            found[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseModelRef(_Part):
    """The base model: a Hugging Face id or folder, and the revision (a folder's weights hash)."""

    id: str
    revision: str


class Inputs(_Part):
    photos: list[PhotoRecord]  # used photos, with their sha256
    problems: list[PhotoProblem]  # photos not used, and why


class CutoutEntry(_Part):
    file: str
    source: str
    coverage: float


class TrainingEntry(_Part):
    loss_curve: str
    validation: list[str]
    resumed_from_step: int
    timings_s: dict[str, float]
    kohya_file: str | None = None


class LoraEntry(_Part):
    file: str
    rank: int
    alpha: int
    steps: int
    resolution: int
    final_loss: float
    settings: dict[str, Any]  # the TrainConfig in force
    training: TrainingEntry


class Manifest(_Part):
    """What one published run of an SKU holds, and how every file was made."""

    schema_: str = Field(SCHEMA, alias="schema")
    catalogue_id: str
    sku: str
    title: str
    class_noun: str
    identifier: str
    instance_prompt: str
    class_prompt: str
    base_model: BaseModelRef
    cleaner: str
    created: str
    inputs: Inputs
    cutouts: list[CutoutEntry]
    lora: LoraEntry
    cards: list[CardRecord]
    timings_s: dict[str, float]
    versions: dict[str, str]
    files: dict[str, str] = Field(default_factory=dict, description="published key -> sha256")
    published: str | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2, by_alias=True).encode()


def build_manifest(
    *,
    catalogue_id: str,
    sku: str,
    spec: ProductSpec,
    settings: Settings,
    prompts: ProductPrompts,
    photos: list[PhotoRecord],
    problems: list[PhotoProblem],
    cutouts: list[CleanedPhoto],
    trained: TrainResult,
    cards: list[CardRecord],
    timings: dict[str, float],
) -> tuple[Manifest, dict[str, Path]]:
    """The SKU's manifest and the files it names (published key -> local path).

    ``settings`` are those the SKU ran under (its training preset merged in).
    """
    files = {c.file: c.local_path for c in cards if c.local_path is not None}
    files |= {f"cutouts/{c.cutout_path.name}": c.cutout_path for c in cutouts}
    training_files = {
        ("lora/" if name.endswith(".safetensors") else "training/") + name: path
        for name, path in trained.files().items()
    }
    files |= training_files
    manifest = Manifest(
        catalogue_id=catalogue_id,
        sku=sku,
        title=spec.title,
        class_noun=spec.class_noun,
        identifier=prompts.identifier,
        instance_prompt=prompts.instance,
        class_prompt=prompts.class_prompt,
        base_model=BaseModelRef(**model_identity(settings.base_model)),
        cleaner=settings.cleaner,
        created=now(),
        inputs=Inputs(photos=photos, problems=problems),
        cutouts=[
            CutoutEntry(file=f"cutouts/{c.cutout_path.name}", source=c.source, coverage=c.coverage)
            for c in cutouts
        ],
        lora=LoraEntry(
            file="lora/" + trained.lora_file.name,
            rank=trained.rank,
            alpha=trained.alpha,
            steps=trained.steps,
            resolution=trained.resolution,
            final_loss=round(trained.final_loss, 5),
            settings=settings.train.model_dump(mode="json"),
            training=TrainingEntry(
                loss_curve="training/" + trained.loss_curve.name if trained.loss_curve else "",
                validation=sorted(k for k in training_files if k.startswith("training/validation/")),
                resumed_from_step=trained.resumed_from,
                timings_s=trained.timings,
                kohya_file="lora/" + trained.kohya_file.name if trained.kohya_file else None,
            ),
        ),
        cards=cards,
        timings_s=timings,
        versions=versions(),
    )
    return manifest, files
