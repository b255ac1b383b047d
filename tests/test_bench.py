"""The GPU benchmark runs (on the CPU, with the tiny models): it must work the day a GPU is lent."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_smoke_run_prints_its_table(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--device", "cpu", "--steps", "2"]
    cmd += ["--sku-steps", "3", "--render-steps", "2", "--compile-backend", "eager"]
    cmd += ["--json", str(tmp_path / "gpu.json")]
    # Minutes when another suite shares the two cores.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    rows = [line.split(" | ")[0][2:] for line in table[1:]]
    assert rows == [
        "train sd15 fp16 + checkpointing",
        "train sd15 bf16",
        "render sd15 batch 4 x 2 steps",
        "train sdxl fp16 + checkpointing",
        "train sdxl bf16",
        "render sdxl batch 4 x 2 steps",
        "train klein-4b bf16 + checkpointing",
        "train klein-4b bf16",
        "render klein-4b batch 4 x 2 steps; one composite at 1 MP",
        "relight: one composite card at 1 MP, keep vs match, SDXL",
        "relight: one composite card at 1 MP, keep vs match, klein-4b",
        "klein-4b zero-shot candidate at 1 MP, 1/2/4 references",
        "one SKU: 3 steps + 8 scenes x 4 candidates",
        "warm worker, plain: SKUs 2-3 of 3 (2 steps + 4 scenes x 2)",
        "warm worker, compile + hot-swap: SKUs 2-3 of 3 (2 steps + 4 scenes x 2)",
    ]
    assert "skipped" not in proc.stdout and (tmp_path / "gpu.json").is_file()
