"""The output contract, built by the library alone (no Prefect): records in, a typed manifest out."""

from __future__ import annotations

from product_studio.identifiers import ProductPrompts
from product_studio.ingest import ProductSpec
from product_studio.manifest import SCHEMA, Manifest, build_manifest
from product_studio.records import (
    CardRecord,
    CleanedPhoto,
    Compliance,
    PhotoProblem,
    PhotoRecord,
    ProductPlacement,
    RenderInfo,
)
from product_studio.settings import Settings
from product_studio.training import TrainConfig, TrainResult


def test_build_manifest_names_every_file_it_describes(tmp_path, monkeypatch):
    monkeypatch.setenv("PRODUCT_STUDIO_TRAIN__STEPS", "4")
    lora_dir = tmp_path / "lora"
    (lora_dir / "validation").mkdir(parents=True)
    for name in ("pytorch_lora_weights.safetensors", "loss.png", "training.json", "validation/final-0.png"):
        (lora_dir / name).write_bytes(b"x")
    trained = TrainResult(
        lora_file=lora_dir / "pytorch_lora_weights.safetensors",
        steps=4,
        resolution=64,
        rank=8,
        alpha=8,
        losses=[0.5, 0.25],
        loss_curve=lora_dir / "loss.png",
        validation=[lora_dir / "validation/final-0.png"],
    )
    cutout = CleanedPhoto(source="front.jpg", cutout_path=tmp_path / "front.png", coverage=0.3)
    card = CardRecord(
        file="cards/main-white.jpg",
        format="main-white",
        preset="main-white",
        width=1600,
        height=1600,
        kind="cutout",
        render=RenderInfo(mode="cutout"),
        product=ProductPlacement(cutout="cutouts/front.png", box=(10, 20, 1590, 1580)),
        compliance=Compliance(format="main-white", passed=True, checks={"size": True}),
        scores={"sharpness": 0.5},
        local_path=tmp_path / "main-white.jpg",
    )
    photo = PhotoRecord(
        file="front.jpg", sha256="0" * 64, bytes=10, format="JPEG", width=300, height=300, local_path=tmp_path
    )
    settings = Settings().for_product("quick")
    upscaler = tmp_path / "upscaler"
    upscaler.mkdir()
    (upscaler / "README.md").write_text("\ufeff---\nlicense: apache-2.0\n---\n")
    manifest, files = build_manifest(
        catalogue_id="cat",
        sku="mug-1",
        run="r1",
        spec=ProductSpec(class_noun="mug", title="Mug", preset="quick"),
        base_model=settings.base_model,
        cleaner=settings.cleaner,
        train=settings.train,
        scores=settings.scores,
        prompts=ProductPrompts("olis", "mug"),
        photos=[photo],
        problems=[PhotoProblem(file="x.jpg", reason="corrupt")],
        cutouts=[cutout],
        trained=trained,
        cards=[card],
        timings={"train": 1.5},
        pixel_models={"base": settings.base_model, "upscaler": str(upscaler)},
    )
    assert manifest.models["upscaler"].license == "apache-2.0"  # each pixel model's licence (issue 34 #3)
    assert manifest.models["upscaler"].id == str(upscaler) and set(manifest.models) == {"upscaler"}
    assert set(files) == {
        "runs/r1/cards/main-white.jpg",
        "runs/r1/cutouts/front.png",
        "runs/r1/lora/pytorch_lora_weights.safetensors",
        "runs/r1/training/loss.png",
        "runs/r1/training/training.json",
        "runs/r1/training/validation/final-0.png",
    }
    data = manifest.model_dump(mode="json", by_alias=True)
    # Every file the manifest names is one it publishes; local paths never leak into it.
    named = {
        data["lora"]["file"],
        data["lora"]["training"]["loss_curve"],
        *data["lora"]["training"]["validation"],
    }
    named |= {c["file"] for c in data["cards"]} | {c["file"] for c in data["cutouts"]}
    assert named <= set(files) and "local_path" not in str(data)
    assert data["schema"] == SCHEMA and data["instance_prompt"] == "a photo of olis mug"
    assert (data["lora"]["settings"]["preset"], data["lora"]["settings"]["steps"], data["lora"]["rank"]) == (
        "quick",
        4,
        8,
    )
    assert data["lora"]["final_loss"] == 0.375 and data["cards"][0]["format"] == "main-white"
    assert data["cards"][0]["product"] == {"cutout": "runs/r1/cutouts/front.png", "box": [10, 20, 1590, 1580]}
    render = data["cards"][0]["render"]
    assert render == {
        "mode": "cutout",
        "size": None,
        "upscaler": "none",
        "inpainter": None,
        "reference": None,
        "light": None,
        "shadow": None,
        "conditioning": None,
    }
    assert Manifest.model_validate_json(manifest.to_json()).model_dump() == manifest.model_dump()


def test_an_sku_whose_every_scene_is_rejected_says_why(tmp_path):
    from product_studio.manifest import build_manifest as build
    from product_studio.records import CandidateInfo

    def card(status, reason=None, rank=1):
        return CardRecord(
            file=None if status == "rejected" else "cards/x.jpg",
            format="ebay-square",
            preset="ebay-square",
            width=1600,
            height=1600,
            kind="scene",
            render=RenderInfo(mode="composite", size=(64, 64), upscaler="lanczos"),
            compliance=Compliance(format="ebay-square", passed=True, checks={}),
            status=status,
            reason=reason,
            candidate=CandidateInfo(index=rank - 1, of=2, rank=rank),
            scores={},
        )

    lora = tmp_path / "pytorch_lora_weights.safetensors"
    lora.write_bytes(b"x")
    trained = TrainResult(lora_file=lora, steps=1, resolution=64, rank=4, alpha=4, loss_curve=None)
    common = {
        "catalogue_id": "cat",
        "sku": "mug-1",
        "run": "r1",
        "spec": ProductSpec(class_noun="mug"),
        "base_model": Settings().base_model,
        "cleaner": "grabcut",
        "train": TrainConfig(),
        "scores": Settings().scores,
        "prompts": ProductPrompts("olis", "mug"),
        "photos": [],
        "problems": [],
        "cutouts": [],
        "trained": trained,
        "timings": {},
    }
    rejected = [
        card("rejected", "identity_dino 0.300 < min_identity 0.5"),
        card("rejected", "ranked 2 of 2", 2),
    ]
    manifest, files = build(cards=rejected, **common)
    (note,) = manifest.notes
    assert note.startswith("No scene card looked enough like your product") and "main image" in note
    assert "identity_dino" not in note  # the seller's words; the numbers stay in the card records
    assert all(c.file is None for c in manifest.cards) and not [k for k in files if "cards/" in k]
    manifest, _ = build(cards=[card("published"), card("rejected", "ranked 2 of 2", 2)], **common)
    assert manifest.notes == []
