"""Small records passed between stages and written to manifests: keys and metadata, never pixels.

A record's ``local_path`` (where a worker keeps the file) is excluded from everything it serialises, so
the same record travels between tasks and lands in the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_settings import NoDecode

# The training presets' names: product.json names one (checked at ingest), the trainer fills its fields
# (``training.presets``). Spelled here, below both, so the input contract need not import the trainer.
TRAINING_PRESETS = ("object", "fine-detail", "person", "quick")


def _json_list(value: object) -> object:
    """A list setting given as text (an environment variable) is a JSON list; anything else is said with the
    JSON form it was probably meant as."""
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, list):
        meant = json.dumps([part.strip() for part in value.split(",") if part.strip()])
        raise ValueError(f"not a JSON list; write it as JSON, e.g. '{meant}' (single quotes in a shell)")
    return parsed


# A list of strings that an environment variable gives as JSON (``'["oak-table", "studio-white"]'``): read
# by the field's own validator, so a bad value names its variable and the form expected.
EnvList = Annotated[list[str], NoDecode, BeforeValidator(_json_list)]


def check_training_preset(name: str) -> str:
    """``name`` if it names a training preset; a ValueError names the valid ones."""
    if name not in TRAINING_PRESETS:
        raise ValueError(f"unknown training preset {name!r}; choose one of {sorted(TRAINING_PRESETS)}")
    return name


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
    local_path: Path | None = Field(None, exclude=True)


class CleanedPhoto(Record):
    """A background-removed, centred, square RGBA cutout of one seller photo."""

    source: str
    cutout_path: Path
    coverage: float
    preview_path: Path | None = None  # a small copy of the cutout, for pages
    product_side: int | None = None  # the product's longer side in the seller's photo, px; None: unmeasured
    # Why the cutout is not pasted into composite cards (``cutout_checks``); None: it may be. Trained on.
    not_for_composites: str | None = None
    outline_match: float | None = None  # IoU of its outline with the SKU's median outline (3+ cutouts)
    # Photo-set advice (``photo_advice``): its measures, and what to retake in the seller's words.
    blur: float | None = None  # share of fine detail a 1 px blur keeps: higher is blurrier
    product_share: float | None = None  # the product's longer side over the photo's
    phash: str | None = None  # perceptual hash of the photo (near-duplicates)
    advice: list[str] = []


class PhotoSetAdvice(Record):
    """Whether an SKU's photos give enough different, usable views to learn the product from."""

    usable_views: int  # photos with no advice (near-duplicates counted once)
    needed: int
    retake: list[str] = []  # the seller's file names, in upload order

    @property
    def enough(self) -> bool:
        return self.usable_views >= self.needed


class TrainResult(Record):
    """What a finished training run wrote (files on this worker) and how it went."""

    lora_file: Path
    steps: int
    resolution: int
    rank: int
    alpha: int
    losses: list[float] = []
    kohya_file: Path | None = None
    loss_curve: Path | None = None
    validation: list[Path] = []
    resumed_from: int = 0  # the checkpoint's step the run resumed from (0: a fresh run)
    timings: dict[str, float] = {}  # seconds (``*_s``), ms per step; ``reused`` when not trained at all

    @property
    def final_loss(self) -> float:
        """Mean loss of the last 20 steps (a single step's loss is too noisy to compare runs)."""
        tail = self.losses[-20:]
        return sum(tail) / max(1, len(tail))

    def files(self) -> dict[str, Path]:
        """Every output file by its name relative to the output folder."""
        root = self.lora_file.parent
        paths = [self.lora_file, self.kohya_file, self.loss_curve, root / "training.json", *self.validation]
        return {p.relative_to(root).as_posix(): p for p in paths if p is not None and p.exists()}


class Compliance(Record):
    """A card checked against its marketplace format's rules (``formats.check_card``)."""

    format: str
    passed: bool
    checks: dict[str, bool]  # rule name -> passed
    problems: list[str] = []  # what failed, in words
    enlargement: float | None = None  # card pixels per seller pixel of the product (cutout cards)


class LightInfo(Record):
    """How a composite card's product is lit (``rendering.relight``): ``keep`` -- the seller's pixels as
    shot; ``match`` -- relit for the scene: the model's render at ``strength`` over the product, its light
    (blurred at ``sigma`` card px) over the seller's pixels, the gain ``gain`` (lowest, highest) applied
    within ``gain_limits``. ``requested`` is the template's; ``fallback`` says why a ``match`` card kept the
    photo's light instead."""

    mode: Literal["keep", "match"]
    requested: Literal["keep", "match"]
    colour: Literal["keep", "scene"] = "keep"
    strength: float | None = None
    sigma: float | None = None
    gain: tuple[float, float] | None = None
    gain_limits: tuple[float, float] | None = None
    fallback: str | None = None


class RenderInfo(Record):
    """How a card's image was made: the mode, the size the model rendered at, how it was scaled up."""

    mode: Literal["composite", "generate", "cutout"]
    size: tuple[int, int] | None = (
        None  # (width, height) rendered by the model, before upscaling; None: no model
    )
    upscaler: str = "none"  # "lanczos", a diffusers upscaler's name, or "none"
    inpainter: str | None = None  # composite: "base" (the base model's components) or the inpaint_model
    reference: tuple[int, int] | None = None  # klein composite: the size of the seller's cutout it was shown
    light: LightInfo | None = None  # composite: how the product is lit
    shadow: Literal["model", "drawn"] | None = None  # composite: the model drew the shadow, or we did
    # generate: what conditioned the render: the product's LoRA, its cutouts as reference images, or both
    conditioning: list[Literal["lora", "reference"]] | None = None


class ProductPlacement(Record):
    """Where the seller's real product is in a card: the cutout, and the card box its opaque part fills.

    The bounding box of the cutout's pixels with alpha >= 128 was scaled (Lanczos) to exactly ``box``
    (left, top, right, bottom; right and bottom exclusive); inside it the card shows the seller's pixels.
    """

    cutout: str
    box: tuple[int, int, int, int]


class CandidateInfo(Record):
    """Which of a template's candidates (for one format) a card is, and how it ranked among them."""

    index: int  # render number (seed = template seed + index)
    of: int  # candidates rendered
    rank: int  # 1 = best by the combined score


class InputRef(Record):
    """A file a card was made from, by name and sha256 (never its content)."""

    file: str
    sha256: str


class CardOrigin(Record):
    """What every card of an SKU's run is made from: its provenance labels say so (``labels``, C2PA)."""

    manifest: str  # the SKU's manifest key, <catalogue>/<sku>/manifest.json
    base_model: str  # its public name: a Hugging Face id, never a server path (models.public_model_name)
    base_model_revision: str = ""  # the hub commit or the folder's weights hash
    cleaner: str = ""  # what removed the photos' backgrounds (no path: models.public_tool_name)
    photos: list[InputRef] = []  # the seller's photos (the LoRA's training set)
    placed: str | None = None  # the photo whose cutout the main image and composite cards show
    lora: InputRef | None = None  # the product's LoRA


class Provenance(Record):
    """What a card file says about how it was made: its IPTC label, and its C2PA manifest when signed."""

    digital_source_type: str  # the IPTC term in the file's XMP (labels.TERM_FOR_MODE)
    c2pa: bool = False  # a signed C2PA manifest is embedded (False: XMP only, no certificate was set)
    signer: str | None = None  # the signing certificate's subject, when signed


class CardRecord(Record):
    """One card image and how it was made; ``status`` says whether it is published, and if not, why."""

    file: str | None  # None: a rejected candidate that was not kept (keep_rejected off)
    format: str  # the marketplace format id (formats.FORMATS)
    width: int
    height: int
    kind: Literal["cutout", "scene"]  # "cutout": the real product photo; "scene": the product in a scene
    render: RenderInfo
    product: ProductPlacement | None = None  # composite and cutout cards
    compliance: Compliance
    status: Literal["published", "rejected"] = "published"
    reason: str | None = None  # why a card was rejected
    candidate: CandidateInfo | None = None  # scene cards
    gate: dict[str, float] | None = (
        None  # the thresholds this card was judged by (a template may set its own)
    )
    template: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    lora_scale: float | None = None
    scores: dict[str, float]
    provenance: Provenance | None = None  # None: made before cards were labelled
    local_path: Path | None = Field(None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_old_format_name(cls, data: Any) -> Any:
        """Manifests written before the rename also carry the format id as ``preset``: read, not kept."""
        if isinstance(data, dict) and "preset" in data:
            data = {k: v for k, v in data.items() if k != "preset"}
        return data


class SkuFailed(RuntimeError):
    """An SKU cannot be published; carries the per-photo problems found on the way."""

    def __init__(self, message: str, problems: list[PhotoProblem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class SkuOutcome(Record):
    """What happened to one SKU in a run."""

    catalogue_id: str
    sku: str
    status: Literal["published", "skipped", "failed"]
    manifest: str | None = None
    error: str | None = None
    reason: str | None = Field(None, description="why the SKU failed or was skipped")
    identifier: str | None = None
    cards: int = 0
    problems: list[PhotoProblem] = []
    content_key: str | None = None
    worker: str | None = None
    seconds: float | None = None
    model_load_s: float = Field(0.0, description="of ``seconds``, spent loading models (0: already loaded)")
    review_page: str | None = None
    flow_run: str | None = Field(None, description="the Prefect flow run that made this outcome")
    again: bool = Field(False, description="worth running again as it is (busy, or the run crashed)")
    training: Literal["trained", "reused", "not needed"] | None = Field(
        None,
        description="published: whether this run trained its LoRA, reused the published one, or needed none",
    )
    training_s: float | None = Field(None, description="of ``seconds``, class images and training")

    @classmethod
    def published(cls, catalogue_id: str, sku: str, **fields: Any) -> SkuOutcome:
        """The outcome of an SKU whose run published its cards."""
        return cls(catalogue_id=catalogue_id, sku=sku, status="published", **fields)

    @classmethod
    def skipped(cls, catalogue_id: str, sku: str, reason: str, **fields: Any) -> SkuOutcome:
        """The outcome of an SKU with nothing to do (unchanged, or another run holds it)."""
        return cls(catalogue_id=catalogue_id, sku=sku, status="skipped", reason=reason, **fields)

    @classmethod
    def failed(cls, catalogue_id: str, sku: str, error: BaseException | str) -> SkuOutcome:
        """The outcome of an SKU that raised ``error`` (an :class:`SkuFailed` keeps its photo problems)."""
        problems = error.problems if isinstance(error, SkuFailed) else []
        return cls(
            catalogue_id=catalogue_id,
            sku=sku,
            status="failed",
            error=str(error),
            reason=str(error),
            problems=problems,
        )


class RetryFailure(Record):
    """``<sku>/review/retry-error.json``: the last failed try of some cards of one run
    (``marketplace.retry_failures``)."""

    run: str
    cards: list[str]
    attempts: int
    error: str
    at: str
    given_up: bool = False

    def message(self) -> str:
        tries = f"{self.attempts} {'try' if self.attempts == 1 else 'tries'}"
        state = "given up" if self.given_up else "will be tried again"
        return f"making {', '.join(self.cards)} again failed ({tries}, {state}): {self.error}"


class LiveSince(Record):
    """One card live in the marketplace: the pixels (sha256) and since when they are."""

    sha256: str
    since: str


class LiveNow(Record):
    """``<sku>/review/live.json``: what the last publish-approved run put live, for the seller's pages."""

    cards: dict[str, LiveSince] = {}  # card name -> what is live
    refused: dict[str, str] = {}  # approved cards it did not put live, and why
    updated: str = ""
