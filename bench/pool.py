"""Benchmark: SKUs per hour on the local work pools (``make pool-demo``).

Each row is one full ``product_studio.devkit.pool_demo`` run (a fresh Prefect server, pools, workers, S3
server) on the same sample catalogue; the catalogue run's wall time gives SKUs per hour, and the published
manifests' stage timings give each stage's share of the SKUs' time.

    python bench/pool.py [--copies 2] [--json pool.json]          # 1 worker against 2: the ratio of the two
    python bench/pool.py --compare <commit> [--copies 3] [--runs 2]   # this checkout against <commit>

``--compare`` checks ``<commit>`` out into a temporary git worktree and runs its pool demo and this one,
alternating, ``--runs`` rounds, each with ``--workers`` SKU workers of ``--threads`` threads; the faster run
of each counts, and the ratio is this checkout's catalogue wall time over the commit's, in the same run.
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


def run(workers: int, copies: int, threads: int, root: Path = ROOT) -> dict:
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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODUCT_STUDIO_", "PREFECT_", "AWS_"))}
    env["PYTHONPATH"] = str(root)  # that checkout's code, in every process the demo starts
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # as today's pool demo sets it, for an earlier checkout's demo too
    done = subprocess.run([*cmd, "--report", str(report)], cwd=root, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the pool demo in {root} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(report.read_text())


def summarise(result: dict) -> dict:
    stages: dict[str, float] = defaultdict(float)
    for sku in result["skus"]:
        for stage, seconds in sku["timings_s"].items():
            stages[stage] += seconds
    loads = [sku["timings_s"].get("model_load_s") for sku in result["skus"]]
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
        # SKUs whose manifest shows a model load (None: a checkout without model_load_s)
        "skus_loading": None if None in loads else sum(x > 0 for x in loads),
    }


def compare(commit: str, copies: int, workers: int, threads: int, runs: int) -> list[dict]:
    """The pool demo of ``commit`` (a temporary git worktree) and of this checkout, alternating."""
    tmp = Path(tempfile.mkdtemp(prefix="pool-bench-before-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(tmp), commit], cwd=ROOT, check=True)
    best: dict[str, dict] = {}
    try:
        for attempt in range(runs):
            for name, root in ((f"before ({commit})", tmp), ("now", ROOT)):
                row = summarise({**run(workers, copies, threads, root), "threads": threads})
                print(f"run {attempt + 1} {name:22s} {row['seconds']:7.1f} s  {row['skus_per_hour']} SKUs/h")
                if name not in best or row["seconds"] < best[name]["seconds"]:
                    best[name] = {**row, "name": name}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tmp)], cwd=ROOT, check=False)
    before, now = best.values()
    print("| checkout | SKUs | wall (s) | SKUs/hour | vs before | stages (s) | outside flows (s) |", end="")
    print(" SKUs loading |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in (before, now):
        print(
            f"| {r['name']} | {r['skus']} | {r['seconds']} | {r['skus_per_hour']} | "
            f"{r['seconds'] / before['seconds']:.2f}× | {r['stage_s']} | {r['outside_flows_s']} | "
            f"{r['skus_loading']} |"
        )
    return [before, now]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=2, help="variants of each of the 3 sample products")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--compare", metavar="COMMIT", help="compare this checkout's pool demo with COMMIT's")
    ap.add_argument("--workers", type=int, default=2, help="SKU workers (with --compare)")
    ap.add_argument("--threads", type=int, default=1, help="threads per process (with --compare)")
    ap.add_argument("--runs", type=int, default=2, help="rounds, best of each counts (with --compare)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {platform.machine()}, {platform.processor() or '?'}, python {platform.python_version()}")
    if args.compare:
        rows = compare(args.compare, args.copies, args.workers, args.threads, args.runs)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return
    rows = []
    for workers in (1, 2):  # each SKU run gets its share of the cores
        result = run(workers, args.copies, threads=max(1, cores // workers))
        rows.append(summarise({**result, "threads": max(1, cores // workers)}))
    base = rows[0]["seconds"]
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
