"""FLUX.2 [klein]: the tiny seeded model, family recognition, identifiers, rendering and LoRA training."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from product_studio.cards import formats
from product_studio.identifiers import ProductPrompts
from product_studio.rendering import renderer, scenes


def _render(pipe, prompt: str = "a photo of a teapot", size: int = 64) -> np.ndarray:
    return pipe(
        prompt=prompt,
        height=size,
        width=size,
        num_inference_steps=2,
        guidance_scale=1.0,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="np",
    ).images[0]


def test_tiny_klein_loads_offline_in_plain_diffusers_and_renders(tiny_klein_model):
    from diffusers import Flux2KleinPipeline

    index = json.loads((tiny_klein_model / "model_index.json").read_text())
    assert index["_class_name"] == "Flux2KleinPipeline"
    assert index["tokenizer"] == ["transformers", "Qwen2Tokenizer"]
    assert index["text_encoder"] == ["transformers", "Qwen3ForCausalLM"]
    pipe = Flux2KleinPipeline.from_pretrained(str(tiny_klein_model))
    pipe.set_progress_bar_config(disable=True)
    # The pipeline's own chat formatting and default encoder layers (9, 18, 27) work unchanged.
    chat = pipe.tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert chat == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    started = time.perf_counter()
    image = _render(pipe)
    assert time.perf_counter() - started < 20
    assert image.shape == (64, 64, 3)
    assert np.isfinite(image).all() and image.std() > 0.01
    np.testing.assert_array_equal(_render(pipe), image)  # seeded


def test_tiny_klein_is_seeded(tiny_klein_model, tmp_path):
    from flows.cli import main

    assert main(["tiny-model", str(tmp_path / "again"), "--family", "flux2-klein"]) == 0
    for part in ("transformer", "vae", "text_encoder"):
        (first,) = (tiny_klein_model / part).glob("*.safetensors")
        assert first.read_bytes() == (tmp_path / "again" / part / first.name).read_bytes()


def test_words_are_single_space_prefixed_tokens(tiny_klein_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_klein_model), subfolder="tokenizer")
    assert tokenizer.tokenize("a photo of olis teapot") == ["a", "Ġphoto", "Ġof", "Ġolis", "Ġteapot"]
    vocab = tokenizer.get_vocab()
    assert vocab["Ġthe"] < vocab["Ġteapot"] < vocab["Ġolis"]  # frequent words first, as in Qwen's BPE


# --- family recognition and rendering -------------------------------------------------------------------

REPO_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
PROMPTS = ProductPrompts("olis", "teapot")


@pytest.fixture
def klein_pipe(tiny_klein_model):
    from product_studio.models import load_pipeline

    return load_pipeline(str(tiny_klein_model))


def test_the_family_is_read_from_the_folder(tiny_klein_model, tiny_model, tiny_sdxl_model, klein_pipe):
    from product_studio.models import family_of, model_family, native_resolution

    assert [family_of(str(p)) for p in (tiny_model, tiny_sdxl_model, tiny_klein_model)] == [
        "sd",
        "sdxl",
        "flux2-klein",
    ]
    assert family_of("acme/not-in-the-cache") is None  # a hub id is looked up in the local cache only
    assert type(klein_pipe).__name__ == "Flux2KleinPipeline" and model_family(klein_pipe) == "flux2-klein"
    assert native_resolution(klein_pipe) == 64


def test_the_manifest_names_the_base_models_family(tiny_klein_model):
    from product_studio.manifest import BaseModelRef
    from product_studio.models import family_of, model_identity

    ref = BaseModelRef(**model_identity(str(tiny_klein_model)), family=family_of(str(tiny_klein_model)))
    assert ref.model_dump()["family"] == "flux2-klein"
    # Manifests written before families were recorded still read.
    assert BaseModelRef.model_validate({"id": "x", "revision": "main"}).family is None


def test_klein_renders_at_multiples_of_16_at_each_cards_aspect(klein_pipe):
    for f in formats.FORMATS.values():
        w, h = renderer.render_size(klein_pipe, f.width, f.height)
        assert w % 16 == 0 and h % 16 == 0
        assert abs(np.log(w / h / f.aspect)) < 0.35  # 64 px native: 16 px steps are coarse


def test_klein_generate_and_composite_keep_the_sellers_pixels(
    klein_pipe, tmp_path, sellers_pixels_difference
):
    library = scenes.load_library(REPO_TEMPLATES)
    cutout = _drawn_cutout()
    generated = renderer.generate_scene(klein_pipe, library["in-hand"], PROMPTS, (1200, 1600), steps=2)[0]
    assert generated.image.size == (1200, 1600) and generated.render_size == (48, 80)
    template = library["marble-counter"].model_copy(update={"light": "keep"})
    assert template.mode == "composite"
    (render,) = renderer.composite_scene(klein_pipe, template, PROMPTS, cutout, (1200, 1600), steps=2)
    assert render.image.size == (1200, 1600) and render.placed is not None
    path = tmp_path / "card.jpg"
    render.image.save(path, quality=95)
    assert sellers_pixels_difference(path, cutout, render.placed.box, min_inner=0.3) <= 4.0


def test_klein_composites_show_the_inpainter_the_sellers_cutout_as_reference(klein_pipe, monkeypatch):
    template = scenes.load_library(REPO_TEMPLATES)["marble-counter"]
    cutout = _drawn_cutout()
    reference = renderer.reference_image(cutout)
    # The cutout's opaque box centred on a white square of one size for every product (a compiled worker
    # sees one sequence length), never scaled up.
    side = renderer.REFERENCE_SIDE
    assert reference.size == (side, side)
    px = np.asarray(reference, dtype=float)
    assert px[0, 0].tolist() == [255, 255, 255]
    assert np.abs(px[side // 2 - 80, side // 2] - [22, 128, 122]).max() < 8  # teal body
    wide = Image.new("RGBA", (300, 100), (200, 30, 30, 255))
    small = np.asarray(renderer.reference_image(wide, side=48), dtype=float)
    assert small.shape == (48, 48, 3)
    assert small[:, :, 1].min() < 60 and small[0, 0].tolist() == [255, 255, 255]  # fitted in, white above
    tiny = np.asarray(renderer.reference_image(Image.new("RGBA", (20, 10), (200, 30, 30, 255))))
    assert (np.abs(tiny.astype(float) - [200, 30, 30]).max(axis=2) < 1).sum() == 20 * 10  # 1:1, not enlarged
    with pytest.raises(ValueError, match="fully transparent"):
        renderer.reference_image(Image.new("RGBA", (64, 64)))

    def background(ref) -> np.ndarray:
        monkeypatch.setattr(renderer, "reference_image", lambda _cutout: ref)
        (render,) = renderer.composite_scene(klein_pipe, template, PROMPTS, cutout, (640, 640), steps=2)
        assert render.reference_size == ref.size
        return np.asarray(render.image, dtype=float)[:40, :40]  # a corner: generated surroundings only

    # What the reference shows reaches the model: another reference, other surroundings (a tiny random
    # model moves them little, but renders are deterministic, so any change is the reference's).
    seller = background(reference)
    assert np.array_equal(seller, background(reference.copy()))
    assert np.abs(seller - background(Image.new("RGB", reference.size, "black"))).max() > 0


def test_a_negative_prompt_reaches_klein_as_embeddings(klein_pipe):
    args = renderer.text_args(klein_pipe, "a photo of olis teapot", "blurry", 2, guidance_scale=4.0)
    assert set(args) == {"prompt", "negative_prompt_embeds"} and args["negative_prompt_embeds"].shape[0] == 2
    # Without classifier-free guidance klein never reads it: nothing is encoded.
    assert set(renderer.text_args(klein_pipe, "x", "blurry", 1, guidance_scale=1.0)) == {"prompt"}


def _drawn_cutout() -> Image.Image:
    big = Image.new("RGBA", (1200, 1200), (0, 0, 0, 0))
    d = ImageDraw.Draw(big)
    d.ellipse((240, 300, 960, 1020), fill=(22, 128, 122, 255))
    d.rectangle((380, 600, 820, 660), fill=(240, 200, 60, 255))
    return big.resize((400, 400), Image.Resampling.LANCZOS)


def test_klein_identifiers_are_rare_single_qwen_tokens_after_a_space(tiny_klein_model):
    from product_studio.identifiers import choose_identifier, rare_token_candidates
    from product_studio.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_klein_model))
    pool = rare_token_candidates(tokenizer)
    assert len(pool) == 1000
    for word in pool[:50]:
        assert len(word) in (3, 4) and word.isalpha()
        assert tokenizer.tokenize(f"a photo of {word} teapot")[3] == "\u0120" + word
    identifier = choose_identifier(tokenizer, "sku-1")
    assert identifier in pool and identifier == choose_identifier(tokenizer, "sku-1")
    assert choose_identifier(tokenizer, "sku-1", {identifier}) != identifier


def test_class_images_come_from_the_klein_base_model(klein_pipe, tiny_klein_model):
    from product_studio.models import model_identity
    from product_studio.training.priors import generate_class_images, prior_spec

    spec = prior_spec(
        klein_pipe, model_identity(str(tiny_klein_model)), "a photo of a teapot", resolution=64, steps=2
    )
    images = generate_class_images(klein_pipe, spec, [0, 1])
    assert [im.size for im in images] == [(64, 64)] * 2
    assert np.asarray(images[0]).tolist() != np.asarray(images[1]).tolist()  # seed + i each
    assert (
        np.asarray(generate_class_images(klein_pipe, spec, [1])[0]).tolist() == np.asarray(images[1]).tolist()
    )


# --- training: train_lora on klein -------------------------------------------------------------------------


def _photos(n: int, colour: tuple[int, int, int]) -> list[Image.Image]:
    out = []
    for i in range(n):
        im = Image.new("RGB", (64, 64), (240, 240, 240))
        ImageDraw.Draw(im).ellipse((12 + i, 12, 52, 52 - i), fill=colour)
        out.append(im)
    return out


def _train(pipe, out_dir: Path, *, classes: int = 2, checkpoints=None, progress=None, **settings):
    from product_studio.training import TrainConfig, train_lora

    config = TrainConfig(
        **{"steps": 2, "rank": 4, "prior_images": classes, "validation_prompts": [], **settings}
    )
    return train_lora(
        pipe,
        _photos(3, (200, 30, 30)),
        _photos(classes, (30, 30, 200)),
        prompts=PROMPTS,
        config=config,
        out_dir=out_dir,
        checkpoints=checkpoints,
        progress=progress,
    )


@pytest.fixture
def klein_run(klein_pipe):
    """A prepared klein run (LoRA added) for looking inside one step: (pipe, make run for a config)."""
    import contextlib

    from product_studio.training.adapters import trainable_lora
    from product_studio.training.data import TrainingImage
    from product_studio.training.loop import prepare_run

    with contextlib.ExitStack() as stack:

        def make(config, photos=None, classes=()):
            lora = stack.enter_context(trainable_lora(klein_pipe, config))
            photos = photos or [TrainingImage(im) for im in _photos(3, (200, 30, 30))]
            return prepare_run(klein_pipe, lora, photos, list(classes), PROMPTS, config, 64)

        torch.manual_seed(0)
        yield make
    assert not any("lora" in n for n, _ in klein_pipe.transformer.named_parameters())


def test_the_class_half_sees_class_prompts_and_changes_the_gradient(klein_pipe, klein_run):
    import contextlib
    import dataclasses

    from product_studio.training import TrainConfig
    from product_studio.training.klein import encode_prompts

    config = TrainConfig(steps=1, rank=4, batch_size=2, prior_images=2, prior_loss_weight=1.0)
    seen: list[torch.Tensor] = []

    def grads(objective) -> torch.Tensor:
        objective.loss(torch.Generator().manual_seed(1), contextlib.nullcontext()).backward()
        flat = torch.cat([p.grad.flatten() for p in run.params])
        run.optimizer.zero_grad(set_to_none=True)
        return flat

    run = klein_run(config, classes=_photos(2, (30, 30, 200)))
    hook = klein_pipe.transformer.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["encoder_hidden_states"].detach().clone()), with_kwargs=True
    )
    try:
        with_prior = grads(run.objective)
        without = config.with_options(prior_loss_weight=0.0)
        instance_only = grads(dataclasses.replace(run.objective, config=without))
    finally:
        hook.remove()
    assert not torch.allclose(with_prior, instance_only)  # the class half's loss term reaches the LoRA
    instance, class_ = (
        encode_prompts(klein_pipe, [t])[0][0] for t in (PROMPTS.instance, PROMPTS.class_prompt)
    )
    rows = seen[0]  # (instance x 2, class x 2): the batch the transformer saw
    assert rows.shape[0] == 4 and not torch.equal(instance, class_)
    for row, want in zip(rows, [instance, instance, class_, class_], strict=True):
        torch.testing.assert_close(row, want)


# A LoRA key the klein loader cannot read is dropped with only this warning: make it fail the test.
@pytest.mark.filterwarnings("error:While injecting the PEFT adapters")
def test_train_lora_on_klein_writes_what_sd_does_and_plain_diffusers_loads_it(
    klein_pipe, tiny_klein_model, tmp_path
):
    from diffusers import Flux2KleinPipeline
    from safetensors import safe_open

    shared_before = _render(klein_pipe, PROMPTS.instance)
    result = _train(
        klein_pipe,
        tmp_path,
        steps=8,
        learning_rate=5e-2,
        validation_every=4,
        validation_steps=2,
        validation_prompts=["a photo of {product}"],
    )
    assert result.lora_file == tmp_path / "pytorch_lora_weights.safetensors" and len(result.losses) == 8
    assert result.loss_curve == tmp_path / "loss.png" and result.loss_curve.is_file()
    assert [p.name for p in result.validation] == ["step-000004-0.png", "final-0.png"]
    summary = json.loads((tmp_path / "training.json").read_text())
    assert summary["metadata"]["family"] == "flux2-klein" and len(summary["losses"]) == 8
    assert {"prepare_s", "loop_s", "step_ms", "validation_s", "total_s"} <= set(result.timings)
    np.testing.assert_array_equal(_render(klein_pipe, PROMPTS.instance), shared_before)  # pipeline restored
    with safe_open(str(result.lora_file), framework="pt") as f:
        keys = set(f.keys())
        assert f.metadata()["product_studio.family"] == "flux2-klein"
    assert "transformer.transformer_blocks.0.attn.to_k.lora_A.weight" in keys
    assert "transformer.single_transformer_blocks.0.attn.to_qkv_mlp_proj.lora_B.weight" in keys
    plain = Flux2KleinPipeline.from_pretrained(str(tiny_klein_model))
    plain.set_progress_bar_config(disable=True)
    before = _render(plain, PROMPTS.instance)
    plain.load_lora_weights(str(tmp_path))
    assert np.abs(_render(plain, PROMPTS.instance) - before).mean() > 1e-3


def test_an_interrupted_klein_run_resumes_from_its_checkpoint_to_the_same_result(klein_pipe, tmp_path):
    from product_studio.storage import LocalStore
    from product_studio.training import Checkpoints

    class Preempted(Exception):
        pass

    def preempt_at_3(step: int, loss: float) -> None:
        if step == 3:
            raise Preempted

    settings = {"steps": 4, "checkpoint_every": 2, "learning_rate": 1e-2}
    whole = _train(klein_pipe, tmp_path / "whole", **settings)
    store = LocalStore(tmp_path / "checkpoints")
    ckpt = Checkpoints(store, "cat/sku")
    with pytest.raises(Preempted):
        _train(klein_pipe, tmp_path / "broken", checkpoints=ckpt, progress=preempt_at_3, **settings)
    assert any(k.endswith("step-000002/state.pt") for k in store.list("cat/sku/"))
    resumed = _train(klein_pipe, tmp_path / "resumed", checkpoints=ckpt, **settings)
    assert resumed.resumed_from == 2
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-4, atol=1e-6)
    a, b = (_lora_tensors(r.lora_file) for r in (whole, resumed))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    assert store.list("cat/sku/") == []  # a finished run clears its checkpoints


def _lora_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_the_cutouts_alpha_weights_the_klein_instance_loss(klein_pipe, klein_run):
    import contextlib
    import dataclasses

    from product_studio.training import TrainConfig
    from product_studio.training.data import TrainingImage
    from product_studio.training.klein import prepare_klein

    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)  # the product is the left half
    photos = [TrainingImage(im, mask) for im in _photos(3, (200, 30, 30))]
    config = TrainConfig(steps=1, rank=4, prior_images=0, background_weight=0.1)
    masked = klein_run(config, photos).objective
    plain = dataclasses.replace(masked, weights=None)
    losses = [
        float(run.loss(torch.Generator().manual_seed(2), contextlib.nullcontext()).detach())
        for run in (masked, plain)
    ]
    assert masked.weights.shape == (3, 1, 4, 4)  # one weight per latent patch
    torch.testing.assert_close(masked.weights[0, 0, :, :2], torch.ones(4, 2))
    torch.testing.assert_close(masked.weights[0, 0, :, 2:], torch.full((4, 2), 0.1))
    assert losses[0] != losses[1]
    unmasked = prepare_klein(
        klein_pipe, photos, [], PROMPTS, config.with_options(masked_loss=False), 64, "cpu"
    )
    assert unmasked.weights is None


def test_random_flip_on_klein_encodes_the_mirrored_images_once_and_picks_them(klein_pipe, tmp_path):
    from PIL import ImageOps

    from product_studio.training import TrainConfig
    from product_studio.training.data import TrainingImage
    from product_studio.training.klein import encode_latents, prepare_klein

    photos = [TrainingImage(im, im.convert("L")) for im in _photos(3, (200, 30, 30))]
    config = TrainConfig(steps=1, rank=4, prior_images=2, random_flip=True, batch_size=8)
    objective = prepare_klein(klein_pipe, photos, _photos(2, (30, 30, 200)), PROMPTS, config, 64, "cpu")
    assert (len(objective.instances), len(objective.weights), len(objective.classes)) == (6, 6, 4)
    mirrored = encode_latents(klein_pipe, [ImageOps.mirror(photos[1].image)], 64, "cpu")[0]
    torch.testing.assert_close(objective.instances[4], mirrored, atol=1e-4, rtol=1e-3)  # batched: not bitwise
    torch.testing.assert_close(objective.weights[4], objective.weights[1].flip(-1))
    latents, weights = objective.batch(torch.Generator().manual_seed(0))
    assert latents.shape[0] == 16 and weights.shape[0] == 8
    picked = {i for row in latents[:8] for i in range(6) if torch.equal(row, objective.instances[i])}
    assert picked & {0, 1, 2} and picked & {3, 4, 5}  # originals and mirrored copies
    assert np.isfinite(_train(klein_pipe, tmp_path, steps=1, random_flip=True).losses).all()


def test_klein_training_is_seeded_and_refuses_what_it_cannot_do_by_name(klein_pipe, tmp_path):
    from product_studio.training import TrainingError

    runs = [_train(klein_pipe, tmp_path / str(n)).losses for n in range(2)]
    assert runs[0] == runs[1] and all(np.isfinite(runs[0]))
    refused = {
        "resolution 56 must be a multiple of 16 .*PRODUCT_STUDIO_TRAIN__RESOLUTION": {"resolution": 56},
        "train_text_encoder=True is not supported .*TRAIN_TEXT_ENCODER": {"train_text_encoder": True},
        "export_kohya=True .* no kohya/ComfyUI converter": {"export_kohya": True},
        "noise_offset=0.1 .*NOISE_OFFSET=0": {"noise_offset": 0.1},
    }
    for message, setting in refused.items():
        with pytest.raises(TrainingError, match=message):
            _train(klein_pipe, tmp_path / "refused", **setting)
    with pytest.raises(TrainingError, match="prior preservation is on but there are no class images"):
        _train(klein_pipe, tmp_path / "refused", classes=0, prior_images=2)
    assert not (tmp_path / "refused").exists()  # refused before any work


def test_klein_presets_choose_rank_and_targets_and_explicit_values_win(klein_pipe, tmp_path):
    from product_studio.training import TrainConfig
    from product_studio.training.adapters import denoiser_targets

    person = TrainConfig(preset="person").for_family("flux2-klein")
    assert (person.rank, person.train_text_encoder) == (64, False)  # klein trains the transformer only
    assert TrainConfig(preset="quick").for_family("flux2-klein").rank == 4  # the klein script's default
    assert TrainConfig(preset="quick", rank=8).for_family("flux2-klein").rank == 8
    assert TrainConfig(preset="person").for_family("sd") == TrainConfig(preset="person")
    assert "ff.linear_in" in denoiser_targets(klein_pipe, TrainConfig(preset="fine-detail"))
    assert denoiser_targets(klein_pipe, TrainConfig(preset="object")) == [
        *["to_k", "to_q", "to_v", "to_out.0", "to_qkv_mlp_proj"],
        "single_transformer_blocks.0.attn.to_out",
    ]
    result = _train(klein_pipe, tmp_path, steps=1, classes=0, prior_images=0, preset="fine-detail", rank=2)
    assert any(".ff.linear_in.lora_A" in k for k in _lora_tensors(result.lora_file))


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
            ],
        ),
    ],
)
def test_klein_trains_in_bfloat16_with_gradient_checkpointing(tiny_klein_model, device, tmp_path):
    from product_studio.models import load_pipeline

    pipe = load_pipeline(str(tiny_klein_model), device, "bfloat16")
    result = _train(pipe, tmp_path, steps=2, gradient_checkpointing=True)
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    assert {t.dtype for t in _lora_tensors(result.lora_file).values()} == {torch.float32}  # LoRA in fp32
    assert not pipe.transformer.is_gradient_checkpointing  # switched off again


def test_klein_cards_with_a_product_lora_keep_the_sellers_pixels(klein_pipe, tmp_path, sellers_product_kept):
    """The cards stage on klein with a LoRA from train_lora: loaded, scaled per template, unloaded."""
    from product_studio import cleaning
    from product_studio.cards import making, planning
    from product_studio.records import CleanedPhoto

    lora_file = _train(klein_pipe, tmp_path / "lora", steps=1, rank=2, classes=0, prior_images=0).lora_file
    _drawn_cutout().save(tmp_path / "drawn.png")
    drawn = CleanedPhoto(source="front.jpg", cutout_path=tmp_path / "drawn.png", coverage=0.3)
    plan = planning.plan_cards(
        ["wildberries-vertical", "banner-16x9"],
        ["oak-table", "in-hand"],
        default_formats=[],
        default_scenes=[],
        templates_dir=REPO_TEMPLATES,
    )
    before = _render(klein_pipe)
    made = making.make_cards(
        plan,
        [drawn],
        tmp_path / "cards",
        pipe=klein_pipe,
        prompts=PROMPTS,
        lora_file=lora_file,
        segment=cleaning.make_cleaner("grabcut").mask,
        steps=2,
    )
    np.testing.assert_array_equal(_render(klein_pipe), before)  # the LoRA is unloaded afterwards
    published = [c for c in made if c.status == "published"]
    assert {c.render.mode for c in published} == {"composite", "generate"}
    for card in published:
        w, h = card.render.size
        assert w % 16 == 0 and h % 16 == 0
        # The record says what the inpainter was shown: the cutout's size as reference, composites only.
        assert (card.render.reference is not None) == (card.render.mode == "composite")
        if card.render.mode == "composite":
            light = card.render.light.mode
            sellers_product_kept(card.local_path, _drawn_cutout(), card.product.box, light, 0.3)


# --- licences ----------------------------------------------------------------------------------------------


def _model_folder(path: Path, card: str | None) -> Path:
    path.mkdir(parents=True)
    (path / "model_index.json").write_text(json.dumps({"_class_name": "Flux2KleinPipeline"}))
    if card is not None:
        (path / "README.md").write_text(card)
    return path


def test_the_model_cards_licence_is_read_and_recorded(tiny_klein_model, tiny_model, tmp_path):
    from product_studio.manifest import BaseModelRef
    from product_studio.models import model_licence

    assert model_licence(str(tiny_klein_model)) == "apache-2.0"  # the tiny klein's card, as klein 4B's
    assert model_licence(str(tiny_model)) is None  # no model card: nothing is claimed
    other = _model_folder(tmp_path / "other", "---\nlicense: other\nlicense_name: acme-licence\n---\n# x\n")
    assert model_licence(str(other)) == "acme-licence"
    assert model_licence(str(_model_folder(tmp_path / "bare", "# no front matter\n"))) is None
    assert model_licence("acme/not-in-the-cache") is None  # the hub is never asked
    assert BaseModelRef(id="x", revision="main", license="apache-2.0").model_dump()["license"] == "apache-2.0"


NONCOMMERCIAL_CARD = "---\nlicense: other\nlicense_name: flux-non-commercial-license\n---\n"


@pytest.mark.parametrize(
    "base_model",
    ["black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.2-klein-9B", "folder:flux-non-commercial"],
)
def test_a_noncommercial_base_model_is_refused_by_name_unless_allowed(base_model, tmp_path, monkeypatch):
    from pydantic import ValidationError

    from product_studio.settings import Settings, describe_settings_error

    if base_model.startswith("folder:"):
        base_model = str(_model_folder(tmp_path / "klein-9b", NONCOMMERCIAL_CARD))
    monkeypatch.setenv("PRODUCT_STUDIO_BASE_MODEL", base_model)
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = describe_settings_error(refused.value)
    assert "\n" not in message and message.startswith(f"PRODUCT_STUDIO_BASE_MODEL={base_model}: ")
    assert "non-commercial" in message and "PRODUCT_STUDIO_ALLOW_NONCOMMERCIAL_MODELS=true" in message
    monkeypatch.setenv("PRODUCT_STUDIO_ALLOW_NONCOMMERCIAL_MODELS", "true")
    assert Settings().base_model == base_model


def test_commercial_base_models_and_the_cli_flag_follow_the_same_rule(tiny_klein_model, tmp_path):
    from product_studio.models import check_commercial_use

    for ok in (str(tiny_klein_model), "black-forest-labs/FLUX.2-klein-base-4B", "stabilityai/sdxl-turbo-x"):
        assert check_commercial_use(ok, allow=False) == ok
    card = _model_folder(tmp_path / "cc", "---\nlicense: cc-by-nc-4.0\n---\n")
    with pytest.raises(ValueError, match="licence 'cc-by-nc-4.0' is non-commercial.*set --base-model to"):
        check_commercial_use(str(card), allow=False, setting="--base-model")
