"""Typed settings, read once at the edge (CLI, flows) from ``PRODUCT_STUDIO_*`` environment variables.

Nested groups use a double underscore: ``PRODUCT_STUDIO_TRAIN__STEPS=400``. The S3 endpoint and
credentials are boto3's own standard variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_REPO_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


class TrainSettings(BaseModel):
    """DreamBooth LoRA hyper-parameters (defaults suit SD 1.5 on a GPU; see README, *Training*).

    ``preset`` fills every field it names (``object``, ``fine-detail``, ``person``, ``quick``); fields given
    explicitly win over the preset.
    """

    model_config = ConfigDict(extra="forbid")

    preset: str | None = Field(None, description="named hyper-parameter preset (see training.presets)")
    steps: int = Field(800, ge=1, description="optimizer steps")
    batch_size: int = Field(1, ge=1, le=64, description="instance images per step (as many class images)")
    gradient_accumulation_steps: int = Field(1, ge=1, le=128)
    learning_rate: float = Field(1e-4, gt=0, lt=1, description="AdamW learning rate (diffusers README: 1e-4)")
    text_encoder_lr: float | None = Field(None, gt=0, lt=1, description="defaults to learning_rate")
    lr_scheduler: Literal[
        "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
    ] = "constant_with_warmup"
    lr_warmup_steps: int = Field(0, ge=0)
    optimizer: Literal["adamw", "adamw8bit"] = Field("adamw", description="adamw8bit needs bitsandbytes")
    weight_decay: float = Field(1e-2, ge=0)
    rank: int = Field(16, ge=1, le=256, description="LoRA rank")
    alpha: int | None = Field(None, ge=1, description="LoRA alpha; defaults to the rank")
    train_text_encoder: bool = Field(False, description="also train LoRA on the text encoder(s)")
    prior_images: int = Field(200, ge=0, description="class-prior images (diffusers README: 200-300)")
    prior_loss_weight: float = Field(1.0, ge=0, description="lambda in instance + lambda * prior loss")
    resolution: int | None = Field(
        None, ge=32, description="training pixels; default: the model's native size"
    )
    max_grad_norm: float = Field(1.0, gt=0)
    masked_loss: bool = Field(True, description="weight the instance loss by the cutout's alpha")
    background_weight: float = Field(
        0.1, ge=0, le=1, description="loss weight of background pixels when masked_loss is on"
    )
    snr_gamma: float | None = Field(5.0, gt=0, description="min-SNR loss weighting gamma; None turns it off")
    noise_offset: float = Field(0.0, ge=0, le=1, description="per-channel noise offset (0 = off)")
    random_flip: bool = Field(False, description="mirror images at random: off, it mirrors logos and text")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory")
    attention: Literal["sdpa", "eager"] = Field("sdpa", description="torch scaled-dot-product attention")
    cache_latents: bool = Field(True, description="encode each image with the VAE once, not every step")
    lean_lora: bool = Field(True, description="a lean forward for peft's LoRA layers while training")
    cpu_conv_backend: Literal["auto", "mkldnn", "native"] = Field(
        "auto", description="CPU only: 'auto' times oneDNN against native convolutions once per shape"
    )
    checkpoint_every: int = Field(200, ge=0, description="steps between resumable checkpoints (0 = off)")
    validation_every: int = Field(0, ge=0, description="steps between validation renders (0 = end only)")
    validation_prompts: list[str] = Field(
        default_factory=lambda: ["a photo of {product}", "a photo of {product} on a wooden table"],
        description="rendered during and after training; {product} becomes '<identifier> <class noun>'",
    )
    validation_steps: int = Field(25, ge=1, description="denoising steps for validation renders")
    export_kohya: bool = Field(False, description="also write the LoRA in kohya/A1111 key format")
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("preset") is not None:
            from product_studio.training.presets import preset_values

            return {**preset_values(str(data["preset"])), **data}
        return data

    @property
    def lora_alpha(self) -> int:
        """The LoRA alpha in force: ``alpha``, or the rank when unset."""
        return self.alpha or self.rank

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, v: int | None) -> int | None:
        if v is not None and v % 8:
            raise ValueError(f"resolution must be a multiple of 8, got {v}")
        return v

    @field_validator("validation_prompts")
    @classmethod
    def _prompts_name_the_product(cls, v: list[str]) -> list[str]:
        for prompt in v:
            if "{product}" not in prompt:
                raise ValueError(f"validation prompt {prompt!r} must contain {{product}}")
        return v


class RenderSettings(BaseModel):
    """Scene rendering; ``None`` means "as the scene template says"."""

    steps: int | None = Field(None, ge=1, description="denoising steps; default: each template's own")
    guidance_scale: float | None = Field(None, ge=0)
    prior_steps: int = Field(30, ge=1, description="denoising steps for class-prior images")


class Settings(BaseSettings):
    """Everything a run needs; defaults work for a real GPU worker against AWS S3."""

    model_config = SettingsConfigDict(
        env_prefix="PRODUCT_STUDIO_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    incoming: str = Field("s3://incoming", description="where sellers upload: s3://bucket[/prefix]")
    output: str = Field("s3://output", description="where results are published: s3://bucket[/prefix]")
    base_model: str = Field(
        "stable-diffusion-v1-5/stable-diffusion-v1-5", description="Hugging Face id or local diffusers folder"
    )
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', 'mps'")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    cleaner: str = Field(
        "rembg:birefnet-general",
        description="'rembg:<model>' (commercial-use licence by default), 'rembg-onnx:<path>' or 'grabcut'",
    )
    templates_dir: Path = Field(_REPO_TEMPLATES, description="folder of scene template YAML files")
    work_dir: Path = Field(Path.home() / ".cache" / "product-studio", description="local scratch space")
    default_scenes: list[str] = Field(
        default_factory=lambda: ["marble-counter", "snowy-evening", "oak-table"],
        description="scene templates used when product.json names none",
    )
    default_marketplaces: list[str] = Field(
        default_factory=lambda: ["main-white", "scene-square"],
        description="card presets used when product.json names none",
    )
    min_photos: int = Field(3, ge=1, description="usable photos an SKU needs to train")
    min_photo_side: int = Field(256, ge=32, description="smallest accepted photo side in pixels")
    max_photo_bytes: int = Field(30_000_000, ge=1, description="largest accepted photo file")
    schedule_cron: str = Field(
        "*/15 * * * *", description="how often the scheduled flow looks for new catalogues"
    )
    train: TrainSettings = Field(default_factory=TrainSettings)
    render: RenderSettings = Field(default_factory=RenderSettings)

    @field_validator("incoming", "output")
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
                    raise ValueError(
                        f"unknown setting {name}; see the README's settings table for valid names"
                    )
                annotation = field.annotation
                model = (
                    annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
                )
        return data

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "float32" if self.resolved_device() == "cpu" else "float16"
