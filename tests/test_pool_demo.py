"""``make pool-demo`` for real: a Prefect server, process work pools and two SKU workers on loopback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_workers_share_a_catalogue_and_a_second_run_skips_every_sku(tmp_path):
    report_file = tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODUCT_STUDIO_", "PREFECT_", "AWS_"))}
    result = subprocess.run(
        [sys.executable, "-m", "product_studio.devkit.pool_demo", "--again", "--report", str(report_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary) == {"skus", "published", "workers", "seconds"}
    assert summary["skus"] == summary["published"] >= 6
    ran = [sku for skus in summary["workers"].values() for sku in skus]
    assert sorted(ran) == sorted(set(ran)) and len(ran) == summary["skus"]  # each SKU once
    assert set(summary["workers"]) == {"sku-worker-1", "sku-worker-2"}  # both workers took SKUs
    assert "every SKU published exactly once: yes" in lines
    # One batch run per worker: each loads the models once, for its first SKU; its later SKUs load nothing.
    report = json.loads(report_file.read_text())
    for worker, skus in summary["workers"].items():
        loads = [s["timings_s"]["model_load_s"] for s in report["skus"] if s["worker"] == worker]
        assert len(loads) == len(skus) and sum(x > 0 for x in loads) <= 1 and loads[0] > 0, (worker, loads)
    again = json.loads(next(line for line in lines if line.startswith("again: "))[len("again: ") :])
    assert again["skipped"] == summary["skus"] and again["published"] == again["failed"] == 0
    # The workers the demo started are gone (the other tests run their own S3 and Prefect servers).
    leftovers = subprocess.run(
        ["pgrep", "-f", "prefect worker start --pool demo-"], capture_output=True, text=True
    )
    assert leftovers.stdout.strip() == "", leftovers.stdout
