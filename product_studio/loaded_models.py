"""Every model a run uses, loaded once per worker process and kept: the preflight loads them all, the stages
reuse them.

:func:`load_run_models` loads the base pipeline, the inpainter and upscaler (when set), the DINO and CLIP
scorers and the cleaner through the loaders' own per-process caches (``models.load_pipeline``,
``models.load_dino``, ``models.load_clip``, ``cleaning.make_cleaner``: keyed by model id, device and dtype),
so a second call -- the cards stage after the preflight, the next SKU on the same worker -- loads nothing. A
model that cannot be loaded is a :class:`ModelSettingError` naming its ``PRODUCT_STUDIO_*`` variable: a
misconfigured worker fails once, before any SKU starts. ``Settings.model_refs`` says which models a run uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from product_studio.cards.scoring import Scorer
    from product_studio.cleaning import Cleaner
    from product_studio.rendering.renderer import Upscaler

T = TypeVar("T")


class ModelSettingError(ValueError):
    """A model a setting names could not be loaded: ``setting`` (its path, e.g. ``scores.dino_model``),
    ``value`` and what went wrong; the message names the ``PRODUCT_STUDIO_*`` variable."""

    def __init__(self, setting: str, value: str, detail: str) -> None:
        self.setting, self.value, self.detail = setting, value, detail
        super().__init__(f"{self.variable}={value}: {detail}")

    @property
    def variable(self) -> str:
        return "PRODUCT_STUDIO_" + self.setting.replace(".", "__").upper()


@dataclass(frozen=True)
class ModelRefs:
    """Which models a run uses (the settings' values), and where."""

    base_model: str
    cleaner: str
    dino_model: str
    clip_model: str
    inpaint_model: str | None = None
    upscaler: str | None = None
    upscale_steps: int = 20
    compile: bool = (
        False  # a LoRA slot in the base pipeline and the inpainter (product_studio.rendering.lora_slot)
    )
    compile_max_rank: int = 128
    compile_backend: str = "inductor"
    device: str = "cpu"
    dtype: str = "float32"


@dataclass(frozen=True)
class RunModels:
    """The models of one worker's runs (shared objects: a stage that adds LoRA weights unloads them)."""

    pipe: DiffusionPipeline
    inpainter: DiffusionPipeline | None
    upscaler: Upscaler | None
    scorer: Scorer
    cleaner: Cleaner


_FIX = (
    "name a Hugging Face id this worker can fetch (or has cached) or a complete local folder (its config and "
    "weights)"
)
_FIX_CLEANER = "name a cleaner this worker can load (docs/cards.md#background-removal)"


def _named(setting: str, value: str, load: Callable[[], T], fix: str = _FIX) -> T:
    """``load()``; a failure is a :class:`ModelSettingError` naming the setting, its value and ``fix``."""
    try:
        return load()
    except Exception as exc:  # ModelLoadError, OSError, onnxruntime's errors, a failed download, ...
        text = str(exc).strip()
        detail = text.splitlines()[0] if text else type(exc).__name__
        raise ModelSettingError(setting, value, f"the model could not be loaded ({detail}); {fix}") from exc


_loaded: set[ModelRefs] = set()  # what this process has loaded
_unreported = [0.0]  # seconds spent loading since take_load_seconds last looked


def take_load_seconds() -> float:
    """Seconds this process spent loading models since the last call (0 when everything came from the
    caches): the first SKU of a worker carries its load in its ``timings_s.model_load_s``, the rest 0."""
    seconds, _unreported[0] = _unreported[0], 0.0
    return round(seconds, 3)


def load_run_models(refs: ModelRefs) -> RunModels:
    """Every model ``refs`` name, loaded (or taken from this process's caches); the seconds a first load
    takes are kept for :func:`take_load_seconds`."""
    if refs in _loaded:
        return _load_run_models(refs)
    started = time.perf_counter()
    models = _load_run_models(refs)
    _loaded.add(refs)
    _unreported[0] += time.perf_counter() - started
    return models


def _load_run_models(refs: ModelRefs) -> RunModels:
    from product_studio.cards.scoring import Scorer
    from product_studio.cleaning import make_cleaner
    from product_studio.models import load_clip, load_dino, load_pipeline
    from product_studio.rendering.lora_slot import keep_lora_slot
    from product_studio.rendering.renderer import Upscaler

    device, dtype = refs.device, refs.dtype
    cleaner = _named("cleaner", refs.cleaner, lambda: make_cleaner(refs.cleaner), _FIX_CLEANER)
    pipe = _named("base_model", refs.base_model, lambda: load_pipeline(refs.base_model, device, dtype))
    inpainter = upscaler = None
    if (inpaint := refs.inpaint_model) is not None:
        inpainter = _named(
            "render.inpaint_model", inpaint, lambda: load_pipeline(inpaint, device, dtype, kind="inpainting")
        )
    if (upscale := refs.upscaler) is not None:
        upscale_pipe = _named(
            "render.upscaler", upscale, lambda: load_pipeline(upscale, device, dtype, kind="upscaling")
        )
        upscaler = Upscaler(upscale_pipe, upscale, refs.upscale_steps)
    if refs.compile:
        for warm in (pipe, inpainter):
            if warm is not None:
                keep_lora_slot(warm, refs.compile_max_rank, backend=refs.compile_backend)
    _named("scores.dino_model", refs.dino_model, lambda: load_dino(refs.dino_model, device))
    _named("scores.clip_model", refs.clip_model, lambda: load_clip(refs.clip_model, device))
    scorer = Scorer(refs.dino_model, refs.clip_model, device)  # both encoders come from the caches now
    return RunModels(pipe=pipe, inpainter=inpainter, upscaler=upscaler, scorer=scorer, cleaner=cleaner)
