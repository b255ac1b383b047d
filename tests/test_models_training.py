import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from product_studio.identifiers import ProductPrompts
from product_studio.models import ModelLoadError, load_pipeline, model_identity, native_resolution
from product_studio.training import LORA_FILE, TrainConfig, TrainingError, train_lora


def _generate(pipe, prompt="a photo of olis teapot"):
    image = pipe(prompt, num_inference_steps=3, generator=torch.Generator().manual_seed(0)).images[0]
    return np.asarray(image, dtype=np.float32)


def _images(colour, n):
    return [Image.new("RGB", (64, 64), tuple(min(255, c + 20 * i) for c in colour)) for i in range(n)]


def test_tiny_model_is_a_normal_diffusers_folder(tiny_model, tiny_pipe):
    index = json.loads((tiny_model / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert native_resolution(tiny_pipe) == 64
    assert len(tiny_pipe.tokenizer) == 49408
    assert model_identity(str(tiny_model))["revision"].startswith("sha256:")


def test_bad_base_model_path_is_explained(tmp_path):
    with pytest.raises(ModelLoadError, match="holds no model_index.json"):
        load_pipeline(str(tmp_path))


def test_lora_trains_saves_and_loads_with_plain_diffusers(tiny_pipe, tmp_path):
    before = _generate(tiny_pipe)
    result = train_lora(
        tiny_pipe,
        _images((200, 40, 40), 3),
        _images((40, 40, 200), 4),
        prompts=ProductPrompts("olis", "teapot"),
        config=TrainConfig(steps=12, learning_rate=5e-3, rank=4, prior_images=4),
        out_dir=tmp_path,
    )
    assert result.lora_file == tmp_path / LORA_FILE and len(result.losses) == 12
    assert all(np.isfinite(result.losses))
    with safe_open(str(result.lora_file), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    assert keys and all(k.startswith("unet.") and ".lora." in k for k in keys)
    assert meta["product_studio.identifier"] == "olis" and meta["product_studio.class_noun"] == "teapot"

    # Training left the shared pipeline as it found it ...
    np.testing.assert_array_equal(_generate(tiny_pipe), before)
    # ... and plain diffusers loads the LoRA, which changes the output.
    tiny_pipe.load_lora_weights(str(tmp_path))
    try:
        assert np.abs(_generate(tiny_pipe) - before).mean() > 0.5
    finally:
        tiny_pipe.unload_lora_weights()
    np.testing.assert_array_equal(_generate(tiny_pipe), before)


def _short_run(pipe, config, out_dir):
    return train_lora(
        pipe,
        _images((10, 200, 10), 2),
        _images((90, 90, 90), 2),
        prompts=ProductPrompts("olis", "teapot"),
        config=config,
        out_dir=out_dir,
    )


def test_training_is_seeded(tiny_pipe, tmp_path):
    config = TrainConfig(steps=3, rank=2, prior_images=2, seed=7)
    runs = [_short_run(tiny_pipe, config, tmp_path / str(n)).losses for n in range(2)]
    assert runs[0] == runs[1]


def test_diverging_loss_stops_with_a_clear_error(tiny_pipe, tmp_path):
    before = _generate(tiny_pipe)
    # Settings refuse an infinite weight (issue 34); numerics can still make the loss inf: forced here.
    config = TrainConfig(steps=3, rank=2, prior_images=2).model_copy(
        update={"prior_loss_weight": float("inf")}
    )
    with pytest.raises(TrainingError, match="loss became inf at step 0; lower the learning rate"):
        _short_run(tiny_pipe, config, tmp_path)
    np.testing.assert_array_equal(_generate(tiny_pipe), before)  # the failed run's adapter is gone


def test_train_settings_are_validated():
    with pytest.raises(ValueError, match="resolution must be a multiple of 8, got 100"):
        TrainConfig(resolution=100)
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)


def test_model_identity_follows_the_weights(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    (folder / "unet.safetensors").write_bytes(b"weights-1")
    first = model_identity(str(folder))
    assert model_identity(str(folder)) == first  # hashed once, then remembered
    (folder / "unet.safetensors").write_bytes(b"weights-two")  # retrained in place: a new revision
    assert model_identity(str(folder))["revision"] != first["revision"]


def test_a_hub_models_revision_is_the_commit_it_was_loaded_from(tmp_path, monkeypatch):
    # The Hugging Face cache layout a worker has after loading a model: refs/main names the snapshot.
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-sd"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    (repo / "snapshots" / sha).mkdir(parents=True)
    (repo / "snapshots" / sha / "model_index.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert model_identity("acme/tiny-sd") == {"id": "acme/tiny-sd", "revision": sha}
    assert model_identity("acme/not-cached") == {"id": "acme/not-cached", "revision": "main"}
