"""The output contract: ``<catalogue>/<sku>/manifest.json``, a typed :class:`Manifest` built in one place.

Every run of an SKU publishes its files under its own prefix, ``runs/<run id>/`` (``cards/``, ``cutouts/``,
``lora/``, ``training/``, ``review/``), and the manifest, written last, names exactly that run's files by
their keys relative to the SKU. A reader never sees a manifest that disagrees with the files it names: a run
that fails half-way leaves the previous manifest and the previous run's files as they were.

:func:`build_manifest` decides every published key together with the record that describes it.
``publish.publish_sku`` adds the run's review page, the files' sha256 and the publishing time. Readers
validate a published manifest with ``Manifest.model_validate_json``.
"""

from __future__ import annotations

import platform
import secrets
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from product_studio.cards.scoring import RANK_WEIGHTS
from product_studio.identifiers import ProductPrompts
from product_studio.ingest import ProductSpec
from product_studio.layout import (
    CUTOUTS,
    LORA,
    MANIFEST,
    ORIGINALS,
    TRAINING,
    VALIDATION,
    run_prefix,
    sku_key,
)
from product_studio.models import family_of, model_identity, model_licence, noncommercial_reason
from product_studio.photos import advice as photo_advice
from product_studio.records import (
    CardRecord,
    CleanedPhoto,
    PhotoProblem,
    PhotoRecord,
    PhotoSetAdvice,
    TrainResult,
)
from product_studio.settings import ScoreSettings
from product_studio.storage import ObjectNotFound, Store
from product_studio.training.config import TrainConfig

SCHEMA = "product-studio/manifest/v1"


def new_run_id() -> str:
    """A run's id: its start time (sortable) and a random suffix, e.g. ``20261127T213000Z-3f2a9c``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


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


class ModelRef(_Part):
    """A model: a Hugging Face id or folder, and the revision (a folder's weights hash)."""

    id: str
    revision: str


class PixelModelRef(ModelRef):
    """A model that makes card pixels, and its licence as its model card states it (None: not stated)."""

    license: str | None = None


class BaseModelRef(PixelModelRef):
    """The base model, and its family (``sd``, ``sdxl``, ``flux2-klein``; None in manifests written before
    families were recorded, or when neither the folder nor the local cache names its pipeline)."""

    family: str | None = None


class Inputs(_Part):
    photos: list[PhotoRecord]  # used photos, with their sha256
    problems: list[PhotoProblem]  # photos not used, and why


class CutoutEntry(_Part):
    file: str
    source: str
    preview: str | None = Field(None, description="a small copy of the cutout, for pages")
    coverage: float
    not_for_composites: str | None = Field(
        None, description="why this photo's cutout is not pasted into composite cards (it is trained on)"
    )
    outline_match: float | None = Field(None, description="IoU of its outline with the SKU's median one")
    blur: float | None = Field(None, description="share of fine detail a 1 px blur keeps (photo_advice)")
    product_share: float | None = Field(None, description="the product's longer side over the photo's")
    advice: list[str] = Field(default_factory=list, description="why to retake this photo, seller's words")


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


class Scoring(_Part):
    """What a card's identity and prompt scores were computed with, and the gate they passed."""

    dino_model: ModelRef
    clip_model: ModelRef
    min_identity: float
    min_prompt: float
    keep: int
    rank_weights: dict[str, float]


NO_C2PA = (
    "no C2PA certificate was set (PRODUCT_STUDIO_C2PA__CERT and __KEY): "
    "the cards carry their IPTC label in XMP only, no signed C2PA manifest"
)


class LabelsEntry(_Part):
    """How the run's cards say how they were made (docs/provenance.md)."""

    iptc: bool = Field(True, description="every card's XMP names its IPTC digital source type")
    c2pa: bool = Field(description="every card carries a signed C2PA manifest")
    signer: str | None = None
    note: str = ""


def labels_entry(cards: list[CardRecord]) -> LabelsEntry | None:
    """The run's labels, from its card files' provenance (None when no card says, as before labels)."""
    marked = [c.provenance for c in cards if c.file and c.provenance is not None]
    if not marked:
        return None
    signed = all(p.c2pa for p in marked)
    signers = sorted({p.signer for p in marked if p.signer})
    note = "" if signed else NO_C2PA
    return LabelsEntry(c2pa=signed, signer=", ".join(signers) or None, note=note)


class Manifest(_Part):
    """What one published run of an SKU holds, and how every file was made."""

    schema_: str = Field(SCHEMA, alias="schema")
    catalogue_id: str
    sku: str
    run: str  # the run id: every file below is under runs/<run>/
    content_key: str = Field("", description="hash of everything the run depends on (content_key.py)")
    training_key: str = Field("", description="hash of what the LoRA depends on; equal: the LoRA is reused")
    title: str
    class_noun: str
    identifier: str
    instance_prompt: str
    class_prompt: str
    base_model: BaseModelRef
    models: dict[str, PixelModelRef] = Field(
        default_factory=dict,
        description="the other models that made card pixels, by role ('inpainter', 'upscaler'), each with "
        "its licence",
    )
    cleaner: str
    created: str
    inputs: Inputs
    cutouts: list[CutoutEntry]
    photo_set: PhotoSetAdvice | None = Field(
        None, description="enough different, usable views? which photos to retake (photo_advice)"
    )
    originals: dict[str, str] = Field(
        default_factory=dict,
        description="a photo's file name (as a cutout's source) -> key of a small copy of it",
    )
    stage: Literal["preview", "final"] = Field(
        "final",
        description="preview: the cards that need no LoRA, published while it trains; final: every card",
    )
    lora: LoraEntry | None = Field(
        None, description="None in a preview (the LoRA is still training) or when no scene needed one"
    )
    coming: list[str] = Field(
        default_factory=list, description="preview: the cards the final run adds (format--template)"
    )
    failed: str | None = Field(None, description="preview: why the rest of the run could not be made")
    training_decision: str | None = Field(
        None, description="final: why the LoRA was trained, reused or not trained (TRAIN__WHEN)"
    )
    cards: list[CardRecord]
    scoring: Scoring | None = None
    labels: LabelsEntry | None = Field(None, description="None: made before cards were labelled")
    notes: list[str] = Field(default_factory=list, description="what a seller should know about this run")
    timings_s: dict[str, float]
    versions: dict[str, str]
    files: dict[str, str] = Field(default_factory=dict, description="published key -> sha256")
    published: str | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2, by_alias=True).encode()

    @property
    def run_prefix(self) -> str:
        """Where this run's files are, relative to the SKU: ``runs/<run>``."""
        return run_prefix(self.run)

    @property
    def noncommercial(self) -> str | None:
        """Why this run's cards may not be used commercially (a model that made their pixels is licensed for
        non-commercial use only: PRODUCT_STUDIO_ALLOW_NONCOMMERCIAL_MODELS let it run), or None. Read from
        the manifest alone, so publish-approved decides it on any machine."""
        for role, ref in self.pixel_models().items():
            if reason := noncommercial_reason(ref.id, ref.license):
                return f"the {role} model {ref.id}: {reason}"
        return None

    def pixel_models(self) -> dict[str, PixelModelRef]:
        """Every model that made the cards' pixels, by role (``base`` first)."""
        return {"base": self.base_model, **self.models}


def read_published(output: Store, catalogue_id: str, sku: str) -> Manifest | None:
    """The SKU's published manifest; None when there is none or it does not validate (made afresh then)."""
    try:
        return Manifest.model_validate_json(output.read(sku_key(catalogue_id, sku, MANIFEST)))
    except (ObjectNotFound, ValidationError, ValueError):
        return None


def in_run(card: CardRecord, here: str) -> CardRecord:
    """A card record with its keys (the card, its cutout) relative to the SKU."""
    update: dict[str, Any] = {"file": f"{here}/{card.file}" if card.file else None}
    if card.product is not None:
        update["product"] = card.product.model_copy(update={"cutout": f"{here}/{card.product.cutout}"})
    return card.model_copy(update=update)


def build_manifest(
    *,
    catalogue_id: str,
    sku: str,
    run: str,
    spec: ProductSpec,
    base_model: str,
    cleaner: str,
    train: TrainConfig,
    pixel_models: dict[str, str] | None = None,
    scores: ScoreSettings,
    prompts: ProductPrompts,
    photos: list[PhotoRecord],
    problems: list[PhotoProblem],
    cutouts: list[CleanedPhoto],
    trained: TrainResult | None,
    cards: list[CardRecord],
    timings: dict[str, float],
    content_key: str = "",
    training_key: str = "",
    originals: dict[str, Path] | None = None,
    coming: list[str] | None = None,
    stage: Literal["preview", "final"] | None = None,
    training_decision: str | None = None,
) -> tuple[Manifest, dict[str, Path]]:
    """The SKU's manifest and the files it names (key relative to the SKU -> local path).

    ``base_model``, ``cleaner``, ``train`` (final: the product's preset and the family resolved) and
    ``scores`` are what the SKU ran under; ``pixel_models`` (role -> model, ``Settings.pixel_models``) the
    other models that made card pixels, recorded with their licences; ``run`` is the run's id. Without
    ``trained`` the manifest is the run's *preview* (``coming``: the cards the final run adds); it records no
    content key, so the SKU is not done until the final manifest replaces it.
    """
    here = run_prefix(run)
    cards = [in_run(c, here) for c in cards]
    files, training_files, small = _run_files(here, cards, cutouts, trained, originals or {})
    stage = stage or ("final" if trained is not None else "preview")
    manifest = Manifest(
        catalogue_id=catalogue_id, sku=sku, run=run,
        content_key=content_key if stage == "final" else "",  # a preview never makes the SKU done
        training_key=training_key if trained is not None else "",
        title=spec.title, class_noun=spec.class_noun, identifier=prompts.identifier,
        instance_prompt=prompts.instance, class_prompt=prompts.class_prompt,
        base_model=_base_model_ref(base_model), models=_pixel_model_refs(pixel_models or {}),
        cleaner=cleaner, created=now(), inputs=Inputs(photos=photos, problems=problems),
        cutouts=[_cutout_entry(c, here) for c in cutouts], photo_set=photo_advice.set_advice(cutouts),
        originals=small, stage=stage, training_decision=training_decision,
        lora=_lora_entry(trained, training_files, here, train) if trained is not None else None,
        coming=coming or [], cards=cards, scoring=_scoring(scores), labels=labels_entry(cards),
        notes=_notes(cards) + cutout_notes(cutouts), timings_s=timings, versions=versions(),
    )  # fmt: skip
    return manifest, files


def _base_model_ref(base_model: str) -> BaseModelRef:
    return BaseModelRef(
        **model_identity(base_model), family=family_of(base_model), license=model_licence(base_model)
    )


def _pixel_model_refs(pixel_models: dict[str, str]) -> dict[str, PixelModelRef]:
    """The models besides the base one that made card pixels (role -> model), each with its licence."""
    return {
        role: PixelModelRef(**model_identity(model), license=model_licence(model))
        for role, model in pixel_models.items()
        if role != "base"
    }


def _run_files(
    here: str,
    cards: list[CardRecord],
    cutouts: list[CleanedPhoto],
    trained: TrainResult | None,
    originals: dict[str, Path],
) -> tuple[dict[str, Path], dict[str, Path], dict[str, str]]:
    """Every file of run ``here`` (key -> local path), its training files, and the originals' small
    copies (photo -> key)."""
    training = {
        f"{here}/{LORA if name.endswith('.safetensors') else TRAINING}/{name}": path
        for name, path in (trained.files() if trained is not None else {}).items()
    }
    small = {name: f"{here}/{ORIGINALS}/{path.name}" for name, path in originals.items()}
    files = {c.file: c.local_path for c in cards if c.local_path is not None}
    files |= {f"{here}/{CUTOUTS}/{c.cutout_path.name}": c.cutout_path for c in cutouts}
    files |= {f"{here}/{CUTOUTS}/{c.preview_path.name}": c.preview_path for c in cutouts if c.preview_path}
    files |= training | {small[name]: path for name, path in originals.items()}
    return files, training, small


def _cutout_entry(cutout: CleanedPhoto, here: str) -> CutoutEntry:
    return CutoutEntry(
        file=f"{here}/{CUTOUTS}/{cutout.cutout_path.name}",
        source=cutout.source,
        preview=f"{here}/{CUTOUTS}/{cutout.preview_path.name}" if cutout.preview_path else None,
        coverage=cutout.coverage,
        not_for_composites=cutout.not_for_composites,
        outline_match=cutout.outline_match,
        blur=cutout.blur,
        product_share=cutout.product_share,
        advice=cutout.advice,
    )


def _notes(cards: list[CardRecord]) -> list[str]:
    """What the seller should know about the card set as a whole."""
    scenes = [c for c in cards if c.kind == "scene"]
    if scenes and all(c.status == "rejected" for c in scenes):  # why each was: its record's reason
        return [
            "No scene card looked enough like your product or matched its scene, so only the main image is "
            "proposed. A few more photos of the product, from other sides, usually help."
        ]
    return []


def cutout_notes(cutouts: list[CleanedPhoto]) -> list[str]:
    """What the seller should know when no photo's cutout could be pasted into a composite card."""
    if not cutouts or any(c.not_for_composites is None for c in cutouts):
        return []
    return [
        "None of your photos could be placed into a scene as it is (each kept something besides the "
        "product: see Your photos), so every scene card was drawn from what we learned of your product. For "
        "scenes with your own photo, send a photo of the product alone, whole and clear of the photo's edges."
    ]


def _lora_entry(
    trained: TrainResult, training_files: dict[str, Path], here: str, train: TrainConfig
) -> LoraEntry:
    """The LoRA and its training record, by their keys in run ``here``."""
    return LoraEntry(
        file=f"{here}/{LORA}/{trained.lora_file.name}",
        rank=trained.rank,
        alpha=trained.alpha,
        steps=trained.steps,
        resolution=trained.resolution,
        final_loss=round(trained.final_loss, 5),
        settings=train.model_dump(mode="json"),  # resolved for the product and family, as trained
        training=TrainingEntry(
            loss_curve=f"{here}/{TRAINING}/{trained.loss_curve.name}" if trained.loss_curve else "",
            validation=sorted(k for k in training_files if k.startswith(f"{here}/{TRAINING}/{VALIDATION}/")),
            resumed_from_step=trained.resumed_from,
            timings_s=trained.timings,
            kohya_file=f"{here}/{LORA}/{trained.kohya_file.name}" if trained.kohya_file else None,
        ),
    )


def _scoring(score: ScoreSettings) -> Scoring:
    """The encoders, thresholds and weights the cards were scored and ranked with."""
    return Scoring(
        dino_model=ModelRef(**model_identity(score.dino_model)),
        clip_model=ModelRef(**model_identity(score.clip_model)),
        min_identity=score.min_identity,
        min_prompt=score.min_prompt,
        keep=score.keep,
        rank_weights=RANK_WEIGHTS,
    )
