"""`product-studio train` on a local folder: the command a user runs, including a killed and resumed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from safetensors import safe_open

from flows.cli import main
from product_studio.training import read_metadata


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        im = Image.new("RGB", (200, 160), (230, 225, 215))
        ImageDraw.Draw(im).rectangle((60 + 5 * i, 40, 140, 130), fill=(40, 90 + 30 * i, 160))
        im.save(folder / f"{i}.jpg", quality=90)
    return folder


def _args(photos: Path, out: Path, model: Path, priors: Path, *extra: str) -> list[str]:
    return [
        "train", str(photos), "--class-noun", "mug", "--out", str(out), "--base-model", str(model),
        "--priors-dir", str(priors), "--prior-images", "2", "--rank", "2", "--quiet", *extra,
    ]  # fmt: skip


def test_train_command_writes_a_lora_and_reports(photos, tmp_path, tiny_model, capsys):
    out = tmp_path / "out"
    args = _args(photos, out, tiny_model, tmp_path / "priors", "--steps", "3", "--validation-steps", "2")
    assert main([*args, "--export-kohya", "--identifier", "olis"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["identifier"] == "olis" and summary["prompt"] == "a photo of olis mug"
    assert summary["steps"] == 3 and summary["resumed_from"] == 0
    meta = read_metadata(out / "pytorch_lora_weights.safetensors")
    assert meta["class_noun"] == "mug" and meta["base_model"] == str(tiny_model)
    assert (out / "lora_kohya.safetensors").is_file() and (out / "loss.png").is_file()
    assert len(list((out / "validation").glob("final-*.png"))) == 2
    # Class images went to the shared, content-addressed cache and are reused by the next run.
    cached = sorted((tmp_path / "priors").rglob("*.png"))
    assert len(cached) == 2
    mtimes = [p.stat().st_mtime_ns for p in cached]
    assert main([*args, "--no-validation"]) == 0
    assert [p.stat().st_mtime_ns for p in cached] == mtimes


def test_train_command_explains_bad_input(photos, tmp_path, tiny_model, capsys):
    (photos / "2.jpg").unlink()
    args = _args(photos, tmp_path / "out", tiny_model, tmp_path / "priors")
    assert main(args) == 2
    assert "2 usable photo(s), at least 3 are needed" in capsys.readouterr().err
    Image.new("RGB", (90, 90)).save(photos / "3.jpg")
    assert main([*args, "--resolution", "100"]) == 2
    assert "resolution must be a multiple of 8, got 100" in capsys.readouterr().err
    assert main([*args, "--class-noun", "Mug2!"]) == 2
    assert "class_noun must be 2-40 letters" in capsys.readouterr().err
    # The console command exits with the same status and message, and no progress bar.
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        *_args(tmp_path / "missing", tmp_path / "o", tiny_model, tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "training" not in proc.stderr
    assert f"photo folder {tmp_path / 'missing'} does not exist" in proc.stderr


def _lora(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


@pytest.mark.slow
def test_a_killed_training_process_resumes_where_it_left_off(photos, tmp_path, tiny_model):
    """Interrupt a real run with SIGKILL (a preempted GPU), rerun the same command: it resumes."""
    import torch

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    priors = tmp_path / "priors"
    steps = ["--steps", "60", "--checkpoint-every", "10", "--no-validation", "--learning-rate", "1e-3"]
    whole = tmp_path / "whole"
    assert main(_args(photos, whole, tiny_model, priors, *steps)) == 0

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "flows.cli", *_args(photos, out, tiny_model, priors, *steps)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not list(out.glob("checkpoints/*/latest.json")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "pytorch_lora_weights.safetensors").exists()

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    summary = json.loads(rerun.stdout)
    assert 10 <= summary["resumed_from"] < 60
    a, b = _lora(whole / "pytorch_lora_weights.safetensors"), _lora(out / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("family", ["sd", "sdxl", "flux2-klein"])
def test_an_identifier_given_by_hand_follows_the_rule_of_the_chosen_ones(
    family, photos, tmp_path, capsys, request
):
    """Issue 34 #9: `--identifier teapot --class-noun teapot` trained on "a photo of teapot teapot", and
    "a photo of" was taken too; a hand-given identifier meets the automatic choice's rule, for every family
    (refused before the photos or the model are read, except the single-token check, which needs it)."""
    from transformers import AutoTokenizer

    from product_studio import identifiers

    fixture = {"sd": "tiny_model", "sdxl": "tiny_sdxl_model"}.get(family, "tiny_klein_model")
    model = request.getfixturevalue(fixture)
    capsys.readouterr()  # what writing the model printed
    out = tmp_path / "out"
    for given, says in [
        ("teapot", "not one word of 3-4 lowercase letters"),
        ("a photo of", "not one word of 3-4 lowercase letters"),
        ("pot", "is the class noun"),
        ("sks", "strong prior"),
        ("kilt", "English word, name or brand"),
    ]:
        noun = "pot" if given == "pot" else "teapot"
        args = _args(photos, out, model, tmp_path / "priors", "--steps", "1", "--identifier", given)
        args[args.index("--class-noun") + 1] = noun
        assert main(args) == 2, given
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"identifier {given!r}" in err and says in err, err
        assert not out.exists()  # nothing trained, nothing written
    tokenizer = AutoTokenizer.from_pretrained(model / "tokenizer")
    chosen = identifiers.choose_identifier(tokenizer, "SKU-1")
    assert identifiers.check_identifier(chosen, "teapot", tokenizer) == chosen  # the rule is one rule
    if family == "flux2-klein":
        return
    with pytest.raises(ValueError, match="not a single token"):  # "qzx" is three CLIP tokens
        identifiers.check_identifier("qzxv", "teapot", tokenizer)
