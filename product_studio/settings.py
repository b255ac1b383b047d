"""Typed settings, read once at the edge (CLI, flows) from ``PRODUCT_STUDIO_*`` environment variables.

Nested groups use a double underscore: ``PRODUCT_STUDIO_TRAIN__STEPS=400``. The S3 endpoint and
credentials are boto3's own standard variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from product_studio.records import EnvList
from product_studio.training.config import TrainConfig

if TYPE_CHECKING:
    from product_studio.cards.planning import PlanDefaults
    from product_studio.loaded_models import ModelRefs
    from product_studio.provenance.content_credentials import SigningKey
    from product_studio.storage import Store

ENV_PREFIX = "PRODUCT_STUDIO_"
_REPO_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
# Every group of settings refuses inf, -inf and NaN in its floats (1e400 reads as inf): a non-finite guidance
# scale or loss weight passes every bound (inf >= 0) and fails each SKU later.
_FINITE = ConfigDict(allow_inf_nan=False)
# A lease's expiry is a date: 10**12 s overflows it. A week is longer than any stage a lease spans.
MAX_LEASE_SECONDS = 7 * 24 * 3600
# A cron expression Prefect's schedules parse (Prefect's own validator, given by the flows: the library never
# imports Prefect); None: cronsim's check alone.
cron_check: Callable[[str], None] | None = None


class RenderSettings(BaseModel):
    """Scene rendering; ``None`` means "as the scene template says"."""

    model_config = _FINITE

    steps: int | None = Field(None, ge=1, description="denoising steps; default: each template's own")
    guidance_scale: float | None = Field(None, ge=0)
    prior_steps: int = Field(30, ge=1, description="denoising steps for class-prior images")
    inpaint_model: str | None = Field(
        None,
        description="an inpainting checkpoint (id or folder) for composite cards; default: the base model",
    )

    upscaler: str | None = Field(
        None, description="diffusers' SD x4 or latent x2 upscaler (id or folder); default: Lanczos alone"
    )
    upscale_steps: int = Field(20, ge=1, le=200, description="denoising steps of the upscaler")
    compile: bool = Field(
        False,
        description="warm GPU workers: compile the denoiser once per worker and hot-swap each SKU's LoRA "
        "into it (docs/scale-out.md)",
    )
    compile_max_rank: int = Field(
        128, ge=1, le=1024, description="largest LoRA rank the compiled slot swaps in (higher: loaded apart)"
    )
    compile_backend: Literal["inductor", "cudagraphs", "aot_eager", "eager"] = Field(
        "inductor", description="torch.compile's backend; aot_eager and eager are for debugging"
    )

    @field_validator("inpaint_model", "upscaler")
    @classmethod
    def _model_refs(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else check_model_ref(str(info.field_name), v)


def check_model_ref(field: str, v: str, marker: str = "model_index.json") -> str:
    """``v`` if it is a local model folder (holding ``marker``: diffusers' model_index.json, transformers'
    config.json) or looks like a Hugging Face id; else a ValueError naming the setting."""
    local = Path(v).expanduser()
    if local.is_absolute() or v.startswith((".", "~")) or local.exists():
        if not (local / marker).is_file():
            raise ValueError(f"{field} {v!r} is a path but holds no {marker} (a model folder)")
    elif not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", v):
        raise ValueError(f"{field} {v!r} is neither a Hugging Face id (org/name) nor a folder")
    return v


class ScoreSettings(BaseModel):
    """Identity and prompt scores, candidate ranking and the gate (docs/scoring.md)."""

    model_config = _FINITE

    dino_model: str = Field("facebook/dino-vits16", description="DINO encoder (id or folder)")
    clip_model: str = Field("openai/clip-vit-large-patch14", description="CLIP model (id or folder)")
    min_identity: float = Field(0.5, ge=-1, le=1, description="least identity_dino a published card has")
    min_prompt: float = Field(0.2, ge=-1, le=1, description="least prompt_clip a published card has")
    keep: int = Field(1, ge=1, le=8, description="best candidates published per template and format")
    keep_rejected: bool = Field(False, description="also publish rejected candidates under candidates/")

    @field_validator("dino_model", "clip_model")
    @classmethod
    def _encoder(cls, v: str, info: ValidationInfo) -> str:
        return check_model_ref(str(info.field_name), v, marker="config.json")


class C2paSettings(BaseModel):
    """C2PA signing of cards (docs/provenance.md); without a certificate, XMP labels only."""

    model_config = _FINITE

    cert: Path | None = Field(
        None, description="PEM certificate chain: the signing certificate first, then its intermediates"
    )
    key: Path | None = Field(None, description="the signing certificate's PEM private key (unencrypted)")
    tsa_url: str | None = Field(None, description="an RFC 3161 time-stamp authority; default: none")
    trust_anchors: Path | None = Field(
        None, description="PEM CA certificates `product-studio verify` trusts (e.g. your own CA)"
    )

    @model_validator(mode="after")
    def _signing_files(self) -> C2paSettings:
        if (self.cert is None) != (self.key is None):
            given, missing = ("CERT", "KEY") if self.cert is not None else ("KEY", "CERT")
            raise ValueError(
                f"PRODUCT_STUDIO_C2PA__{given} is set but PRODUCT_STUDIO_C2PA__{missing} is not: set both "
                "(the PEM certificate chain and its private key) to sign cards, or neither (XMP labels only)"
            )
        self.signing_key()  # names the variable and file at fault
        if self.trust_anchors is not None:
            _check_trust_anchors(self.trust_anchors)
        return self

    @field_validator("tsa_url")
    @classmethod
    def _tsa_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            TypeAdapter(HttpUrl).validate_python(v)
        except ValidationError:
            raise ValueError(
                "not an http(s) URL of an RFC 3161 time-stamp authority (e.g. "
                "http://timestamp.digicert.com); unset it to sign without a time stamp"
            ) from None
        return v

    def signing_key(self) -> SigningKey | None:
        """The checked chain and key, or None when no certificate is set; a ValueError names the variable."""
        from product_studio.provenance.content_credentials import SigningKeyError, load_signing_key

        if self.cert is None or self.key is None:
            return None
        try:
            return load_signing_key(self.cert, self.key, self.tsa_url)
        except SigningKeyError as exc:
            path = self.cert if exc.which == "cert" else self.key
            raise ValueError(f"PRODUCT_STUDIO_C2PA__{exc.which.upper()}={path}: {exc}") from None

    def anchors(self) -> bytes | None:
        """The PEM trust anchors ``verify`` checks signers against, if set."""
        return self.trust_anchors.expanduser().read_bytes() if self.trust_anchors else None


def _check_trust_anchors(path: Path) -> None:
    """A PEM file holding at least one certificate; else a ValueError naming the variable and the file."""
    from cryptography import x509

    variable = f"PRODUCT_STUDIO_C2PA__TRUST_ANCHORS={path}"
    if not path.expanduser().is_file():
        raise ValueError(f"{variable}: no such file; name a PEM file of CA certificates, or unset it")
    try:
        x509.load_pem_x509_certificates(path.expanduser().read_bytes())
    except ValueError:
        raise ValueError(
            f"{variable}: the file holds no PEM certificate (-----BEGIN CERTIFICATE-----), so every card "
            "would verify as Invalid; name a PEM file of CA certificates, or unset it"
        ) from None


class Settings(BaseSettings):
    """Everything a run needs; defaults work for a real GPU worker against AWS S3."""

    model_config = SettingsConfigDict(
        env_prefix="PRODUCT_STUDIO_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        allow_inf_nan=False,
    )

    incoming: str = Field("s3://incoming", description="where sellers upload: s3://bucket[/prefix]")
    output: str = Field("s3://output", description="where results are published: s3://bucket[/prefix]")
    marketplace: str = Field(
        "s3://marketplace",
        description="where approved cards go live (publish-approved only): s3://bucket[/prefix]",
    )
    # Before base_model: its check reads this.
    allow_noncommercial_models: bool = Field(
        False,
        description="allow a base model known to be non-commercial (FLUX.1 [dev], FLUX.2 [klein] 9B, a model "
        "card's non-commercial licence); its cards may not be used commercially",
    )
    base_model: str = Field(
        "black-forest-labs/FLUX.2-klein-base-4B",
        description="Hugging Face id or local diffusers folder (README: choosing a base model)",
    )
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', 'mps'")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    cleaner: str = Field(
        "rembg:birefnet-general",
        description="'rembg:<model>' (commercial-use licence by default), "
        "'rembg-onnx:[u2net:|dis:|ben:]<path>' (your own ONNX model and the rembg session it runs in) "
        "or 'grabcut'",
    )
    templates_dir: Path = Field(_REPO_TEMPLATES, description="folder of scene template YAML files")
    extra_templates_dir: Path | None = Field(
        None, description="your own template folder, used beside templates_dir (same ids replace ours)"
    )
    work_dir: Path = Field(Path.home() / ".cache" / "product-studio", description="local scratch space")
    default_scenes: EnvList = Field(
        default_factory=list,
        description="scene templates used when product.json names none; empty: the best-suited ones",
    )
    scene_count: int = Field(3, ge=1, le=24, description="scenes chosen by suitability when none are named")
    default_marketplaces: EnvList = Field(
        default_factory=lambda: ["amazon-main", "ebay-square"],
        description="card format ids used when product.json names none",
    )
    min_photos: int = Field(3, ge=1, description="usable photos an SKU needs to train")
    preview: bool = Field(
        True,
        description="publish the cards that need no LoRA (main images, composites) as a preview before "
        "training, then the rest",
    )
    min_photo_side: int = Field(256, ge=32, description="smallest accepted photo side in pixels")
    max_photo_bytes: int = Field(30_000_000, ge=1, description="largest accepted photo file")
    max_photos: int = Field(30, ge=1, le=1000, description="photos an SKU uses at most (in key order)")
    schedule_cron: str = Field(
        "*/15 * * * *", description="how often the scheduled flow looks for new catalogues"
    )
    batch_deployment: str = Field(
        "",
        description="the batch deployment a catalogue fans out to ('product-sku-batch/batch' on a work "
        "pool): a few runs that each take SKUs one at a time, models loaded once; empty: SKUs run one by one "
        "in the catalogue's own process",
    )
    batch_runs: int = Field(
        0,
        ge=0,
        le=1000,
        description="batch runs a catalogue starts; 0: the batch pool's concurrency limit (4 without one)",
    )
    batch_wait_seconds: int = Field(
        0,
        ge=0,
        description="how long a batch run with nothing left to take waits for SKUs other runs hold (a "
        "crashed run's SKU is taken once its lease expires); 0: it ends, the catalogue's next run takes them",
    )
    catalogue_deployment: str = Field(
        "",
        description="the catalogue deployment the scheduled scan starts ('product-catalogue/catalogue'); "
        "empty: due catalogues run in the scan's own process",
    )
    retry_deployment: str = Field(
        "",
        description="the deployment that re-renders a scene a seller sent back ('product-retry/retry'); "
        "empty: publish-approved re-renders it in its own process",
    )
    review_link_seconds: int = Field(
        0,
        ge=0,
        le=7 * 24 * 3600,
        description="how long the review link in the flows' events lasts (a shared page where the seller "
        "decides; at most 7 days); 0: the events carry the page's s3:// URL only",
    )
    lease_seconds: int = Field(
        3 * 3600,
        ge=15,
        le=MAX_LEASE_SECONDS,
        description="how long an SKU's or class prior's lease lasts without renewal (renewed between stages: "
        "keep it longer than the longest stage, or another worker may take a running SKU)",
    )
    lease_wait_seconds: int = Field(
        0, ge=0, description="how long a second run of a busy SKU waits before it ends as 'skipped'"
    )
    worker_name: str = Field("", description="this worker's name in reports; default: the host name")
    train: TrainConfig = Field(default_factory=TrainConfig)
    render: RenderSettings = Field(default_factory=RenderSettings)
    scores: ScoreSettings = Field(default_factory=ScoreSettings)
    c2pa: C2paSettings = Field(default_factory=C2paSettings)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d{1,2})?", v):
            raise ValueError(f"device {v!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return v

    @field_validator("cleaner")
    @classmethod
    def _cleaner(cls, v: str) -> str:
        from product_studio.cleaning import parse_cleaner

        parse_cleaner(v)
        return v

    @field_validator("work_dir", mode="before")
    @classmethod
    def _work_dir(cls, v: object) -> object:
        if isinstance(v, str) and not v.strip():
            raise ValueError("work_dir is empty; name a folder for scratch files (it is created if missing)")
        return v

    @field_validator("work_dir")
    @classmethod
    def _work_dir_is_a_folder(cls, v: Path) -> Path:
        if v.expanduser().exists() and not v.expanduser().is_dir():
            raise ValueError("work_dir is a file, not a folder; name a folder for scratch files")
        return v

    @field_validator("base_model")
    @classmethod
    def _base_model(cls, v: str, info: ValidationInfo) -> str:
        from product_studio.models import check_commercial_use

        check_model_ref("base_model", v)
        return check_commercial_use(v, allow=bool(info.data.get("allow_noncommercial_models")))

    @field_validator("schedule_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from datetime import datetime

        from cronsim import CronSim, CronSimError

        try:
            CronSim(v, datetime.now())
            # Where cron dialects differ (L, W, #, names), the parser of Prefect's schedules decides.
            if cron_check is not None and re.search(r"[^\d\s*,/-]", v):
                cron_check(v)
        except (CronSimError, ValueError) as exc:
            raise ValueError(
                f"schedule_cron {v!r} is not a cron expression Prefect's schedules accept "
                f"({str(exc).splitlines()[-1].strip()}); use five fields of numbers, '*', ranges, lists and "
                "steps, e.g. '*/15 * * * *'"
            ) from None
        return v

    @field_validator("default_scenes", "default_marketplaces")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        from product_studio.ingest import unique_ids

        return unique_ids(v)

    @model_validator(mode="after")
    def _pixel_models_may_make_commercial_cards(self) -> Settings:
        """Every model that makes card pixels is held to the base model's licence rule (the base model's own
        field checks it first)."""
        from product_studio.models import check_commercial_use

        for role, (variable, model) in self.pixel_models().items():
            if role == "base":
                continue
            try:
                check_commercial_use(model, allow=self.allow_noncommercial_models, setting=variable)
            except ValueError as exc:
                raise ValueError(f"{variable}={model}: the {role} model: {exc}") from None
        return self

    def pixel_models(self) -> dict[str, tuple[str, str]]:
        """Every model that makes card pixels, by role: (its variable, the model id or folder). The cleaner
        is held to its own rule (commercial-use rembg models only); the encoders only score cards."""
        render = self.render
        models = {"base": (f"{ENV_PREFIX}BASE_MODEL", self.base_model)}
        if render.inpaint_model:
            models["inpainter"] = (f"{ENV_PREFIX}RENDER__INPAINT_MODEL", render.inpaint_model)
        if render.upscaler:
            models["upscaler"] = (f"{ENV_PREFIX}RENDER__UPSCALER", render.upscaler)
        return models

    @model_validator(mode="after")
    def _known_ids(self) -> Settings:
        from product_studio.cards.formats import select_formats
        from product_studio.rendering.scenes import load_library, select_templates

        library = load_library(self.templates_dir, self.extra_templates_dir)  # names a bad file and field
        for name, ids, select in (
            ("DEFAULT_SCENES", self.default_scenes, lambda ids: select_templates(library, ids)),
            ("DEFAULT_MARKETPLACES", self.default_marketplaces, select_formats),
        ):
            try:
                select(ids)
            except ValueError as exc:
                raise ValueError(f"{ENV_PREFIX}{name}={json.dumps(ids)}: {exc}") from None
        return self

    @field_validator("batch_deployment", "catalogue_deployment", "retry_deployment")
    @classmethod
    def _deployment(cls, v: str, info: ValidationInfo) -> str:
        if v and not re.fullmatch(r"[\w.-]+/[\w.-]+", v):
            raise ValueError(f"{info.field_name} {v!r} is not '<flow name>/<deployment name>' (or empty)")
        return v

    @field_validator("incoming", "output", "marketplace")
    @classmethod
    def _s3_url(cls, v: str) -> str:
        from product_studio.storage import Location

        Location.parse(v)  # raises a ValueError that names the bad URL
        return v

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_variables(cls, data: object) -> object:
        """A misspelt PRODUCT_STUDIO_* variable is an error, not a silently ignored setting."""
        prefix = "PRODUCT_STUDIO_"
        for name in os.environ:
            if not name.startswith(prefix):
                continue
            model: type[BaseModel] | None = cls
            for part in name[len(prefix) :].lower().split("__"):
                field = model.model_fields.get(part) if model is not None else None
                if field is None:
                    raise ValueError(f"unknown setting {name}; see docs/settings.md for valid names")
                annotation = field.annotation
                model = (
                    annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
                )
        return data

    def plan_defaults(self) -> PlanDefaults:
        """What an SKU's cards are planned from when its ``product.json`` names no formats or scenes."""
        from product_studio.cards.planning import PlanDefaults

        return PlanDefaults(
            formats=self.default_marketplaces,
            scenes=self.default_scenes,
            scene_count=self.scene_count,
            templates_dir=self.templates_dir,
            extra_templates_dir=self.extra_templates_dir,
        )

    def for_product(self, preset: str | None) -> Settings:
        """These settings with an SKU's effective training config (``training.config.resolve_config``: its
        preset, where explicit ``PRODUCT_STUDIO_TRAIN__*`` values win, and the base model's family)."""
        from product_studio.models import family_of
        from product_studio.training.config import resolve_config

        config = resolve_config(self.train, preset=preset, family=family_of(self.base_model))
        return self.model_copy(update={"train": config})

    def run_work_dir(self, catalogue_id: str, sku: str, run: str) -> Path:
        """A run's own scratch folder, ``<work_dir>/<catalogue>/<sku>/<run>``, checked to lie inside work_dir.

        Each run has its own, so two runs of one SKU never share files.
        """
        from product_studio.ingest import check_id

        root = self.work_dir.expanduser().resolve()
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", run):
            raise ValueError(f"run id {run!r} is not valid: 1-64 letters, digits, '_' or '-'")
        path = (root / check_id("catalogue", catalogue_id) / check_id("SKU", sku) / run).resolve()
        if root not in path.parents:
            raise ValueError(f"run folder {path} is not inside the work dir {root}")
        return path

    def model_refs(self) -> ModelRefs:
        """Which models a run uses, on which device (``loaded_models.load_run_models`` loads them once per
        process: the preflight, then the stages)."""
        from product_studio.loaded_models import ModelRefs

        render, score = self.render, self.scores
        return ModelRefs(
            base_model=self.base_model,
            cleaner=self.cleaner,
            dino_model=score.dino_model,
            clip_model=score.clip_model,
            inpaint_model=render.inpaint_model,
            upscaler=render.upscaler,
            upscale_steps=render.upscale_steps,
            compile=render.compile,
            compile_max_rank=render.compile_max_rank,
            compile_backend=render.compile_backend,
            device=self.resolved_device(),
            dtype=self.resolved_dtype(),
        )

    def store(self, name: Literal["incoming", "output", "marketplace"]) -> Store:
        """The bucket location a setting names; its errors name the ``PRODUCT_STUDIO_*`` variable."""
        from product_studio.storage import Store

        return Store(getattr(self, name), setting=f"{ENV_PREFIX}{name.upper()}")

    def worker(self) -> str:
        """The name this worker reports (``worker_name``, else the host name: a pod's name on Kubernetes)."""
        import socket

        return self.worker_name or socket.gethostname()

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_dtype(self) -> str:
        """``auto``: float32 on a CPU; on a GPU bfloat16 where it has it (FLUX.2 [klein] overflows in
        float16), else float16."""
        if self.dtype != "auto":
            return self.dtype
        device = self.resolved_device()
        if device == "cpu":
            return "float32"
        import torch

        cuda = device.startswith("cuda") and torch.cuda.is_available()
        return "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float16"


def describe_settings_error(exc: ValidationError) -> str:
    """One line per bad setting: its ``PRODUCT_STUDIO_*`` variable, the value given and what is wrong
    (pydantic's own text names the field path and links its docs, which helps no operator)."""
    lines = []
    for error in exc.errors(include_url=False):
        path = [str(part) for part in error["loc"] if not isinstance(part, int)]
        variable = ENV_PREFIX + "__".join(path).upper()
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        if not path:  # a rule across settings: its message names them
            lines.append(message)
        elif error["type"] == "extra_forbidden":
            lines.append(f"{variable} is not a setting: unset it (`product-studio settings` lists them all)")
        elif message.startswith(ENV_PREFIX):  # a rule of a group that names its own variable
            lines.append(message)
        elif error["type"] == "missing" or isinstance(value, dict):
            lines.append(f"{variable}: {message}")
        elif error["type"] == "finite_number":
            lines.append(f"{variable}={value!s}: not a finite number; give a number such as 7.5")
        else:
            lines.append(f"{variable}={value!s}: {message}")
    return "\n".join(lines)
