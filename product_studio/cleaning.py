"""Clean: upright the photo, remove the background, crop and centre the product on a square canvas.

Cleaners (chosen by the ``cleaner`` setting, never swapped silently):

- ``rembg:<model>`` -- rembg with a named model. The production default ``birefnet-general`` is MIT
  licensed; rembg's own default ``bria-rmbg`` is *not* licensed for commercial use, so it is never implied.
- ``rembg-onnx:[<kind>:]<path>`` -- rembg with your own ONNX file (it must lie inside ``REMBG_HOME`` or
  ``~/.u2net``), for offline workers. ``<kind>`` names the rembg session that pre- and post-processes it
  (``ONNX_SESSIONS``): ``u2net`` (the default: 320 px, ImageNet normalisation), ``dis`` (IS-Net: 1024 px) or
  ``ben`` (BEN: 1024 px).
- ``grabcut`` -- OpenCV's classical GrabCut seeded with a centred rectangle: no model, works offline, fits
  photos whose product sits in the middle with a margin around it.
"""

from __future__ import annotations

import functools
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps

from product_studio import cutout_checks
from product_studio.images import to_rgb
from product_studio.photos import advice as photo_advice
from product_studio.photos import matting
from product_studio.records import CleanedPhoto, PhotoProblem, PhotoRecord, SkuFailed

# ``rembg-onnx:<kind>:<path>``: the rembg session each kind of custom model runs in (rembg 2.0.86's names).
ONNX_SESSIONS = {"u2net": "u2net_custom", "dis": "dis_custom", "ben": "ben_custom"}

MIN_COVERAGE = 0.02
MAX_COVERAGE = 0.95
# A cutout keeps the photo's own pixels up to this side (a 12 MP phone photo whole; twice the product of the
# largest card, walmart-main's 2200 px); a larger photo's cutout is scaled down to it.
MAX_CUTOUT_SIDE = 4096
PREVIEW_SIDE = 512  # the cutout's copy the review pages show
# The side rembg's sessions feed their model (the mask is refined at the photo's size from there).
REMBG_WORK_SIDES = {"u2net": 320, "u2netp": 320, "u2net_human_seg": 320, "silueta": 320, "u2net_custom": 320}


class CleaningError(ValueError):
    """A photo could not be cleaned; the message names the file."""


class Cleaner(Protocol):
    """Makes a product mask. An optional ``frame`` (share of each side it never marks as product: GrabCut's
    margin) tells where the edge of what it could see lies (``cutout_checks.edge_sides``); ``work_side`` is
    the size it sees a photo at (its mask is refined at the photo's own resolution: ``matting``)."""

    name: str
    work_side: int

    def mask(self, image: Image.Image) -> Image.Image:
        """An 'L' mask of the product (255) against the background (0), same size as ``image``."""
        ...


class GrabCutCleaner:
    """OpenCV GrabCut, initialised with the centred rectangle inside ``margin`` of each side.

    GrabCut is O(pixels x iterations) plus a costly start (k-means colour models), so it runs coarse to fine:
    ``iterations`` from the rectangle on a ``coarse_side`` copy, then ``refine_iterations`` at ``work_side``
    starting from the coarse labels and colour models (``GC_EVAL``); the mask is scaled back up to the photo.
    3.8x faster than all iterations at ``work_side`` (bench/RESULTS.md); ``coarse_side=None``: single-scale.
    """

    def __init__(
        self,
        margin: float = 0.06,
        iterations: int = 5,
        work_side: int = 384,
        coarse_side: int | None = 192,
        refine_iterations: int = 2,
    ) -> None:
        if not 0 < margin < 0.4:
            raise ValueError(f"GrabCut margin must be in (0, 0.4), got {margin}")
        self.name, self.frame = "grabcut", margin
        self.margin, self.iterations, self.work_side = margin, iterations, work_side
        self.coarse_side, self.refine_iterations = coarse_side, refine_iterations

    def _from_rect(self, image: Image.Image, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Labels and the two colour models of GrabCut from the centred rectangle on a ``side`` copy."""
        import cv2

        bgr = _bgr(image, side)
        h, w = bgr.shape[:2]
        mx, my = max(1, int(w * self.margin)), max(1, int(h * self.margin))
        labels = np.zeros((h, w), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)
        cv2.grabCut(
            bgr, labels, (mx, my, w - 2 * mx, h - 2 * my), bgd, fgd, self.iterations, cv2.GC_INIT_WITH_RECT
        )
        return labels, bgd, fgd

    def mask(self, image: Image.Image) -> Image.Image:
        import cv2

        if self.coarse_side and self.coarse_side < min(self.work_side, max(image.size)):
            labels, bgd, fgd = self._from_rect(image, self.coarse_side)
            bgr = _bgr(image, self.work_side)
            labels = cv2.resize(labels, bgr.shape[1::-1], interpolation=cv2.INTER_NEAREST)
            cv2.setRNGSeed(0)
            cv2.grabCut(bgr, labels, None, bgd, fgd, self.refine_iterations, cv2.GC_EVAL)
        else:
            labels, _, _ = self._from_rect(image, self.work_side)
        fg = np.where((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
        # GrabCut never relabels a definite-background pixel: everything else is the area it searched.
        area_ys, area_xs = np.nonzero(labels != cv2.GC_BGD)
        ys, xs = np.nonzero(fg)
        if (
            len(xs)
            and xs.min() <= area_xs.min()
            and ys.min() <= area_ys.min()
            and xs.max() >= area_xs.max()
            and ys.max() >= area_ys.max()
        ):
            # A mask filling the whole search area found no object.
            raise CleaningError(
                "the product could not be told apart from the background: a photo on a plain background "
                "that contrasts with the product works best"
            )
        return Image.fromarray(fg, "L").resize(image.size, Image.Resampling.BILINEAR)


def _bgr(image: Image.Image, side: int) -> np.ndarray:
    """A copy of ``image`` fitting ``side`` x ``side``, as the contiguous BGR array OpenCV takes."""
    small = image.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(small)[:, :, ::-1])


class RembgCleaner:
    """rembg with a named model, or a custom ONNX file in the session ``model`` names (``ONNX_SESSIONS``)."""

    def __init__(self, model: str = "birefnet-general", model_path: str | Path | None = None) -> None:
        from rembg import new_session  # first import compiles numba code: only pay it when used

        self.name = f"rembg:{model}" if model_path is None else f"rembg-onnx:{model_path}"
        self.frame = 0.0
        self.work_side = REMBG_WORK_SIDES.get(model, 1024)
        if model_path is not None and model != "u2net_custom":
            kind = next(k for k, v in ONNX_SESSIONS.items() if v == model)
            self.name = f"rembg-onnx:{kind}:{model_path}"
        if model_path is not None:
            path = Path(model_path).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"rembg ONNX model {path} does not exist")
            home = Path(os.environ.get("REMBG_HOME", "~/.u2net")).expanduser().resolve()
            if home not in path.parents:
                raise ValueError(
                    f"rembg only loads custom models from inside REMBG_HOME ({home}); {path} is not"
                )
            self._session = new_session(model, model_path=str(path))
        else:
            self._session = new_session(model)

    def mask(self, image: Image.Image) -> Image.Image:
        from rembg import remove

        return remove(image.convert("RGB"), session=self._session, only_mask=True)


def parse_cleaner(spec: str) -> tuple[str, str]:
    """``(kind, argument)`` of a ``cleaner`` setting, checked without loading anything."""
    kind, _, arg = spec.partition(":")
    if (kind == "grabcut" and not arg) or (kind == "rembg" and re.fullmatch(r"[a-z0-9_.-]+", arg)):
        return kind, arg
    if kind == "rembg-onnx" and arg:
        _, path = onnx_session(spec)
        if not Path(path).expanduser().is_file():
            raise ValueError(f"cleaner {spec!r}: the ONNX model {path} does not exist")
        return kind, arg
    raise ValueError(
        f"cleaner {spec!r} is not one of 'rembg:<model>' (e.g. rembg:birefnet-general), "
        "'rembg-onnx:[u2net:|dis:|ben:]<path to .onnx>' or 'grabcut'"
    )


def onnx_session(spec: str) -> tuple[str, str]:
    """The rembg session and model path of a ``rembg-onnx:[<kind>:]<path>`` cleaner setting.

    A path alone runs in ``u2net_custom`` (as before kinds existed); a lowercase word before a ``:`` is a
    kind, and one rembg has no session for is refused by name.
    """
    arg = spec.removeprefix("rembg-onnx:")
    head, sep, rest = arg.partition(":")
    if not sep or not re.fullmatch(r"[a-z][a-z0-9_-]*", head):
        return ONNX_SESSIONS["u2net"], arg
    if head not in ONNX_SESSIONS or not rest:
        raise ValueError(
            f"cleaner {spec!r}: {head!r} is not a kind of custom rembg model; use "
            f"rembg-onnx:<kind>:<path> with kind one of {', '.join(sorted(ONNX_SESSIONS))} "
            "(u2net: U^2-Net-style, dis: IS-Net, ben: BEN), or rembg-onnx:<path> for U^2-Net"
        )
    return ONNX_SESSIONS[head], rest


def make_cleaner(spec: str) -> Cleaner:
    """The cleaner a ``cleaner`` setting names (see the module docstring), built once per worker process.

    A rembg session holds its model in memory: every SKU a worker handles shares it.
    """
    return _build_cleaner(spec, os.environ.get("REMBG_HOME"))


@functools.lru_cache(maxsize=4)
def _build_cleaner(spec: str, rembg_home: str | None) -> Cleaner:
    kind, arg = parse_cleaner(spec)
    if kind == "grabcut":
        return GrabCutCleaner()
    if kind == "rembg":
        return RembgCleaner(model=arg)
    session, path = onnx_session(spec)
    return RembgCleaner(model=session, model_path=path)


def keep_main_object(mask: Image.Image, min_share: float = 0.25) -> Image.Image:
    """Drop specks and stray objects: keep the largest blob and any blob at least ``min_share`` its size."""
    import cv2

    binary = (np.asarray(mask) >= 128).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= min_share * areas.max())
    return Image.fromarray(np.where(np.isin(labels, keep), np.asarray(mask), 0).astype(np.uint8), "L")


def cutout(
    image: Image.Image, mask: Image.Image, *, size: int | None = None, margin: float = 0.08
) -> Image.Image:
    """The masked product cropped to its bounding box, centred on a transparent square: the photo's own
    pixels (``size`` None), or scaled (Lanczos) to a ``size`` square."""
    rgba = image.convert("RGB").copy()
    rgba.putalpha(mask)
    box = mask.point(lambda v: 255 if v >= 128 else 0).getbbox()
    if box is None:
        raise CleaningError("mask is empty")
    product = rgba.crop(box)
    side = max(product.size)
    canvas_side = round(side * (1 + 2 * margin))
    canvas = Image.new("RGBA", (canvas_side, canvas_side), (0, 0, 0, 0))
    canvas.paste(product, ((canvas_side - product.width) // 2, (canvas_side - product.height) // 2))
    if size is None or canvas_side == size:
        return canvas
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def clean_photo(
    path: Path, cleaner: Cleaner, dest_dir: Path, *, size: int | None = None, max_side: int = MAX_CUTOUT_SIDE
) -> CleanedPhoto:
    """Clean one photo into ``dest_dir/<stem>.png`` (RGBA); raise CleaningError naming the file on failure.

    The cutout keeps the photo's own resolution (the cleaner's mask refined at it: ``matting``), scaled
    down only past ``max_side``; ``size`` scales it to a square of that side instead.
    """
    with Image.open(path) as raw:
        image = to_rgb(ImageOps.exif_transpose(raw))  # camera orientation, applied once
    if float(np.asarray(image.convert("L").resize((64, 64)), np.float32).std()) < 2.0:
        # Also spares GrabCut, whose colour models degenerate (and crawl) on a flat image.
        raise CleaningError(
            f"{path.name}: the photo is blank (one flat colour); upload a photo of the product"
        )
    try:
        mask = keep_main_object(cleaner.mask(image))
        mask = matting.refine_mask(image, mask, getattr(cleaner, "work_side", max(image.size)))
    except CleaningError as exc:
        raise CleaningError(f"{path.name}: {exc}") from exc
    coverage = float(np.asarray(mask, dtype=np.float32).mean() / 255.0)
    if not MIN_COVERAGE <= coverage <= MAX_COVERAGE:
        raise CleaningError(
            f"{path.name}: background removal with {cleaner.name} kept {coverage:.0%} of the photo; "
            f"expected a product covering {MIN_COVERAGE:.0%}-{MAX_COVERAGE:.0%}. Retake the photo with the "
            "whole product in view on a plain background"
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / f"{path.stem}.png"
    # Fast zlib level: a working file (cards are made from it), 4x faster to write than level 6, ~15% larger.
    product = cutout(image, mask, size=size)
    if size is None and product.width > max_side:
        product = product.resize((max_side, max_side), Image.Resampling.LANCZOS)
    product.save(out, compress_level=1)
    preview = dest_dir / f"{path.stem}.preview.png"  # for pages: a full-resolution cutout is megabytes
    product.copy().resize((min(PREVIEW_SIDE, product.width),) * 2, Image.Resampling.LANCZOS).save(preview)
    box = mask.point(lambda v: 255 if v >= 128 else 0).getbbox() or (0, 0, 0, 0)
    side = max(box[2] - box[0], box[3] - box[1])
    unfit = cutout_checks.photo_problem(mask, getattr(cleaner, "frame", 0.0))
    return CleanedPhoto(
        source=path.name,
        cutout_path=out,
        preview_path=preview,
        coverage=round(coverage, 4),
        product_side=side,
        not_for_composites=unfit,
        blur=photo_advice.blur(image, mask),
        product_share=round(side / max(image.size), 4),
        phash=photo_advice.perceptual_hash(image),
    )


def clean_edge_colours(cutout: Image.Image) -> Image.Image:
    """The cutout with the old background's colour taken out of its soft edge.

    A semi-transparent edge pixel of a photo mixes the product's colour with the background's (a green
    fringe from a green wall). Its foreground colour is estimated from the photo and the alpha matte
    (pymatting's multi-level foreground estimation); opaque and transparent pixels keep their values.
    """
    from pymatting import estimate_foreground_ml

    rgba = np.asarray(cutout.convert("RGBA"))
    alpha = rgba[..., 3]
    edge = (alpha > 0) & (alpha < 255)
    if not edge.any():
        return Image.fromarray(rgba, "RGBA")
    foreground = estimate_foreground_ml(rgba[..., :3] / 255.0, alpha / 255.0)
    out = rgba.copy()
    out[..., :3][edge] = np.clip(np.rint(foreground[edge] * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGBA")


def clean_photos(
    photos: list[PhotoRecord], cleaner: Cleaner, dest_dir: Path, *, workers: int | None = None
) -> tuple[list[CleanedPhoto], list[PhotoProblem]]:
    """Clean every photo; one that cannot be cleaned is a problem named by the seller's file name.

    Photos are cleaned ``workers`` at a time (default: the CPU count, at most 4): GrabCut and onnxruntime
    release the GIL, and the results are the same, in the same order, as one at a time.
    """

    def one(photo: PhotoRecord) -> CleanedPhoto | PhotoProblem:
        try:
            cutout = clean_photo(photo.local_path, cleaner, dest_dir)
        except (CleaningError, OSError) as exc:
            return PhotoProblem(file=photo.file, reason=str(exc).replace(photo.local_path.name, photo.file))
        except Exception as exc:  # any failure of one photo (OpenCV, rembg, onnxruntime) is that photo's
            reason = f"{photo.file}: background removal failed ({type(exc).__name__}); try another photo"
            return PhotoProblem(file=photo.file, reason=reason)
        return cutout.model_copy(update={"source": photo.file})

    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1 and len(photos) > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="clean") as pool:
            results = list(pool.map(one, photos))
    else:
        results = [one(photo) for photo in photos]
    cleaned = cutout_checks.judge_outlines([r for r in results if isinstance(r, CleanedPhoto)])
    return photo_advice.advise(cleaned), [r for r in results if isinstance(r, PhotoProblem)]


def require_usable_photos(
    sku: str, cutouts: list[CleanedPhoto], problems: list[PhotoProblem], *, uploaded: int, minimum: int
) -> None:
    """Raise :class:`SkuFailed` (with every photo problem) when fewer than ``minimum`` photos survived."""
    if len(cutouts) < minimum:
        raise SkuFailed(
            f"SKU {sku!r}: only {len(cutouts)} usable photo(s) of {uploaded}; at least {minimum} "
            "are needed. Problems: " + ("; ".join(p.reason for p in problems) or "none"),
            problems,
        )
