"""Earlier runs' results, reused when their inputs are unchanged (stage by stage).

The SKU's live manifest (``manifest.read_published``) says what an earlier run made and from what:

- :func:`unchanged` -- why the whole SKU has nothing to do (same content key), or None.
- :func:`reuse_cutouts` -- the published cutouts, when every photo and the cleaner are the same.
- :func:`reuse_training` -- the published LoRA and its training record, when the training key matches (only
  the scenes or formats changed, or a seller asked for another try of a scene).
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

from product_studio.layout import TRAINING, TRAINING_SUMMARY, sku_key
from product_studio.manifest import Manifest
from product_studio.records import CleanedPhoto, PhotoRecord, TrainResult
from product_studio.storage import Store


def _download(output: Store, manifest: Manifest, key: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(output.read(sku_key(manifest.catalogue_id, manifest.sku, key)))
    return dest


def reuse_cutouts(
    output: Store, manifest: Manifest | None, photos: list[PhotoRecord], cleaner: str, dest: Path
) -> list[CleanedPhoto] | None:
    """The published cutouts of exactly these photos made by this cleaner, downloaded; else None."""
    if manifest is None or manifest.cleaner != cleaner:
        return None
    before = {(p.file, p.sha256) for p in manifest.inputs.photos}
    refused = {p.file for p in manifest.inputs.problems}
    if {(p.file, p.sha256) for p in photos} != before or refused & {p.file for p in photos}:
        return None
    return published_cutouts(output, manifest, dest)


def published_cutouts(output: Store, manifest: Manifest, dest: Path) -> list[CleanedPhoto]:
    """The cutouts a published run used, downloaded to ``dest``."""
    return [
        CleanedPhoto(
            source=c.source,
            cutout_path=_download(output, manifest, c.file, dest / posixpath.basename(c.file)),
            coverage=c.coverage,
            not_for_composites=c.not_for_composites,
            outline_match=c.outline_match,
            blur=c.blur,
            product_share=c.product_share,
            advice=c.advice,
            preview_path=(
                _download(output, manifest, c.preview, dest / posixpath.basename(c.preview))
                if c.preview
                else None
            ),
        )
        for c in manifest.cutouts
    ]


def reuse_training(output: Store, manifest: Manifest | None, key: str, dest: Path) -> TrainResult | None:
    """The published LoRA (and its loss curve, validation renders, training.json) when ``key`` matches."""
    if manifest is None or manifest.lora is None or manifest.training_key != key:
        return None
    lora, training = manifest.lora, manifest.lora.training
    here = f"{manifest.run_prefix}/"

    def local(key: str) -> Path:
        rel = key.removeprefix(here).split("/", 1)[1]  # lora/x or training/x -> x (one folder, as trained)
        return _download(output, manifest, key, dest / rel)

    lora_file = local(lora.file)
    summary_key = f"{here}{TRAINING}/{TRAINING_SUMMARY}"
    losses: list[float] = []
    if summary_key in manifest.files:
        summary = json.loads(local(summary_key).read_text())
        losses = [float(v) for v in summary.get("losses", [])]
    return TrainResult(
        lora_file=lora_file,
        steps=lora.steps,
        resolution=lora.resolution,
        rank=lora.rank,
        alpha=lora.alpha,
        losses=losses or [lora.final_loss],
        kohya_file=local(training.kohya_file) if training.kohya_file else None,
        loss_curve=local(training.loss_curve) if training.loss_curve else None,
        validation=[local(v) for v in training.validation],
        resumed_from=lora.steps,
        timings={"reused": 1.0},
    )


def unchanged(published: Manifest | None, key: str, force: bool) -> str | None:
    """Why an SKU has nothing to do (its published run has the same content key), or None."""
    if force or published is None or published.content_key != key:
        return None
    return f"unchanged since run {published.run} (same content key); --force makes it again"
