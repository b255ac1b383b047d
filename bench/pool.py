"""Benchmark: SKUs per hour on the local work pools (``make pool-demo``) with 1 and with 2 SKU workers.

Each row is one full ``product_studio.devkit.pool_demo`` run (a fresh Prefect server, pools, workers, S3
server) on the same sample catalogue; the catalogue run's wall time gives SKUs per hour, and the published
manifests' stage timings give each stage's share of the SKUs' time. The 1-worker row is the baseline of
the ratio.

    python bench/pool.py [--copies 2] [--json pool.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(workers: int, copies: int, threads: int) -> dict:
    report = Path(tempfile.mkdtemp(prefix="pool-bench-")) / "report.json"
    cmd = [
        sys.executable,
        "-m",
        "product_studio.devkit.pool_demo",
        "--workers",
        str(workers),
        "--copies",
        str(copies),
    ]
    cmd += ["--threads", str(threads)]
    subprocess.run([*cmd, "--report", str(report)], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(report.read_text())


def summarise(result: dict) -> dict:
    stages: dict[str, float] = defaultdict(float)
    for sku in result["skus"]:
        for stage, seconds in sku["timings_s"].items():
            stages[stage] += seconds
    in_runs = sum(sku["seconds"] for sku in result["skus"])
    staged = sum(stages.values())
    summary = result["summary"]
    workers = len(summary["workers"])
    return {
        "workers": workers,
        "threads": result.get("threads"),
        "skus": summary["skus"],
        "seconds": summary["seconds"],
        "skus_per_hour": round(3600 * summary["skus"] / summary["seconds"]),
        "stage_share": {k: round(v / staged, 3) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])},
        "stage_s": round(staged, 1),
        # Worker time outside SKU flow bodies: a new process per flow run, imports, Prefect's bookkeeping.
        "outside_flows_s": round(workers * summary["seconds"] - in_runs, 1),
        "prior_cache_hit_rate": result.get("prior_cache_hit_rate"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=2, help="variants of each of the 3 sample products")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    for workers in (1, 2):  # each SKU run gets its share of the cores
        result = run(workers, args.copies, threads=max(1, cores // workers))
        rows.append(summarise({**result, "threads": max(1, cores // workers)}))
    base = rows[0]["seconds"]
    print(f"machine: {platform.machine()}, {platform.processor() or '?'}, python {platform.python_version()}")
    print(
        "| workers × threads | SKUs | wall (s) | SKUs/hour | vs 1 worker | stages (s) | outside flows (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['workers']} × {r['threads']} | {r['skus']} | {r['seconds']} | {r['skus_per_hour']} | "
            f"{base / r['seconds']:.2f}× | {r['stage_s']} | {r['outside_flows_s']} |"
        )
    for r in rows:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in r["stage_share"].items() if v >= 0.01)
        print(
            f"stage shares, {r['workers']} worker(s): {shares}; prior-cache hits {r['prior_cache_hit_rate']}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
