"""transformer_tf benchmark suite (issue 7): training throughput against a keras-hub reference,
model FLOPs utilisation, decoding speed and peak memory.

    python benchmarks/run.py [--quick] [--output benchmarks/results/results.json] [--only NAMES]

Every measurement runs in its own subprocess (``workers.py``); this script schedules them,
records the load average around each, writes the JSON and prints a Markdown report with
PASS/FAIL against the targets. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

TARGETS = {
    "engine_vs_reference": 1.3,
    "mfu_big": 0.40,
    "cached_time_128_over_32": 5.0,
    "cached_over_uncached_greedy_64": 3.0,
}

# Steps: `warmup` steps (compilation, allocator warm-up) are excluded; then `windows` timed
# windows of `window` steps each (the engine logs tokens/s once per window).
PLANS = {
    "full": {
        "translation": {
            "toy": {"warmup": 10, "window": 10, "windows": 4, "num_train": 20000},
            "big": {"warmup": 2, "window": 2, "windows": 4, "num_train": 20000},
        },
        "classification": {
            "toy": {"warmup": 4, "window": 4, "windows": 5, "max_length": 256},
            "big": {"warmup": 2, "window": 2, "windows": 3, "max_length": 128},
        },
        "reviews": 3000,
        "decoding": {
            "lengths": [16, 32, 64, 128],
            "batch": 16,
            "source_length": 16,
            "repeats": 3,
            "max_uncached_length": 128,
        },
        "matmul": {"n": 2048, "repeats": 8, "trials": 5},
        "translate_sentences": 512,
    },
    "quick": {
        "translation": {
            "toy": {"warmup": 3, "window": 3, "windows": 2, "num_train": 3000},
            "big": {"warmup": 1, "window": 1, "windows": 2, "num_train": 3000},
        },
        "classification": {
            "toy": {"warmup": 2, "window": 2, "windows": 2, "max_length": 128},
            "big": {"warmup": 1, "window": 1, "windows": 2, "max_length": 64},
        },
        "reviews": 600,
        "decoding": {
            "lengths": [16, 32, 64, 128],
            "batch": 4,
            "source_length": 12,
            "repeats": 2,
            "max_uncached_length": 128,
        },
        "matmul": {"n": 2048, "repeats": 4, "trials": 3},
        "translate_sentences": 128,
    },
}


def run_worker(name: str, params: dict, log) -> dict:
    """Run one measurement in a fresh Python process; its RESULT line, plus load averages."""
    load_before = os.getloadavg()
    start = time.perf_counter()
    env = dict(
        os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow", PYTHONWARNINGS="ignore"
    )
    proc = subprocess.run(
        [sys.executable, str(HERE / "workers.py"), name, json.dumps(params)],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - start
    result_lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not result_lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        log(f"  FAILED {name} {params}: exit {proc.returncode}\n{tail}")
        return {"kind": name, "error": tail, "params": params}
    result = json.loads(result_lines[-1][len("RESULT ") :])
    result.setdefault("kind", name)
    result["worker"] = name
    result["params"] = params
    result["wall_seconds"] = seconds
    result["load_average_before"] = load_before
    result["load_average_after"] = os.getloadavg()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, small sizes (minutes)")
    parser.add_argument("--output", default=None, help="JSON results file")
    parser.add_argument(
        "--only",
        default="peak,translation,classification,decoding,memory",
        help="comma-separated sections: peak, translation, classification, decoding, memory",
    )
    parser.add_argument("--sizes", default="toy,big", help="comma-separated: toy, big")
    parser.add_argument("--modes", default="eager,xla", help="comma-separated: eager, xla")
    parser.add_argument(
        "--precisions",
        default="float32,bfloat16",
        help="comma-separated: float32, bfloat16 (mixed: bfloat16 compute, float32 variables)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the successful runs already in --output; redo only failed or missing ones",
    )
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    sections = set(args.only.split(","))
    sizes = args.sizes.split(",")
    jits = [m == "xla" for m in args.modes.split(",")]
    precisions = args.precisions.split(",")
    unknown = set(precisions) - set(common.PRECISIONS)
    if unknown:
        parser.error(
            f"unknown precision(s) {sorted(unknown)}; choose from {list(common.PRECISIONS)}"
        )
    output = Path(args.output or HERE / "results" / f"results_{mode}.json")
    output.parent.mkdir(parents=True, exist_ok=True)

    def log(message):
        print(message, file=sys.stderr, flush=True)

    results: dict = {
        "mode": mode,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "load_average_start": os.getloadavg(),
        "flops_formula": common.FLOPS_FORMULA,
        "targets": TARGETS,
        "runs": [],
    }
    results["versions"] = run_worker("versions", {}, log)
    runs = results["runs"]
    previous = {}
    if args.resume and output.exists():
        old = json.loads(output.read_text())
        for run in old.get("runs", []):
            if _ok(run):
                worker = run.get("worker") or _WORKER_OF_KIND.get(run.get("kind"), "matmul_peak")
                previous[(worker, _params_key(run["params"]))] = run
        results["resumed_from"] = old.get("started")

    def record(name, params):
        key = (name, _params_key(params))
        if key in previous and name != "matmul_peak":
            log(f"(kept from the previous run) {name} {json.dumps(params)}")
            runs.append(previous[key])
            return previous[key]
        log(
            f"[{time.strftime('%H:%M:%S')}] {name} {json.dumps(params)} (load {os.getloadavg()[0]:.2f})"
        )
        result = run_worker(name, params, log)
        runs.append(result)
        _save(output, results)
        return result

    def peaks():
        for precision in precisions:
            record("matmul_peak", {**plan["matmul"], "dtype": precision})

    if "peak" in sections:
        peaks()
    if "memory" in sections:
        record("import_baseline", {})
    with tempfile.TemporaryDirectory() as tmp:
        reviews = None
        for task in ("translation", "classification"):
            if task not in sections:
                continue
            if task == "classification":
                reviews = str(
                    common.write_synthetic_reviews(Path(tmp) / "reviews", plan["reviews"])
                )
            for precision in precisions:
                for size in sizes:
                    for jit in jits:
                        for kind in ("engine_train", "reference_train"):
                            params = {"task": task, "size": size, "jit": jit, **plan[task][size]}
                            if precision != "float32":  # keeps float32 keys of older results
                                params["precision"] = precision
                            if reviews:
                                params["data_dir"] = reviews
                            record(kind, params)
    if "decoding" in sections:
        record("decoding", plan["decoding"])
    if "memory" in sections:
        record("translate_memory", {"sentences": plan["translate_sentences"]})
    if "peak" in sections:
        peaks()  # again at the end: the load may have changed
    results["load_average_end"] = os.getloadavg()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["summary"] = summarize(results)
    _save(output, results)
    print(report(results))
    log(f"wrote {output}")
    return 0


def _params_key(params: dict) -> str:
    # The synthetic-review directory is a fresh temporary path each time; its content is fixed.
    return json.dumps({k: v for k, v in params.items() if k != "data_dir"}, sort_keys=True)


_WORKER_OF_KIND = {"engine": "engine_train", "reference": "reference_train"}


def _save(path: Path, results: dict) -> None:
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")


# --- summary and report ---------------------------------------------------------------------------


def _ok(run) -> bool:
    return "error" not in run


def _precision(run) -> str:
    return run.get("precision", "float32")


def _run_key(run) -> tuple:
    return (run["task"], run["size"], run["jit_compile"], _precision(run))


def summarize(results: dict) -> dict:
    runs = [r for r in results["runs"] if _ok(r)]
    peaks: dict = {}
    for r in runs:
        if r["kind"] == "matmul_peak":
            dtype = r.get("dtype", "float32")
            peaks[dtype] = max(peaks.get(dtype, 0.0), r["best_gflops"] * 1e9)
    peak = peaks.get("float32")
    summary: dict = {
        "matmul_peak_gflops": peak / 1e9 if peak else None,
        "matmul_peaks_gflops": {k: v / 1e9 for k, v in peaks.items()},
        "training": [],
        "checks": [],
    }
    engines = [r for r in runs if r["kind"] == "engine"]
    for e in engines:
        ref = next(
            (r for r in runs if r["kind"] == "reference" and _run_key(r) == _run_key(e)), None
        )
        # MFU against the peak of the precision the matmuls ran in.
        peak = peaks.get(_precision(e))
        row = {
            "task": e["task"],
            "size": e["size"],
            "jit_compile": e["jit_compile"],
            "precision": _precision(e),
            "batch_size": e.get("batch_size"),
            "unit": e["unit"],
            "engine_rate": e["rate"],
            "reference_rate": ref["rate"] if ref else None,
            "ratio": e["rate"] / ref["rate"] if ref else None,
            "engine_mfu": e["model_flops_per_second"] / peak if peak else None,
            "reference_mfu": ref["model_flops_per_second"] / peak if ref and peak else None,
            "engine_padding_share": e["padding_share"],
            "reference_padding_share": ref["padding_share"] if ref else None,
            "engine_loop_overhead_share": e["loop_overhead_share"],
            "engine_first_step_seconds": e["first_step_seconds"],
            "reference_first_step_seconds": ref["first_step_seconds"] if ref else None,
            "engine_step_seconds_median": e["seconds_per_step_median"],
            "engine_step_seconds_max": e["seconds_per_step_max"],
            "engine_distinct_batch_shapes": e["distinct_batch_shapes"],
            "engine_peak_rss_mb": e["peak_rss_mb"],
            "reference_peak_rss_mb": ref["peak_rss_mb"] if ref else None,
            "load_average": e["load_average_before"][0],
        }
        summary["training"].append(row)
    # The target compares what a user of each gets: the engine in its faster mode (XLA where it
    # pays) against the reference in its faster mode, per task, size and precision. The
    # same-mode ratios are in the table.
    groups: dict = {}
    for row in summary["training"]:
        groups.setdefault((row["task"], row["size"], row["precision"]), []).append(row)
    for (task, size, precision), rows in groups.items():
        engine_best = max(rows, key=lambda r: r["engine_rate"])
        with_ref = [r for r in rows if r["reference_rate"] is not None]
        if not with_ref:
            continue
        ref_best = max(with_ref, key=lambda r: r["reference_rate"])
        ratio = engine_best["engine_rate"] / ref_best["reference_rate"]
        summary["checks"].append(
            {
                "target": f"engine >= {TARGETS['engine_vs_reference']}x reference ({task}, "
                f"{size}, {precision}; best mode of each: engine "
                f"{_mode(engine_best)}, reference {_mode(ref_best)})",
                "value": ratio,
                "passed": ratio >= TARGETS["engine_vs_reference"],
                "informative": precision != "float32",
            }
        )
    for task in ("translation", "classification"):
        for precision in sorted({r["precision"] for r in summary["training"]}):
            big = [
                r
                for r in summary["training"]
                if (r["task"], r["size"], r["precision"]) == (task, "big", precision)
                and r["engine_mfu"] is not None
            ]
            if not big:
                continue
            best = max(big, key=lambda r: r["engine_mfu"])
            summary["checks"].append(
                {
                    "target": f"MFU >= {TARGETS['mfu_big']:.0%} at d_model 512 ({task}, "
                    f"{precision} against the {precision} matmul peak, best of XLA/no XLA: "
                    f"{_mode(best)})",
                    "value": best["engine_mfu"],
                    "passed": best["engine_mfu"] >= TARGETS["mfu_big"],
                    "informative": precision != "float32",
                }
            )
    decoding = next((r for r in runs if r["kind"] == "decoding"), None)
    if decoding:
        table = {(d["algorithm"], d["use_cache"], d["length"]): d for d in decoding["results"]}
        summary["decoding"] = decoding["results"]
        for algorithm in ("greedy", "beam4"):
            a, b = table.get((algorithm, True, 128)), table.get((algorithm, True, 32))
            if a and b:
                ratio = a["seconds"] / b["seconds"]
                summary["checks"].append(
                    {
                        "target": f"cached {algorithm}: time(128)/time(32) <= "
                        f"{TARGETS['cached_time_128_over_32']}",
                        "value": ratio,
                        "passed": ratio <= TARGETS["cached_time_128_over_32"],
                    }
                )
            a, b = table.get((algorithm, True, 64)), table.get((algorithm, False, 64))
            if a and b:
                speedup = a["tokens_per_second"] / b["tokens_per_second"]
                summary["checks"].append(
                    {
                        "target": f"cached {algorithm} >= "
                        f"{TARGETS['cached_over_uncached_greedy_64']}x uncached tokens/s at 64"
                        + ("" if algorithm == "greedy" else " (informative; target is greedy)"),
                        "value": speedup,
                        "passed": speedup >= TARGETS["cached_over_uncached_greedy_64"],
                        "informative": algorithm != "greedy",
                    }
                )
    memory = {}
    for r in runs:
        if r["kind"] in ("import_baseline", "translate_memory"):
            memory[r["kind"]] = r["peak_rss_mb"]
        elif r["kind"] in ("engine", "reference"):
            key = f"{r['kind']}_{r['task']}_{r['size']}_{'xla' if r['jit_compile'] else 'eager'}"
            memory[key + ("" if _precision(r) == "float32" else "_bf16")] = r["peak_rss_mb"]
    summary["peak_rss_mb"] = memory
    return summary


def report(results: dict) -> str:
    s = results["summary"]
    v = results["versions"]
    lines = [
        f"## transformer_tf benchmarks ({results['mode']} mode, {results['started']})",
        "",
        f"- machine: {results['cpu_count']} CPU cores ({results['affinity_cpus']} usable); load "
        f"average (1/5/15 min) at start {_load(results['load_average_start'])}, at end "
        f"{_load(results.get('load_average_end'))}",
        f"- versions: python {v.get('python')}, tensorflow {v.get('tensorflow')}, keras "
        f"{v.get('keras')}, keras-hub {v.get('keras_hub')}",
        "- matmul peak (2048^3, best of the runs): "
        + (
            ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in s["matmul_peaks_gflops"].items())
            if s.get("matmul_peaks_gflops")
            else "not measured"
        ),
        "",
        "### Training throughput (engine vs keras-hub reference, same model size, batch and data)",
        "",
        "MFU is against the matmul peak of the run's precision.",
        "",
        "| task | size | precision | batch | XLA | engine | reference | engine/ref | engine MFU "
        "| ref MFU | padding engine/ref | engine step median (max) | 1st step engine/ref | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["training"]:
        unit = "tok/s" if r["unit"] == "tokens" else "ex/s"
        lines.append(
            f"| {r['task']} | {r['size']} | {r['precision']} | {r.get('batch_size') or '-'} | "
            f"{'yes' if r['jit_compile'] else 'no'} | "
            f"{r['engine_rate']:.0f} {unit} | {_f(r['reference_rate'], '.0f')} {unit} | "
            f"{_f(r['ratio'], '.2f')}x | {_pct(r['engine_mfu'])} | {_pct(r['reference_mfu'])} | "
            f"{_pct(r['engine_padding_share'])} / {_pct(r['reference_padding_share'])} | "
            f"{r['engine_step_seconds_median']:.3f} s ({r['engine_step_seconds_max']:.2f}) | "
            f"{r['engine_first_step_seconds']:.1f} / {_f(r['reference_first_step_seconds'], '.1f')} s | "
            f"{r['load_average']:.1f} |"
        )
    if s.get("decoding"):
        lines += [
            "",
            "### Decoding (fresh toy model, EOS suppressed so every row has full length; output "
            "tokens/s of the returned hypotheses)",
            "",
            "| algorithm | cache | L=16 | L=32 | L=64 | L=128 | time(128)/time(32) |",
            "|---|---|---|---|---|---|---|",
        ]
        table = {(d["algorithm"], d["use_cache"], d["length"]): d for d in s["decoding"]}
        for algorithm in ("greedy", "beam4"):
            for cache in (True, False):
                cells = [table.get((algorithm, cache, n)) for n in (16, 32, 64, 128)]
                ratio = (
                    f"{cells[3]['seconds'] / cells[1]['seconds']:.2f}"
                    if cells[3] and cells[1]
                    else "-"
                )
                lines.append(
                    f"| {algorithm} | {'yes' if cache else 'no'} | "
                    + " | ".join(f"{c['tokens_per_second']:.0f}" if c else "-" for c in cells)
                    + f" | {ratio} |"
                )
    if s.get("peak_rss_mb"):
        lines += ["", "### Peak resident memory (ru_maxrss of each subprocess)", ""]
        lines += [f"- {k}: {v:.0f} MB" for k, v in s["peak_rss_mb"].items()]
    lines += ["", "### Targets", ""]
    for c in s["checks"]:
        verdict = "PASS" if c["passed"] else "FAIL"
        if c.get("informative"):
            verdict += " (informative)"
        value = f"{c['value']:.1%}" if "MFU" in c["target"] else f"{c['value']:.2f}"
        lines.append(f"- **{verdict}** {c['target']}: measured {value}")
    lines += ["", f"FLOP counting: {results['flops_formula']}"]
    failed = [r for r in results["runs"] if not _ok(r)]
    if failed:
        lines += ["", "Failed runs: " + ", ".join(f"{r['kind']} {r.get('params')}" for r in failed)]
    return "\n".join(lines)


def _mode(row) -> str:
    return "XLA" if row["jit_compile"] else "no XLA"


def _f(value, spec):
    return "-" if value is None else format(value, spec)


def _pct(value):
    return "-" if value is None else f"{value:.1%}"


def _load(load):
    return "-" if not load else "/".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    sys.exit(main())
