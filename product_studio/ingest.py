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
from typing import Any

from PIL import Image, UnidentifiedImageError
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from product_studio.identifiers import validate_class_noun
from product_studio.layout import PRODUCT, READY_MARKER, catalogue_key, photos_prefix, sku_key
from product_studio.records import PhotoProblem, PhotoRecord, check_training_preset
from product_studio.storage import ObjectNotFound, ObjectTooLarge, Store

PHOTO_EXTENSIONS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # always fullmatch: "$" would accept a final "\n"
MAX_SPEC_BYTES = 100_000
# Photos never exceed this aspect ratio: a 256 x 100000 strip is not a product photo (and breaks OpenCV).
MAX_PHOTO_ASPECT = 10.0
# The magic bytes of what sellers upload by mistake, to say what a file is instead of "cannot identify".
_SIGNATURES = {
    b"\xff\xd8\xff": "a JPEG image",
    b"\x89PNG": "a PNG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive (or an Office document)",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"BM": "a BMP image",
}


MAX_SCENES = 24
MAX_FORMATS = 12


class IngestError(ValueError):
    """Input that cannot be used; the message names the catalogue, SKU, key or field at fault."""


class ProductSpec(BaseModel):
    """A seller's ``product.json``.

    ``card_formats`` names card formats (``product-studio formats``); ``training_preset`` a training preset.
    Older files may say ``marketplaces`` for ``card_formats`` and ``preset`` for ``training_preset``: they
    are read the same way.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_noun: str = Field(description="what the product is, e.g. 'teapot' or 'backpack'")
    title: str = Field("", max_length=300)
    scenes: list[str] = Field(
        default_factory=list, max_length=MAX_SCENES, description="scene template ids; empty = defaults"
    )
    card_formats: list[str] = Field(
        default_factory=list,
        max_length=MAX_FORMATS,
        validation_alias=AliasChoices("card_formats", "marketplaces"),
        description="card format ids (``marketplaces`` in older files); empty = defaults",
    )
    training_preset: str | None = Field(
        None,
        validation_alias=AliasChoices("training_preset", "preset"),
        description="training preset: object, fine-detail, person, quick",
    )

    @field_validator("class_noun")
    @classmethod
    def _noun(cls, v: str) -> str:
        return validate_class_noun(v)

    @field_validator("scenes", "card_formats")
    @classmethod
    def _no_duplicates(cls, v: list[str]) -> list[str]:
        return unique_ids(v)

    @field_validator("training_preset")
    @classmethod
    def _preset(cls, v: str | None) -> str | None:
        if v is not None:
            check_training_preset(v)  # a ValueError naming the valid presets
        return v


def unique_ids(ids: list[str]) -> list[str]:
    """``ids`` unchanged; a ValueError names any id listed twice (each would be rendered twice)."""
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ValueError(f"{twice} listed more than once; list each id once")
    return ids


def check_id(kind: str, value: str) -> str:
    """``value`` if it is a valid catalogue or SKU id (it becomes a key prefix and a folder name)."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise IngestError(f"{kind} {value!r} is not a valid id: use 1-64 letters, digits, '.', '_' or '-'")
    return value


def split_ids(kind: str, values: list[str]) -> tuple[list[str], dict[str, str]]:
    """The valid ids among ``values`` (in order), and why each other one is not valid (its own failure, never
    its catalogue's: a seller renames that folder)."""
    valid, invalid = [], {}
    for value in values:
        try:
            valid.append(check_id(kind, value))
        except IngestError as exc:
            invalid[value] = f"{exc}; rename its folder in the catalogue"
    return valid, invalid


def strict_json(raw: bytes, where: str) -> Any:
    """Parse JSON a seller uploaded; every way it can be hostile is an IngestError that names ``where``.

    Duplicate keys are refused (JSON would silently keep the last), as are numbers with more than 30
    digits, NaN and infinities, and nesting too deep to parse.
    """

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise IngestError(f"{where}: key(s) {twice} appear more than once; keep one of each")
        return dict(pairs)

    def bounded_int(text: str) -> int:
        if len(text) > 30:
            raise IngestError(f"{where}: a number has {len(text)} digits ({text[:12]}...); too long")
        return int(text)

    def no_constant(name: str) -> None:
        raise IngestError(f"{where}: {name} is not a valid JSON number")

    try:
        return json.loads(
            raw, object_pairs_hook=no_duplicates, parse_int=bounded_int, parse_constant=no_constant
        )
    except RecursionError:
        raise IngestError(f"{where} is nested too deeply to be JSON a product needs; keep it flat") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IngestError(f"{where} is not valid JSON ({exc})") from exc


def catalogue_is_ready(incoming: Store, catalogue_id: str) -> bool:
    return incoming.exists(catalogue_key(check_id("catalogue", catalogue_id), READY_MARKER))


def is_valid_id(value: str) -> bool:
    """Whether ``value`` is a valid catalogue or SKU id (see :func:`check_id`)."""
    return bool(_ID.fullmatch(value))


def list_skus(incoming: Store, catalogue_id: str) -> list[str]:
    """SKU folders in a ready catalogue (every folder, even one missing its product.json)."""
    check_id("catalogue", catalogue_id)
    if not catalogue_is_ready(incoming, catalogue_id):
        marker = incoming.url(catalogue_key(catalogue_id, READY_MARKER))
        raise IngestError(
            f"catalogue {catalogue_id!r} is not ready: {marker} "
            "does not exist (upload it last, once every SKU is in place)"
        )
    skus = {
        key.split("/")[1] for key in incoming.list(catalogue_key(catalogue_id, "")) if key.count("/") >= 2
    }
    return sorted(skus)


def load_product_spec(incoming: Store, catalogue_id: str, sku: str) -> ProductSpec:
    key = sku_key(check_id("catalogue", catalogue_id), check_id("SKU", sku), PRODUCT)
    try:
        raw = incoming.read(key, max_bytes=MAX_SPEC_BYTES)
    except ObjectNotFound as exc:
        raise IngestError(f"SKU {sku!r}: {incoming.url(key)} is missing; upload a product.json") from exc
    except ObjectTooLarge as exc:
        raise IngestError(
            f"SKU {sku!r}: {incoming.url(key)} is over {MAX_SPEC_BYTES:,} bytes; it holds a few fields"
        ) from exc
    data = strict_json(raw, f"SKU {sku!r}: {incoming.url(key)}")
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


def describe_content(data: bytes) -> str:
    """What a file's first bytes say it is, for error messages ("a PDF document", "starts with `<html`")."""
    for magic, what in _SIGNATURES.items():
        if data.startswith(magic):
            return what
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP image"
    if not data:
        return "an empty file"
    head = data[:12].decode("ascii", errors="replace").strip()
    if head.isprintable() and head:
        return f"starts with `{head}`"
    return f"starts with bytes {data[:8].hex(' ')}"


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
    except UnidentifiedImageError:
        raise IngestError(f"{name}: not a JPEG, PNG or WebP image: {describe_content(data)}") from None
    except (OSError, SyntaxError, ValueError) as exc:
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
    if max(width, height) > MAX_PHOTO_ASPECT * min(width, height):
        raise IngestError(
            f"{name}: {width}x{height} px is a strip, not a product photo (sides more than "
            f"{MAX_PHOTO_ASPECT:g}:1); upload a photo of the whole product"
        )
    return fmt, width, height


def local_photo_name(index: int, name: str) -> str:
    """A file name for the ``index``-th photo that no other photo of the SKU can share, whatever its key.

    ``dup.jpg`` and ``dup.png``, or ``sub/x.jpg`` and ``sub__x.jpg``, would otherwise land in one file (and
    one cutout); the seller's own name is kept, shortened and made safe, after the index.
    """
    path = Path(name)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:60].strip("._") or "photo"
    return f"{index:03d}_{stem}{path.suffix.lower()}"


def load_sku_photos(
    incoming: Store,
    catalogue_id: str,
    sku: str,
    dest: Path,
    *,
    min_side: int = 256,
    max_bytes: int = 30_000_000,
    max_photos: int = 30,
) -> tuple[list[PhotoRecord], list[PhotoProblem]]:
    """Download and validate the photos of an SKU into ``dest``; one bad file is a problem, not a failure.

    A photo that is invalid, too large or gone is a problem of that photo. A storage outage or a
    credentials problem is not the photo's fault: it raises (the task is retried), never a photo problem.
    Photos past the first ``max_photos`` (in key order) are listed as problems without being downloaded.
    """
    prefix = photos_prefix(check_id("catalogue", catalogue_id), check_id("SKU", sku))
    dest.mkdir(parents=True, exist_ok=True)
    photos: list[PhotoRecord] = []
    problems: list[PhotoProblem] = []
    names = [n for n in (key[len(prefix) :] for key in incoming.list(prefix)) if n and not n.endswith("/")]
    for index, name in enumerate(names):
        if index >= max_photos:
            problems.append(
                PhotoProblem(file=name, reason=f"{name}: not used; an SKU uses its first {max_photos} photos")
            )
            continue
        try:
            data = incoming.read(prefix + name, max_bytes=max_bytes)
            fmt, width, height = validate_photo(name, data, min_side=min_side)
        except (IngestError, ObjectNotFound, ObjectTooLarge) as exc:
            problems.append(PhotoProblem(file=name, reason=str(exc)))
            continue
        local = dest / local_photo_name(index, name)
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
