"""The trainer's options, each proven through the public API: losses, masks, caching, checkpoints, exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open

from product_studio.identifiers import ProductPrompts
from product_studio.settings import Settings
from product_studio.storage import LocalStore
from product_studio.training import (
    KOHYA_FILE,
    Checkpoints,
    PhotoError,
    TrainConfig,
    TrainingError,
    from_cutout,
    load_photo_folder,
    read_metadata,
    train_lora,
)
from product_studio.training.data import encode_latent_set
from product_studio.training.losses import dreambooth_loss, min_snr_weights


def _cutouts(n: int, size: int = 64) -> list:
    """Red discs on a transparent background: what the cleaning stage hands the trainer."""
    out = []
    for i in range(n):
        im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        ImageDraw.Draw(im).ellipse((12 + i, 14, 50, 52 - i), fill=(200, 30 + 20 * i, 40, 255))
        out.append(from_cutout(im, f"cutout-{i}.png"))
    return out


def _classes(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (64, 64), (60 + 30 * i, 90, 120)) for i in range(n)]


def _train(pipe, tmp_path, name="run", images=None, checkpoints=None, progress=None, **settings):
    config = {"steps": 4, "rank": 2, "prior_images": 2, "validation_prompts": [], "checkpoint_every": 0}
    return train_lora(
        pipe,
        images if images is not None else _cutouts(3),
        _classes(2),
        prompts=ProductPrompts("olis", "teapot"),
        config=TrainConfig(**{**config, **settings}),
        out_dir=tmp_path / name,
        metadata={"base_model": "tiny"},
        checkpoints=checkpoints,
        progress=progress,
    )


def _lora_tensors(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def _generate(pipe, prompt="a photo of olis teapot"):
    image = pipe(prompt, num_inference_steps=3, generator=torch.Generator().manual_seed(0)).images[0]
    return np.asarray(image, dtype=np.float32)


# --- the objective ------------------------------------------------------------------------------------


def test_masked_loss_ignores_background_and_keeps_the_prior_term():
    pred, target = torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1.0  # the product
    pred[0, :, 0, 0] = 5.0  # an error on the instance's background only
    assert dreambooth_loss(pred, target, instances=1, weights=mask).item() == 0.0
    assert dreambooth_loss(pred, target, instances=1).item() > 0  # unmasked, it counts
    pred[0, :, 3, 3] = 1.0  # an error on the product counts
    masked = dreambooth_loss(pred, target, instances=1, weights=mask).item()
    assert masked == pytest.approx(1.0 / 16)
    pred[1] = 2.0  # the class image's error, weighted by lambda
    assert dreambooth_loss(pred, target, instances=1, weights=mask, prior_loss_weight=0.5).item() == (
        pytest.approx(masked + 0.5 * 4.0)
    )


def test_min_snr_weights():
    snr = torch.tensor([0.5, 5.0, 50.0])
    np.testing.assert_allclose(min_snr_weights(snr, 5.0, False), [1.0, 1.0, 0.1], rtol=1e-6)
    np.testing.assert_allclose(min_snr_weights(snr, 5.0, True), [0.5 / 1.5, 5 / 6, 5 / 51], rtol=1e-6)


def test_masks_become_latent_weights_with_a_background_floor(tiny_pipe):
    items = _cutouts(2)
    latents = encode_latent_set(tiny_pipe.vae, items, 64, flip=True, background_weight=0.1, device="cpu")
    assert latents.mean.shape == (4, 4, 8, 8) and latents.count == 2  # mirrored copies encoded once too
    assert not torch.allclose(latents.mean[0], latents.mean[2])  # the mirror of an asymmetric image
    w = latents.weights[0, 0]
    assert w.min().item() == pytest.approx(0.1) and w.max().item() == pytest.approx(1.0)
    assert w[4, 4] == pytest.approx(1.0) and w[0, 0] == pytest.approx(0.1)  # centre product, corner bg


def test_an_empty_mask_is_refused_by_name(tiny_pipe):
    blank = from_cutout(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "blank.png")
    with pytest.raises(PhotoError, match="blank.png: its mask is empty"):
        encode_latent_set(tiny_pipe.vae, [blank], 64, flip=False, background_weight=0.1, device="cpu")


# --- optimisations change speed, not results ------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        {"gradient_checkpointing": True},
    ],
    ids=lambda o: next(iter(o)) + "=" + str(next(iter(o.values()))),
)
def test_optimisations_leave_the_losses_unchanged(tiny_pipe, tmp_path, option):
    baseline = _train(tiny_pipe, tmp_path, "base", steps=3).losses
    changed = _train(tiny_pipe, tmp_path, "opt", steps=3, **option).losses
    np.testing.assert_allclose(changed, baseline, rtol=1e-3, atol=1e-5)


def test_training_options_run_and_change_the_result(tiny_pipe, tmp_path):
    baseline = _train(tiny_pipe, tmp_path, "base", steps=3).losses
    for name, option in {
        "offset": {"noise_offset": 0.1},
        "flip": {"random_flip": True},
        "accum": {"gradient_accumulation_steps": 2},
        "nosnr": {"snr_gamma": None},
        "unmasked": {"masked_loss": False},
        "cosine": {"lr_scheduler": "cosine", "lr_warmup_steps": 1, "batch_size": 2},
    }.items():
        losses = _train(tiny_pipe, tmp_path, name, steps=3, **option).losses
        assert all(np.isfinite(losses)) and losses != baseline, name


def test_eight_bit_adam_without_bitsandbytes_is_a_clear_error(tiny_pipe, tmp_path):
    before = _generate(tiny_pipe)
    with pytest.raises(TrainingError, match="adamw8bit' needs bitsandbytes"):
        _train(tiny_pipe, tmp_path, optimizer="adamw8bit")
    np.testing.assert_array_equal(_generate(tiny_pipe), before)


# --- golden numbers, CUDA ----------------------------------------------------------------------------------


def test_a_seeded_run_trains_to_the_recorded_numbers(tiny_pipe, tmp_path):
    """A golden slice: any deterministic change to the step (its draws and their order, the loss, the
    optimizer) changes these numbers. Update them only for a change you intend, and say why in the commit."""
    result = _train(tiny_pipe, tmp_path, steps=3, learning_rate=1e-3, seed=3)
    np.testing.assert_allclose(result.losses, [2.2802818, 2.1701813, 2.0285883], rtol=1e-4)
    up = _lora_tensors(result.lora_file)[
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.lora.up.weight"
    ]
    expected = [-0.00098440074, -0.0028615985, -0.0013833891, 0.0028529535]
    np.testing.assert_allclose(up.flatten()[:4].numpy(), expected, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_training_on_cuda_uses_the_fused_optimizer_and_the_loss_scaler(tiny_model, tmp_path):
    from product_studio.models import load_pipeline
    from product_studio.training.adapters import trainable_lora
    from product_studio.training.loop import prepare_run, training_step

    pipe = load_pipeline(str(tiny_model), "cuda", "float16")
    config = TrainConfig(steps=2, rank=2, prior_images=2, learning_rate=1e-3, validation_prompts=[])
    with trainable_lora(pipe, config) as lora:
        prompts = ProductPrompts("olis", "teapot")
        run = prepare_run(pipe, lora, _cutouts(3), _classes(2), prompts, config, resolution=64)
        assert run.optimizer.defaults["fused"] and run.scaler.is_enabled()
        assert all(p.is_cuda and p.dtype == torch.float32 for p in run.params)  # LoRA weights train in fp32
        assert all(np.isfinite([training_step(run) for _ in range(2)]))
    before = _generate(pipe)
    result = _train(pipe, tmp_path, steps=2)
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    assert {t.dtype for t in _lora_tensors(result.lora_file).values()} == {torch.float32}
    np.testing.assert_array_equal(_generate(pipe), before)  # the shared pipeline is restored


# --- text encoder, outputs --------------------------------------------------------------------------------


def test_text_encoder_lora_is_trained_saved_and_the_pipeline_restored(tiny_pipe, tmp_path):
    ids = tiny_pipe.tokenizer("a photo of olis teapot", return_tensors="pt").input_ids
    with torch.no_grad():
        embeds = tiny_pipe.text_encoder(ids)[0]
    result = _train(tiny_pipe, tmp_path, train_text_encoder=True, text_encoder_lr=1e-3)
    keys = _lora_tensors(result.lora_file).keys()
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("unet.") for k in keys)
    with torch.no_grad():
        torch.testing.assert_close(tiny_pipe.text_encoder(ids)[0], embeds)  # adapter removed again
    assert not any(p.requires_grad for p in tiny_pipe.text_encoder.parameters())


def test_outputs_metadata_loss_curve_validation_and_kohya_export(tiny_pipe, tmp_path):
    result = _train(
        tiny_pipe,
        tmp_path,
        steps=4,
        validation_every=2,
        validation_prompts=["a photo of {product}"],
        validation_steps=2,
        export_kohya=True,
        alpha=4,
    )
    meta = read_metadata(result.lora_file)
    assert meta["identifier"] == "olis" and meta["class_noun"] == "teapot" and meta["base_model"] == "tiny"
    assert (meta["rank"], meta["alpha"], meta["family"]) == ("2", "4", "sd")
    with Image.open(result.loss_curve) as curve:
        assert curve.size == (640, 320)
    assert [p.name for p in result.validation] == ["step-000002-0.png", "final-0.png"]
    summary = json.loads((result.lora_file.parent / "training.json").read_text())
    assert len(summary["losses"]) == 4 and summary["settings"]["alpha"] == 4
    assert set(result.files()) >= {
        "pytorch_lora_weights.safetensors",
        KOHYA_FILE,
        "loss.png",
        "training.json",
    }

    kohya = _lora_tensors(result.kohya_file)
    assert all(k.startswith("lora_unet_") for k in kohya)
    assert {float(v) for k, v in kohya.items() if k.endswith(".alpha")} == {4.0}
    # The kohya file is the same LoRA: diffusers' own kohya loader gives the same image.
    outputs = []
    for folder, name in [
        (result.lora_file.parent, result.lora_file.name),
        (result.lora_file.parent, KOHYA_FILE),
    ]:
        tiny_pipe.load_lora_weights(str(folder), weight_name=name)
        try:
            outputs.append(_generate(tiny_pipe))
        finally:
            tiny_pipe.unload_lora_weights()
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1.0)
    assert np.abs(outputs[0] - _generate(tiny_pipe)).mean() > 0  # and it does change the output


# --- checkpoints -----------------------------------------------------------------------------------------


class _Preempted(Exception):
    pass


def test_an_interrupted_run_resumes_from_its_checkpoint_to_the_same_result(tiny_pipe, tmp_path):
    settings = {"steps": 6, "checkpoint_every": 2, "learning_rate": 1e-3}
    whole = _train(tiny_pipe, tmp_path, "whole", **settings)

    store = LocalStore(tmp_path / "checkpoints")
    ckpt = Checkpoints(store, "cat/sku")

    def preempt_at_5(step: int, loss: float) -> None:
        if step == 5:
            raise _Preempted

    with pytest.raises(_Preempted):
        _train(tiny_pipe, tmp_path, "broken", checkpoints=ckpt, progress=preempt_at_5, **settings)
    assert any(k.endswith("step-000004/state.pt") for k in store.list("cat/sku/"))
    resumed = _train(tiny_pipe, tmp_path, "resumed", checkpoints=ckpt, **settings)
    assert resumed.resumed_from == 4
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-4, atol=1e-6)
    a, b = _lora_tensors(whole.lora_file), _lora_tensors(resumed.lora_file)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    assert store.list("cat/sku/") == []  # a finished run clears its checkpoints

    # A different run (other settings) never resumes another run's state.
    with pytest.raises(_Preempted):
        _train(tiny_pipe, tmp_path, "b2", checkpoints=ckpt, progress=preempt_at_5, **settings)
    other = _train(tiny_pipe, tmp_path, "other", checkpoints=ckpt, **{**settings, "rank": 3})
    assert other.resumed_from == 0


# --- presets, photo folders ------------------------------------------------------------------------------


def test_presets_fill_fields_and_explicit_values_win():
    person = TrainConfig(preset="person")
    assert (person.rank, person.steps, person.train_text_encoder) == (64, 1000, True)
    assert TrainConfig(preset="person", rank=128).rank == 128
    assert TrainConfig().rank == 16
    with pytest.raises(ValueError, match="unknown training preset 'shoes'; choose one of"):
        TrainConfig(preset="shoes")
    with pytest.raises(ValueError, match="must contain \\{product\\}"):
        TrainConfig(validation_prompts=["a teapot"])
    with pytest.raises(ValueError, match="unknown placeholder"):
        TrainConfig(validation_prompts=["{product} by {brand}"])


def test_a_preset_named_later_fills_only_what_was_not_set_explicitly():
    # The operator's PRODUCT_STUDIO_TRAIN__* (explicit) and preset, then the SKU's product.json preset.
    operator = TrainConfig(preset="quick", steps=4)
    sku = operator.with_preset("person")
    assert (sku.preset, sku.steps, sku.rank, sku.train_text_encoder) == ("person", 4, 64, True)
    assert operator.with_preset(None) is operator
    flags = TrainConfig(rank=3).with_options(preset="fine-detail", seed=9)
    assert (flags.rank, flags.seed, flags.steps) == (3, 9, 1200)


def test_prior_rule_and_resolution(tiny_pipe):
    assert TrainConfig().uses_prior
    assert not TrainConfig(prior_images=0).uses_prior and not TrainConfig(prior_loss_weight=0).uses_prior
    assert (
        TrainConfig().resolution_for(tiny_pipe) == 64
        and TrainConfig(resolution=32).resolution_for(tiny_pipe) == 32
    )


def test_photo_folder_uses_alpha_as_mask_and_names_bad_files(tmp_path):
    for i, c in enumerate(_cutouts(2, size=96)):
        rgba = c.image.convert("RGBA")
        rgba.putalpha(c.mask)
        rgba.save(tmp_path / f"{i}.png")
    Image.new("RGB", (80, 60), "blue").save(tmp_path / "plain.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.raises(PhotoError, match="3 usable photo\\(s\\), at least 4 are needed.*broken.jpg"):
        load_photo_folder(tmp_path, min_photos=4)
    photos = load_photo_folder(tmp_path)
    assert [p.name for p in photos] == ["0.png", "1.png", "plain.jpg"]
    assert photos[0].mask is not None and photos[2].mask is None


# --- SDXL -------------------------------------------------------------------------------------------------


def test_sdxl_trains_unet_and_both_text_encoders_and_loads_with_plain_diffusers(tiny_sdxl_model, tmp_path):
    from product_studio.models import load_pipeline, model_family, native_resolution

    pipe = load_pipeline(str(tiny_sdxl_model))
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and model_family(pipe) == "sdxl"
    assert native_resolution(pipe) == 64
    before = _generate(pipe)
    result = _train(pipe, tmp_path, train_text_encoder=True, learning_rate=5e-3, export_kohya=True)
    keys = _lora_tensors(result.lora_file).keys()
    for prefix in ("unet.", "text_encoder.", "text_encoder_2."):
        assert any(k.startswith(prefix) for k in keys), prefix
    assert read_metadata(result.lora_file)["family"] == "sdxl"
    assert {k.split("_", 2)[1] for k in _lora_tensors(result.kohya_file)} == {"unet", "te1", "te2"}
    np.testing.assert_array_equal(_generate(pipe), before)  # the shared pipeline is restored
    pipe.load_lora_weights(str(result.lora_file.parent))
    try:
        assert np.abs(_generate(pipe) - before).mean() > 0.5
    finally:
        pipe.unload_lora_weights()
    # The other stages that drive the pipeline work on SDXL too: class priors and scene rendering.
    from product_studio.rendering import renderer, scenes
    from product_studio.training import priors

    spec = priors.prior_spec(pipe, {"id": "tiny-sdxl"}, "a photo of a teapot", resolution=64, steps=2)
    (prior,) = priors.generate_class_images(pipe, spec, [0])
    template = scenes.load_library(Settings().templates_dir)["in-hand"].model_copy(update={"candidates": 1})
    with renderer.product_lora(pipe, result.lora_file):
        (scene,) = renderer.generate_scene(
            pipe, template, ProductPrompts("olis", "teapot"), (64, 64), steps=2
        )
    assert prior.size == scene.image.size == (64, 64) and "olis teapot" in scene.made_with["prompt"]


# --- precision, prediction types, object-store checkpoints -----------------------------------------------


def test_bf16_weights_train_with_fp32_lora_parameters(tiny_model, tmp_path):
    from product_studio.models import load_pipeline

    pipe = load_pipeline(str(tiny_model), "cpu", "bfloat16")
    assert pipe.unet.dtype == torch.bfloat16
    result = _train(pipe, tmp_path, steps=2)
    assert all(np.isfinite(result.losses))
    assert {t.dtype for t in _lora_tensors(result.lora_file).values()} == {torch.float32}


def test_v_prediction_models_train_against_the_velocity(tiny_pipe, tmp_path):
    """SD 2.x-style models predict v; the target follows the scheduler's prediction type."""
    from diffusers import DDPMScheduler, PNDMScheduler

    eps = _train(tiny_pipe, tmp_path, "eps", steps=2, snr_gamma=None).losses
    original = tiny_pipe.scheduler
    tiny_pipe.scheduler = PNDMScheduler.from_config(original.config, prediction_type="v_prediction")
    try:
        v = _train(tiny_pipe, tmp_path, "v", steps=2, snr_gamma=None).losses
    finally:
        tiny_pipe.scheduler = original
    assert all(np.isfinite(v)) and v != eps
    # Same noise, timesteps and latents; only the target differs, as diffusers defines it.
    sched = DDPMScheduler.from_config(original.config, prediction_type="v_prediction")
    x, n, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    a = sched.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    b = (1 - sched.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(a * n - b * x, sched.get_velocity(x, n, t))
    torch.testing.assert_close(a * x + b * n, sched.add_noise(x, n, t))


def test_checkpoints_live_in_the_object_store(buckets):
    _, output = buckets
    ckpt = Checkpoints(output, "_checkpoints/cat/sku", keep=1)
    for step in (2, 4, 6):
        ckpt.save("run1", step, {"step": step, "weights": torch.full((2,), float(step))})
    assert ckpt.load("run1")["step"] == 6
    kept = sorted(k for k in output.list("_checkpoints/cat/sku/run1/") if k.endswith("state.pt"))
    assert [k.split("/")[-2] for k in kept] == ["step-000004", "step-000006"]  # latest + `keep` older
    assert ckpt.load("other-run") is None
    ckpt.clear("run1")
    assert output.list("_checkpoints/") == []


def test_the_training_config_is_resolved_once_from_the_operator_the_product_and_the_family():
    """Issue 33: environment (or flags), then the product's preset, then the family's values, in one
    function; the trainer takes the result as it is."""
    from product_studio.training.config import resolve_config

    operator = TrainConfig(rank=8)  # PRODUCT_STUDIO_TRAIN__RANK=8: explicit, it wins over every preset
    final = resolve_config(operator, preset="person", family="flux2-klein")
    assert (final.rank, final.train_text_encoder, final.preset, final.steps) == (8, False, "person", 1000)
    assert resolve_config(TrainConfig(), preset="person", family="flux2-klein").rank == 64
    assert resolve_config(TrainConfig(), preset="person", family="sd").train_text_encoder is True
    assert resolve_config(operator, preset=None, family=None) == operator
