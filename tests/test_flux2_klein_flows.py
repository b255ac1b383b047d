"""A catalogue on the tiny FLUX.2 [klein] model through the flows, on the real S3 server: every SKU publishes,
composite cards keep the seller's pixels, and the published LoRA changes a plain diffusers klein pipeline."""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from product_studio.devkit.samples import upload_sample_catalogue
from product_studio.storage import Store

# 35 s on an idle 2-core CPU, 85 s when it is shared (a Prefect server, two SKUs trained and rendered,
# one more from the CLI).
pytestmark = pytest.mark.slow

CAT = "klein-2026-12"
SKUS = ["teapot-teal", "backpack-red"]


@pytest.fixture(scope="module")
def klein_catalogue(prefect_server, s3_server, tiny_klein_model, tiny_encoders, tmp_path_factory):
    """A 2-SKU catalogue, run once by the catalogue flow on the tiny klein model."""
    tag = uuid.uuid4().hex[:8]
    env = {
        **s3_server.env(),
        "PRODUCT_STUDIO_INCOMING": f"s3://in-{tag}/sellers",
        "PRODUCT_STUDIO_OUTPUT": f"s3://out-{tag}",
        "PRODUCT_STUDIO_BASE_MODEL": str(tiny_klein_model),
        "PRODUCT_STUDIO_DEVICE": "cpu",
        "PRODUCT_STUDIO_CLEANER": "grabcut",
        "PRODUCT_STUDIO_WORK_DIR": str(tmp_path_factory.mktemp("work")),
        "PRODUCT_STUDIO_TRAIN__STEPS": "4",
        "PRODUCT_STUDIO_TRAIN__RANK": "4",
        "PRODUCT_STUDIO_TRAIN__LEARNING_RATE": "0.01",
        "PRODUCT_STUDIO_TRAIN__PRIOR_IMAGES": "2",
        "PRODUCT_STUDIO_TRAIN__CHECKPOINT_EVERY": "2",
        "PRODUCT_STUDIO_TRAIN__VALIDATION_STEPS": "2",
        "PRODUCT_STUDIO_TRAIN__VALIDATION_PROMPTS": '["a photo of {product}"]',
        "PRODUCT_STUDIO_RENDER__STEPS": "2",
        "PRODUCT_STUDIO_RENDER__PRIOR_STEPS": "2",
        "PRODUCT_STUDIO_DEFAULT_SCENES": '["oak-table", "in-hand"]',  # a composite and a generated scene
        "PRODUCT_STUDIO_DEFAULT_MARKETPLACES": '["scene-portrait"]',
        "PRODUCT_STUDIO_SCORES__DINO_MODEL": str(tiny_encoders[0]),
        "PRODUCT_STUDIO_SCORES__CLIP_MODEL": str(tiny_encoders[1]),
        "PRODUCT_STUDIO_SCORES__MIN_IDENTITY": "-1",  # the tiny encoders' numbers mean nothing
        "PRODUCT_STUDIO_SCORES__MIN_PROMPT": "-1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        incoming, output = Store(env["PRODUCT_STUDIO_INCOMING"]), Store(env["PRODUCT_STUDIO_OUTPUT"])
        incoming.ensure_bucket()
        output.ensure_bucket()
        upload_sample_catalogue(incoming, CAT, photos=3, size=512, with_corrupt_photo=False, products=SKUS)

        from flows.catalogue import catalogue_flow

        outcomes = {o.sku: o for o in catalogue_flow(CAT)}
        yield outcomes, output, incoming


def test_every_sku_of_a_klein_catalogue_publishes_with_the_family_and_the_lora(klein_catalogue):
    outcomes, output, _ = klein_catalogue
    assert {s: o.status for s, o in outcomes.items()} == dict.fromkeys(SKUS, "published")
    for sku in SKUS:
        manifest = json.loads(output.read(f"{CAT}/{sku}/manifest.json"))
        assert manifest["base_model"]["family"] == "flux2-klein"
        assert manifest["base_model"]["license"] == "apache-2.0"  # from the model card
        lora = manifest["lora"]["file"]
        assert lora.endswith("/pytorch_lora_weights.safetensors") and lora in manifest["files"]
        assert (manifest["lora"]["rank"], manifest["lora"]["steps"]) == (4, 4)
        training = manifest["lora"]["training"]
        assert len(training["validation"]) == 1 and training["loss_curve"] in manifest["files"]
        published = set(output.list(f"{CAT}/{sku}/"))
        assert all(f"{CAT}/{sku}/{name}" in published for name in manifest["files"])
        modes = {c["render"]["mode"] for c in manifest["cards"] if c["kind"] == "scene"}
        assert modes == {"composite", "generate"}
        for card in manifest["cards"]:
            w, h = card["render"]["size"]
            assert w % 16 == 0 and h % 16 == 0  # klein's latent grid
    assert not output.list("_checkpoints/")  # the runs' checkpoints are cleared


def test_klein_composite_cards_keep_the_sellers_pixels(klein_catalogue, sellers_product_kept):
    _, output, _ = klein_catalogue
    checked = 0
    for sku in SKUS:
        manifest = json.loads(output.read(f"{CAT}/{sku}/manifest.json"))
        for card in manifest["cards"]:
            if card["kind"] != "scene" or card["render"]["mode"] != "composite":
                continue
            image = Image.open(io.BytesIO(output.read(f"{CAT}/{sku}/{card['file']}")))
            cutout = Image.open(io.BytesIO(output.read(f"{CAT}/{sku}/{card['product']['cutout']}")))
            light = card["render"]["light"]["mode"]
            sellers_product_kept(image, cutout, tuple(card["product"]["box"]), light)
            checked += 1
    assert checked == len(SKUS)


def test_the_published_klein_lora_changes_plain_diffusers_output(klein_catalogue, tiny_klein_model, tmp_path):
    from diffusers import Flux2KleinPipeline

    _, output, _ = klein_catalogue
    manifest = json.loads(output.read(f"{CAT}/{SKUS[0]}/manifest.json"))
    (tmp_path / "pytorch_lora_weights.safetensors").write_bytes(
        output.read(f"{CAT}/{SKUS[0]}/{manifest['lora']['file']}")
    )
    pipe = Flux2KleinPipeline.from_pretrained(str(tiny_klein_model))
    pipe.set_progress_bar_config(disable=True)

    def render() -> np.ndarray:
        return pipe(
            prompt=manifest["instance_prompt"],
            height=64,
            width=64,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images[0]

    before = render()
    pipe.load_lora_weights(str(tmp_path))
    assert np.abs(render() - before).mean() > 1e-4


def test_a_whole_klein_sku_from_the_cli_under_the_person_preset(klein_catalogue, capsys):
    """One SKU by ``product-studio sku``; its product.json names the person preset, whose text-encoder
    training klein leaves out (it trains the transformer only) instead of failing the SKU."""
    from flows.cli import main

    _, output, incoming = klein_catalogue
    upload_sample_catalogue(
        incoming, "klein-one", photos=3, size=512, with_corrupt_photo=False, products=["vase-ochre"]
    )
    spec = json.loads(incoming.read("klein-one/vase-ochre/product.json"))
    incoming.write("klein-one/vase-ochre/product.json", json.dumps({**spec, "preset": "person"}).encode())
    assert main(["sku", "klein-one", "vase-ochre"]) == 0
    assert "published klein-one/vase-ochre" in capsys.readouterr().out
    manifest = json.loads(output.read("klein-one/vase-ochre/manifest.json"))
    settings = manifest["lora"]["settings"]
    assert manifest["base_model"]["family"] == "flux2-klein" and settings["preset"] == "person"
    assert (settings["rank"], settings["train_text_encoder"]) == (4, False)  # explicit rank wins
    assert manifest["lora"]["file"] in manifest["files"]


def test_klein_zero_shot_candidates_compete_with_the_loras(klein_catalogue):
    """Issue 37: on klein the preview renders each generate scene from the SKU's cutouts alone (reference
    images, no LoRA); after training the LoRA's candidates join them under one ranking, and each record says
    what conditioned it."""
    _, output, _ = klein_catalogue
    for sku in SKUS:
        manifest = json.loads(output.read(f"{CAT}/{sku}/manifest.json"))
        generated = [c for c in manifest["cards"] if c["render"]["mode"] == "generate"]
        kinds = sorted(tuple(c["render"]["conditioning"]) for c in generated)
        assert kinds == [("lora", "reference")] * 2 + [("reference",)] * 2, kinds
        assert all(c["candidate"]["of"] == 4 for c in generated)
        assert sorted(c["candidate"]["rank"] for c in generated) == [1, 2, 3, 4]
        (winner,) = [c for c in generated if c["status"] == "published"]
        assert winner["file"] in manifest["files"]
        zero_shot = [c for c in generated if c["render"]["conditioning"] == ["reference"]]
        assert all(manifest["identifier"] not in c["prompt"] for c in zero_shot)  # no LoRA: the plain noun
        names = [c["file"] for c in zero_shot if c["file"]]
        assert all(name.split("/")[-1].startswith("social-portrait--in-hand--ref") for name in names)
        # A zero-shot card that lost is no longer named, nor left in the run's folder.
        listed = set(output.list(f"{CAT}/{sku}/runs/{manifest['run']}/cards/"))
        assert {k.rsplit("/", 1)[1] for k in listed} == {
            c["file"].rsplit("/", 1)[1] for c in manifest["cards"] if c["file"]
        }


def test_with_train_when_needed_a_klein_sku_of_composites_only_does_not_train(klein_catalogue, monkeypatch):
    """Issue 37: TRAIN__WHEN=needed on klein and only composite scenes: no class images, no training; the
    final manifest has no LoRA and says why."""
    from flows.cli import main

    _, output, incoming = klein_catalogue
    sku = "composites-only"
    spec = {"class_noun": "teapot", "scenes": ["oak-table"]}
    incoming.write(f"{CAT}/{sku}/product.json", json.dumps(spec).encode())
    for key in incoming.list(f"{CAT}/teapot-teal/photos/"):
        incoming.write(f"{CAT}/{sku}/photos/{key.rsplit('/', 1)[1]}", incoming.read(key))
    monkeypatch.setenv("PRODUCT_STUDIO_TRAIN__WHEN", "needed")
    assert main(["sku", CAT, sku]) == 0
    manifest = json.loads(output.read(f"{CAT}/{sku}/manifest.json"))
    assert manifest["stage"] == "final" and manifest["lora"] is None and manifest["content_key"]
    assert manifest["training_decision"] == "no scene needs the product's LoRA (TRAIN__WHEN=needed)"
    assert "train" not in manifest["timings_s"] and "priors" not in manifest["timings_s"]
    assert {c["render"]["mode"] for c in manifest["cards"]} == {"composite"}
    assert not output.list(f"{CAT}/{sku}/runs/{manifest['run']}/lora/")
    outcome = json.loads(output.read(f"{CAT}/{sku}/outcome.json"))
    assert outcome["training"] == "not needed" and outcome["training_s"] is None
