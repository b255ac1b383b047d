"""Ingest: list a ready catalogue, read each SKU's ``product.json``, download and validate its photos.

Layout under the incoming location::

    <catalogue_id>/catalogue.json            # the catalogue is ready once this exists
    <catalogue_id>/<sku>/product.json        # {"class_noun": "teapot", "title": ..., "scenes": [...], ...}
    <catalogue_id>/<sku>/photos/*.jpg|png|webp

Nothing is ever written to the incoming location.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from product_studio.identifiers import validate_class_noun
from product_studio.records import PhotoProblem, PhotoRecord
from product_studio.storage import ObjectNotFound, StorageError, Store
from product_studio.training.presets import preset_values

PHOTO_EXTENSIONS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class IngestError(ValueError):
    """Input that cannot be used; the message names the catalogue, SKU, key or field at fault."""


class ProductSpec(BaseModel):
    """A seller's ``product.json``.

    ``marketplaces`` names card formats (``product-studio formats``); ``training_preset`` a training preset.
    Older files may say ``preset`` for ``training_preset``: it is read the same way.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_noun: str = Field(description="what the product is, e.g. 'teapot' or 'backpack'")
    title: str = Field("", max_length=300)
    scenes: list[str] = Field(default_factory=list, description="scene template ids; empty = defaults")
    marketplaces: list[str] = Field(default_factory=list, description="card format ids; empty = defaults")
    training_preset: str | None = Field(
        None,
        validation_alias=AliasChoices("training_preset", "preset"),
        description="training preset: object, fine-detail, person, quick",
    )

    @field_validator("class_noun")
    @classmethod
    def _noun(cls, v: str) -> str:
        return validate_class_noun(v)

    @field_validator("training_preset")
    @classmethod
    def _preset(cls, v: str | None) -> str | None:
        if v is not None:
            preset_values(v)  # a ValueError naming the valid presets
        return v


def check_id(kind: str, value: str) -> str:
    if not _ID.match(value):
        raise IngestError(f"{kind} {value!r} is not a valid id: use 1-64 letters, digits, '.', '_' or '-'")
    return value


def catalogue_is_ready(incoming: Store, catalogue_id: str) -> bool:
    return incoming.exists(f"{check_id('catalogue', catalogue_id)}/catalogue.json")


def list_ready_catalogues(incoming: Store) -> list[str]:
    """Catalogue ids whose ``catalogue.json`` marker exists."""
    return sorted(
        key.split("/")[0]
        for key in incoming.list()
        if key.count("/") == 1 and key.endswith("/catalogue.json") and _ID.match(key.split("/")[0])
    )


def list_skus(incoming: Store, catalogue_id: str) -> list[str]:
    """SKU folders in a ready catalogue (every folder, even one missing its product.json)."""
    check_id("catalogue", catalogue_id)
    if not catalogue_is_ready(incoming, catalogue_id):
        raise IngestError(
            f"catalogue {catalogue_id!r} is not ready: {incoming.url(catalogue_id + '/catalogue.json')} "
            "does not exist (upload it last, once every SKU is in place)"
        )
    skus = {key.split("/")[1] for key in incoming.list(catalogue_id + "/") if key.count("/") >= 2}
    return sorted(skus)


def load_product_spec(incoming: Store, catalogue_id: str, sku: str) -> ProductSpec:
    key = f"{catalogue_id}/{check_id('SKU', sku)}/product.json"
    try:
        raw = incoming.read(key, max_bytes=100_000)
    except ObjectNotFound as exc:
        raise IngestError(f"SKU {sku!r}: {incoming.url(key)} is missing; upload a product.json") from exc
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IngestError(f"SKU {sku!r}: {incoming.url(key)} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise IngestError(
            f"SKU {sku!r}: {incoming.url(key)} must hold a JSON object, got {type(data).__name__}"
        )
    try:
        return ProductSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"field {'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        raise IngestError(f"SKU {sku!r}: {incoming.url(key)} is invalid: {problems}") from exc


def validate_photo(name: str, data: bytes, *, min_side: int) -> tuple[str, int, int]:
    """Decode a photo fully; return (format, width, height) or raise IngestError saying what is wrong."""
    suffix = Path(name).suffix.lower()
    if suffix not in PHOTO_EXTENSIONS:
        raise IngestError(f"{name}: not a photo file (accepted: {', '.join(sorted(PHOTO_EXTENSIONS))})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or "?"
                img.load()  # decodes every pixel: catches truncated and corrupt files
                width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise IngestError(
            f"{name}: corrupt or unreadable image ({exc}); re-export and upload it again"
        ) from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise IngestError(f"{name}: image is too large to process safely ({exc})") from exc
    if fmt not in set(PHOTO_EXTENSIONS.values()):
        raise IngestError(f"{name}: file content is {fmt}, not JPEG, PNG or WebP")
    if min(width, height) < min_side:
        raise IngestError(
            f"{name}: {width}x{height} px is too small; the shorter side must be >= {min_side} px"
        )
    return fmt, width, height


def load_sku_photos(
    incoming: Store,
    catalogue_id: str,
    sku: str,
    dest: Path,
    *,
    min_side: int = 256,
    max_bytes: int = 30_000_000,
) -> tuple[list[PhotoRecord], list[PhotoProblem]]:
    """Download and validate every photo of an SKU into ``dest``; one bad file is a problem, not a failure."""
    prefix = f"{catalogue_id}/{check_id('SKU', sku)}/photos/"
    dest.mkdir(parents=True, exist_ok=True)
    photos: list[PhotoRecord] = []
    problems: list[PhotoProblem] = []
    for key in incoming.list(prefix):
        name = key[len(prefix) :]
        if not name or name.endswith("/"):
            continue
        try:
            data = incoming.read(key, max_bytes=max_bytes)
            fmt, width, height = validate_photo(name, data, min_side=min_side)
        except (IngestError, StorageError) as exc:
            problems.append(PhotoProblem(file=name, reason=str(exc)))
            continue
        local = dest / name.replace("/", "__")
        local.write_bytes(data)
        photos.append(
            PhotoRecord(
                file=name,
                sha256=hashlib.sha256(data).hexdigest(),
                bytes=len(data),
                format=fmt,
                width=width,
                height=height,
                local_path=local,
            )
        )
    return photos, problems
