"""The trainer's configuration: one self-checking record, its presets merged in one place.

Like peft's configs, every field carries its help text and choices, and bad values or combinations are
refused with the field named. ``preset`` fills the fields it names; fields given explicitly win.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    field_validator,
    model_validator,
)

from product_studio.identifiers import check_product_template
from product_studio.records import EnvList
from product_studio.training.presets import preset_values

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


class TrainConfig(BaseModel):
    """DreamBooth LoRA hyper-parameters (defaults suit SD 1.5 on a GPU; see docs/training.md).

    Read from ``PRODUCT_STUDIO_TRAIN__*`` by the settings, from flags by ``product-studio train``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    preset: str | None = Field(None, description="named hyper-parameter preset (see training.presets)")
    when: Literal["always", "needed"] = Field(
        "always",
        description="needed: an SKU trains only when a generate scene has no zero-shot candidate that passes "
        "the gate (FLUX.2 [klein]; SD and SDXL always train)",
    )
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
    checkpoint_every: int = Field(200, ge=0, description="steps between resumable checkpoints (0 = off)")
    validation_every: int = Field(0, ge=0, description="steps between validation renders (0 = end only)")
    validation_prompts: EnvList = Field(
        default_factory=lambda: ["a photo of {product}", "a photo of {product} on a wooden table"],
        description="rendered during and after training; {product} becomes '<identifier> <class noun>'",
    )
    validation_steps: int = Field(25, ge=1, description="denoising steps for validation renders")
    export_kohya: bool = Field(False, description="also write the LoRA in kohya/A1111 key format")
    seed: int = 0

    @model_validator(mode="wrap")
    @classmethod
    def _apply_preset(cls, data: Any, handler: ModelWrapValidatorHandler[TrainConfig]) -> TrainConfig:
        if not (isinstance(data, dict) and data.get("preset") is not None):
            return handler(data)
        config = handler({**preset_values(str(data["preset"])), **data})
        # What the preset filled stays a default, so a preset named later (with_options) may replace it.
        config.model_fields_set.intersection_update(data)
        return config

    @field_validator("snr_gamma", mode="before")
    @classmethod
    def _zero_is_off(cls, v: Any) -> Any:
        return None if v in (0, "0", "0.0", "none", "None") else v

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, v: int | None) -> int | None:
        if v is not None and v % 8:
            raise ValueError(f"resolution must be a multiple of 8, got {v}")
        return v

    @field_validator("validation_prompts")
    @classmethod
    def _prompts_name_the_product(cls, v: list[str]) -> list[str]:
        return [check_product_template(prompt) for prompt in v]

    @property
    def lora_alpha(self) -> int:
        """The LoRA alpha in force: ``alpha``, or the rank when unset."""
        return self.alpha or self.rank

    @property
    def uses_prior(self) -> bool:
        """Class-prior preservation is on: there are class images and their loss counts."""
        return self.prior_images > 0 and self.prior_loss_weight > 0

    def resolution_for(self, pipe: DiffusionPipeline) -> int:
        """Training pixels: ``resolution``, or the pipeline's native size."""
        from product_studio.models import native_resolution

        return self.resolution or native_resolution(pipe)

    def with_options(self, **values: Any) -> TrainConfig:
        """A copy with ``values`` set explicitly; a new ``preset`` fills only fields not set explicitly.

        The one place presets are merged: an operator's ``PRODUCT_STUDIO_TRAIN__*`` variables and a user's
        flags win over a preset named later (by ``product.json`` or ``--preset``).
        """
        return type(self)(**{**self.model_dump(exclude_unset=True), **values})

    def for_family(self, family: str | None) -> TrainConfig:
        """This config on a base model family: the preset's values for that family (its
        ``preset_overrides``) fill the fields not set explicitly. Unchanged for SD and SDXL."""
        from product_studio.families import family_named

        if self.preset is None or family is None:
            return self
        values = family_named(family).preset_values(self.preset)
        unset = {k: v for k, v in values.items() if k not in self.model_fields_set}
        return self.model_copy(update=unset) if unset else self

    def with_preset(self, name: str | None) -> TrainConfig:
        """This config under preset ``name`` (unchanged when ``name`` is None)."""
        return self if name is None else self.with_options(preset=name)


def resolve_config(config: TrainConfig, *, preset: str | None, family: str | None) -> TrainConfig:
    """The effective training config, resolved once and handed to the trainer as it is: the operator's
    (``PRODUCT_STUDIO_TRAIN__*``, flags) under the product's ``preset`` (its values fill only what was not set
    explicitly), then what that preset changes on the base model's ``family`` (``families``)."""
    return config.with_preset(preset).for_family(family)
