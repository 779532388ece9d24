"""GPU throughput of the d512 6+6 model (Transformer-base) in three precisions, with MFU.

    python benchmarks/gpu_bench.py [--smoke] [--steps 200] [--output FILE.json]

Run by ``benchmarks/gpu.sh``. First the matmul peak of the device (``workers.matmul_peak``:
a chain of square matmuls in a ``tf.function``, best of several) in float32, float16 and
bfloat16; then the engine (``workers.engine_train``: the real ``Trainer`` on the toy translation
task, 64 sentences per batch, no XLA) in float32, ``mixed_float16`` and ``mixed_bfloat16``. MFU
= model FLOPs/s (the formula of docs/performance.md) over the matmul peak of the compute dtype
(float32 runs against the float32 peak; TF32 is on by default on Ampere and later, which is what
a user gets). Each measurement is its own subprocess. ``--smoke`` runs the toy size, a few steps
and a small matmul on any device (CPU included), to check the script, not to measure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# The engine's names of the three precisions; the matmul dtype each MFU is measured against.
PRECISIONS = {
    "float32": ("none", "float32"),
    "mixed_float16": ("mixed_float16", "float16"),
    "mixed_bfloat16": ("mixed_bfloat16", "bfloat16"),
}


def worker(name: str, params: dict) -> dict:
    """Run ``workers.NAME(params)`` in this process (called as ``gpu_bench.py worker ...``)."""
    import common
    import workers

    for precision, (engine_name, _) in PRECISIONS.items():
        common.PRECISIONS.setdefault(precision, engine_name)
    return (
        workers.WORKERS[name](params) if name in workers.WORKERS else getattr(workers, name)(params)
    )


def run(name: str, params: dict) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "worker", name, json.dumps(params)],
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        print(f"FAILED {name} {params}:\n{tail}", file=sys.stderr, flush=True)
        return {"error": tail, "params": params}
    result = json.loads(lines[-1][len("RESULT ") :])
    result["wall_seconds"] = time.perf_counter() - start
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the script")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per precision")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "gpu.json")
    args = parser.parse_args(argv)
    size = "toy" if args.smoke else "big"
    window = 5 if args.smoke else 20
    windows = max(1, (3 * window if args.smoke else args.steps) // window)
    matmul = (
        {"n": 256, "repeats": 2, "trials": 2}
        if args.smoke
        else {"n": 8192, "repeats": 8, "trials": 5}
    )
    results: dict = {"size": size, "smoke": args.smoke, "matmul_peak": {}, "training": {}}
    versions = run("versions", {})
    results["versions"] = versions
    for _, dtype in PRECISIONS.values():
        peak = run("matmul_peak", {**matmul, "dtype": dtype})
        results["matmul_peak"][dtype] = peak
        print(
            f"matmul peak {dtype}: {peak.get('best_gflops', float('nan')) / 1e3:.1f} TFLOP/s",
            file=sys.stderr,
            flush=True,
        )
    for precision, (_, dtype) in PRECISIONS.items():
        params = {
            "task": "translation",
            "size": size,
            "jit": False,
            "precision": precision,
            "warmup": window,
            "window": window,
            "windows": windows,
            "num_train": 2000 if args.smoke else 20000,
        }
        train = run("engine_train", params)
        peak = results["matmul_peak"][dtype].get("best_gflops")
        if "model_flops_per_second" in train and peak:
            train["mfu"] = train["model_flops_per_second"] / (peak * 1e9)
        results["training"][precision] = train
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(
        "| precision | target tokens/s | step median (s) | model TFLOP/s | matmul peak "
        "(TFLOP/s) | MFU |"
    )
    print("|---|---|---|---|---|---|")
    for precision, (_, dtype) in PRECISIONS.items():
        train = results["training"][precision]
        peak = results["matmul_peak"][dtype].get("best_gflops", float("nan")) * 1e9
        if "error" in train:
            print(f"| {precision} | failed | | | {peak / 1e12:.1f} | |")
            continue
        print(
            f"| {precision} | {train['rate']:.0f} | {train['seconds_per_step_median']:.3f} | "
            f"{train['model_flops_per_second'] / 1e12:.2f} | {peak / 1e12:.1f} | "
            f"{100 * train.get('mfu', float('nan')):.1f}% |"
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        name, raw = sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "{}"
        print("RESULT " + json.dumps(worker(name, json.loads(raw)), default=str), flush=True)
    else:
        sys.exit(main())
