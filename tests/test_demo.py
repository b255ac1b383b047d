"""``make demo`` for real, in a folder of its own: the catalogue, then the seller loop to the marketplace,
then (``--keep-serving``) what a newcomer does next from another shell with nothing but ``.demo/env``."""

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from product_studio.devkit.demo import DEMO_SETTINGS


def _until(process: subprocess.Popen, marker: str, timeout: float) -> str:
    """The demo's output up to the line holding ``marker``."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError(f"no {marker!r} in the demo's output:\n" + "".join(lines)[-3000:])


def _env_file(path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


@pytest.mark.slow
def test_the_demo_ends_with_approved_cards_live_and_a_newcomer_can_drive_it_from_another_shell(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODUCT_STUDIO_", "PREFECT_", "AWS_"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    demo = subprocess.Popen(
        [sys.executable, "-m", "product_studio.devkit.demo", "--keep-serving"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out = _until(demo, "Ctrl-C stops it.", 900)
        assert "running: product-studio review demo-catalogue backpack-red --approve amazon-main.jpg" in out
        assert "running: product-studio publish-approved demo-catalogue" in out
        listed = [line.split()[0] for line in out.splitlines() if line.startswith("    amazon-main/")]
        assert listed == ["amazon-main/1.jpg"], out[-3000:]
        # Our lines, not Prefect's or the libraries': each stage, training's progress, no run chatter.
        noise = ("requires torchvision", "No LoRA keys", "Loading pipeline components", "Finished in state")
        assert not [n for n in noise if n in out], [n for n in noise if n in out]
        assert "training ..." in out and "demo-catalogue/backpack-red: training: step 150/150" in out
        # A seller's page with buttons, at the URL printed after "with buttons".
        link = out.split("with buttons (1 day):\n", 1)[1].splitlines()[0].strip()
        page = urllib.request.urlopen(link, timeout=30).read().decode()
        assert 'data-approve-passing="backpack-red"' in page and "Look at each card" in page
        # Another shell: nothing but PATH and .demo/env (the README's two lines). It holds every setting the
        # demo's commands ran with (a retry from publish-approved needs the model, device, cleaner, scores).
        shell = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **_env_file(tmp_path / ".demo" / "env")}
        assert set(DEMO_SETTINGS) <= set(shell) and {"AWS_ENDPOINT_URL", "PREFECT_HOME"} <= set(shell)
        cli = os.path.join(os.path.dirname(sys.executable), "product-studio")
        cards = subprocess.run(
            [cli, "review", "demo-catalogue", "backpack-red"],
            cwd=tmp_path, env=shell, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert cards.returncode == 0, cards.stdout[-2000:] + cards.stderr[-2000:]
        assert "amazon-main.jpg" in cards.stdout and "approve" in cards.stdout
    finally:
        demo.send_signal(signal.SIGINT)
        rest = demo.communicate(timeout=120)[0]
    assert demo.returncode == 0, rest[-3000:]
    assert "approved card(s) of backpack-red live in the marketplace bucket" in rest
    assert (tmp_path / "demo-output/demo-catalogue/backpack-red/review/index.html").exists()
