"""``make demo`` for real, in a folder of its own: the catalogue, then the seller loop to the marketplace."""

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_demo_ends_with_approved_cards_live_in_the_marketplace_bucket(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODUCT_STUDIO_", "PREFECT_", "AWS_"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    result = subprocess.run(
        [sys.executable, "-m", "product_studio.devkit.demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "running: product-studio review demo-catalogue backpack-red --approve amazon-main.jpg" in out
    assert "running: product-studio publish-approved demo-catalogue" in out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("    amazon-main/")]
    assert listed == ["amazon-main/1.jpg"], out[-3000:]
    assert "approved card(s) of backpack-red live in the marketplace bucket" in out
    assert (tmp_path / "demo-output/demo-catalogue/backpack-red/review/index.html").exists()
    # The libraries' notes stay out of what the demo prints (stderr included); the stages are named instead.
    noise = ("requires torchvision", "No LoRA keys", "Loading pipeline components", "Task run '")
    assert not [n for n in noise if n in out + result.stderr], [n for n in noise if n in out + result.stderr]
    assert "training ..." in out + result.stderr
