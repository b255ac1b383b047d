"""How models are named where the world reads it."""

from __future__ import annotations

import shutil


def test_public_files_name_a_base_model_never_by_its_server_path(tiny_model, tmp_path):
    from product_studio.models import public_model_name, public_tool_name

    assert public_model_name("stable-diffusion-v1-5/stable-diffusion-v1-5") == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5"
    )
    assert public_model_name(str(tiny_model)) == "a local Stable Diffusion model"
    snapshot = tmp_path / "hub" / "models--acme--shop-sd" / "snapshots" / "0123abc"
    shutil.copytree(tiny_model, snapshot)
    assert public_model_name(str(snapshot)) == "acme/shop-sd"  # a cached copy of a hub model
    tuned = tmp_path / "tuned"
    shutil.copytree(tiny_model, tuned)
    (tuned / "README.md").write_text("---\nbase_model: stabilityai/sdxl-turbo\nlicense: mit\n---\n# ours\n")
    assert public_model_name(str(tuned)) == "a fine-tune of stabilityai/sdxl-turbo"
    (tuned / "README.md").write_text("---\nbase_model: /srv/models/secret\n---\n")  # a path is no name
    assert public_model_name(str(tuned)) == "a local Stable Diffusion model"
    assert public_tool_name("rembg-onnx:u2net:/srv/models/u2net.onnx") == "rembg-onnx:u2net"
    assert public_tool_name("rembg:birefnet-general") == "rembg:birefnet-general"
    assert public_tool_name("grabcut") == "grabcut"
