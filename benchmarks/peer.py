"""Peer benchmark (issue 13): this engine against OpenNMT-tf 2.32 on the same Multi30k model.

    python benchmarks/peer.py [--steps 300] [--data ../shared/data/multi30k] [--work runs/peer]
        [--opennmt-python benchmarks/.venv-opennmt/bin/python] [--skip-opennmt] [--skip-ours]
        [--set key=value ...] [--output benchmarks/results/peer.json]

``make bench-peer`` creates the OpenNMT-tf venv (TF 2.12) and runs this. Both sides train the
model of ``configs/multi30k_de_en.yaml`` (3+3 layers, d256, 4 heads, d_ff 1024, shared and tied
embeddings, batch 128 sentences, max length 64, label smoothing 0.1, Adam 0.9/0.98, inverse-sqrt
schedule with peak 1e-3 after 1000 warm-up steps, global-norm clipping at 1.0), one after the
other, for ``--steps`` updates each, with no validation, on the same SentencePiece pieces:

1. *prepare*: the engine's own code (``build_tokenizers``, joint SentencePiece, 8k) learns the
   vocabulary from the training files; the pairs the engine trains on (``encode_pairs``: no
   empty side, at most 63 pieces a side) are written as piece files and an OpenNMT-tf vocabulary
   (``<blank> <s> </s>`` then the pieces in the engine's id order), and the tokenizer is copied
   into the engine run's ``vocab/`` so that the engine reads the same pieces from the raw files.
2. *ours*: ``python benchmarks/peer.py ours ...`` (a subprocess): the real ``Trainer``, with
   clocks around each compiled-loop call and each per-epoch dataset build (as
   ``benchmarks/workers.py`` does), and the loop's tracing count after every call.
3. *opennmt*: ``onmt-main --model benchmarks/opennmt/model.py --config benchmarks/opennmt/
   multi30k.yml DATA.yml train``, logging every step; the figures come from its log lines
   (millisecond timestamps, steps/s and target tokens/s per step).

Target tokens are counted alike: non-padding target positions, EOS included (the engine's loss
count; OpenNMT-tf's target ``length``, which counts ``</s>`` in decoder mode). End-to-end rate =
all target tokens / (end of the last step - start of the training loop: the engine's
``Trainer.train`` call, OpenNMT-tf's "Training on N examples"-or-earlier log line just before the
loop); steady rate = the tokens after step 30 / the time after step 30. The *largest gap* between
consecutive steps is the stall measure: OpenNMT-tf's from consecutive step log lines; the
engine's, which runs ``steps_per_loop`` steps per call, is each call's interval minus
(steps - 1) median step times (what the call would hold if all its other steps were normal).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs" / "multi30k_de_en.yaml"
STEADY_AFTER = 30  # steps excluded from the steady rate (tracing, pipeline warm-up)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- 1. the shared pieces ---------------------------------------------------------------------


def prepare(data: Path, work: Path) -> dict:
    """Vocabulary, piece files and OpenNMT-tf vocabulary in ``work/pieces``; see the module doc."""
    from transformer_tf.data import tokenizers
    from transformer_tf.data.parallel import read_parallel
    from transformer_tf.data.special_tokens import SPECIAL_TOKENS
    from transformer_tf.data.translation import encode_pairs

    pieces = work / "pieces"
    manifest = pieces / "prepared.json"
    if manifest.exists():
        return json.loads(manifest.read_text())
    pieces.mkdir(parents=True, exist_ok=True)
    corpus = read_parallel(data / "train.de", data / "train.en")
    start = time.perf_counter()
    # As configs/multi30k_de_en.yaml's task does (TranslationTask.prepare).
    tokenizer, _ = tokenizers.build_tokenizers(
        "sentencepiece",
        corpus.sources,
        corpus.targets,
        vocab_size=8000,
        shared=True,
        lowercase=False,
    )
    tokenizers.save_tokenizers(pieces / "vocab", tokenizer, tokenizer)
    source_ids, target_ids, dropped = encode_pairs(corpus, tokenizer, tokenizer, 64)
    with (
        open(pieces / "train.de", "w", encoding="utf-8") as src,
        open(pieces / "train.en", "w", encoding="utf-8") as tgt,
    ):
        for x, y in zip(source_ids, target_ids, strict=True):
            src.write(" ".join(tokenizer.tokens(x)) + "\n")
            tgt.write(" ".join(tokenizer.tokens(y)) + "\n")
    # OpenNMT-tf: ids 0-2 are <blank>, <s>, </s>; unknown pieces go to one OOV bucket at the end.
    with open(pieces / "vocab.txt", "w", encoding="utf-8") as vocab:
        vocab.write("<blank>\n<s>\n</s>\n")
        for token_id in range(len(SPECIAL_TOKENS), tokenizer.vocab_size):
            vocab.write(tokenizer.id_to_token(token_id) + "\n")
    info = {
        "pairs": len(source_ids),
        "dropped_over_long": dropped,
        "target_tokens_per_epoch_with_eos": sum(len(y) + 1 for y in target_ids),
        "vocab_size": tokenizer.vocab_size,
        "prepare_seconds": time.perf_counter() - start,
    }
    manifest.write_text(json.dumps(info, indent=2) + "\n")
    return info


# --- 2. this engine ---------------------------------------------------------------------------


def run_ours(data: Path, work: Path, steps: int, overrides: list[str]) -> dict:
    """The engine's Trainer on the Multi30k config, instrumented with clocks only."""
    from transformer_tf.config import load_config
    from transformer_tf.run import RunDir
    from transformer_tf.training.trainer import build_trainer

    process_start = time.perf_counter()
    run_dir = work / "ours_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(work / "pieces" / "vocab", run_dir / "vocab")  # the same pieces
    settings = [
        f"data.splits.train.source={data / 'train.de'}",
        f"data.splits.train.target={data / 'train.en'}",
        f"data.splits.validation.source={data / 'val.de'}",
        f"data.splits.validation.target={data / 'val.en'}",
        f"training.steps={steps}",
        "training.eval_every=1000000",
        "training.validation.decode=false",
        "training.checkpoint_every=1000000",
        "training.log_every=1000000",
        *overrides,
    ]
    config = load_config(CONFIG, settings)
    # A run directory with the vocabulary but no config is refused: write the config first.
    RunDir(run_dir).write_config(config)
    trainer = build_trainer(config, run_dir, show_progress=False)
    calls: list[dict] = []
    datasets: list[dict] = []
    compiled_ref: dict = {}
    make_loop = trainer.make_train_loop
    task_dataset = trainer.task.dataset

    def make_timed_loop():
        compiled = make_loop()
        compiled_ref["loop"] = compiled

        def timed(iterator, max_steps):
            start = time.perf_counter()
            out = compiled(iterator, max_steps)
            count = float(out["count"].numpy())  # the engine syncs right after anyway
            calls.append(
                {
                    "start": start,
                    "end": time.perf_counter(),
                    "steps": int(out["steps"].numpy()),
                    "count": count,
                    "traces": compiled.experimental_get_tracing_count(),
                }
            )
            return out

        return timed

    def timed_dataset(split, training, epoch=0):
        start = time.perf_counter()
        dataset = task_dataset(split, training, epoch=epoch)
        datasets.append({"epoch": epoch, "start": start, "seconds": time.perf_counter() - start})
        return dataset

    trainer.make_train_loop = make_timed_loop
    trainer.task.dataset = timed_dataset
    train_start = time.perf_counter()
    trainer.train()
    train_end = time.perf_counter()
    training = config.training
    marks = [{"step": 0, "time": train_start}]
    step = 0
    for call in calls:
        if call["steps"]:
            step += call["steps"]
            marks.append({"step": step, "time": call["end"], "count": call["count"]})
    per_step = [
        (b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in itertools.pairwise(marks[1:])
    ]
    median = statistics.median(per_step) if per_step else 0.0
    gaps = []
    for a, b in itertools.pairwise(marks[1:]):
        n = b["step"] - a["step"]
        gaps.append(
            {"after_step": a["step"], "seconds": (b["time"] - a["time"]) - (n - 1) * median}
        )
    return {
        "system": "transformer_tf",
        "mode": {
            "precision": training.mixed_precision,
            "policy": trainer.model.dtype_policy.name,  # what `auto` resolved to
            "jit_compile": training.jit_compile,
            "steps_per_loop": training.steps_per_loop,
            "batch_type": training.batch_type,
            "batch_size": training.batch_size,
            "bucketing": f"length buckets of width {config.data.bucket_width}",
        },
        "marks": [{**m, "time": m["time"] - train_start} for m in marks],
        "dataset_builds": [{**d, "start": d["start"] - train_start} for d in datasets],
        "tracing_counts": [c["traces"] for c in calls],
        "traces_of_train_loop": compiled_ref["loop"].experimental_get_tracing_count(),
        "median_step_seconds": median,
        "largest_gap": max(gaps, key=lambda g: g["seconds"]) if gaps else None,
        "setup_seconds": train_start - process_start,
        "train_call_seconds": train_end - train_start,
        **_rates(marks),
    }


def _cpu() -> dict:
    """The CPU's model name and its bfloat16 flags: speed figures mean nothing without them."""
    from transformer_tf.precision import BF16_CPU_FLAGS, read_cpu

    model, flags = read_cpu()
    return {"model": model, "bf16_flags": [f for f in BF16_CPU_FLAGS if f in flags]}


def _rates(marks: list[dict]) -> dict:
    """End-to-end and steady target tokens/s from step marks ({step, time, count})."""
    total = sum(m.get("count", 0.0) for m in marks)
    seconds = marks[-1]["time"] - marks[0]["time"]
    steady_from = next((m for m in marks if m["step"] >= STEADY_AFTER), marks[0])
    after = [m for m in marks if m["step"] > steady_from["step"]]
    steady_tokens = sum(m["count"] for m in after)
    steady_seconds = marks[-1]["time"] - steady_from["time"]
    return {
        "steps": marks[-1]["step"],
        "target_tokens": total,
        "loop_seconds": seconds,
        "end_to_end_tokens_per_second": total / seconds if seconds else None,
        "steady_from_step": steady_from["step"],
        "steady_tokens_per_second": steady_tokens / steady_seconds if steady_seconds else None,
    }


# --- 3. OpenNMT-tf ----------------------------------------------------------------------------

_STEP_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\d*: I .*Step = (\d+) ; steps/s = ([\d.]+), "
    r"tokens/s = \d+ \(.*?(\d+) target.*\)"
)
_ANY_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\d*: ([IWE]) (.*)$")


def _timestamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def run_opennmt(python: Path, work: Path, steps: int, tokens_per_batch: float) -> dict:
    """OpenNMT-tf on the same pieces; the figures come from its per-step log lines."""
    model_dir = work / "opennmt_run"
    shutil.rmtree(model_dir, ignore_errors=True)
    pieces = work / "pieces"
    data_config = work / "opennmt_data.yml"
    data_config.write_text(
        json.dumps(  # JSON is YAML
            {
                "model_dir": str(model_dir),
                "data": {
                    "train_features_file": str(pieces / "train.de"),
                    "train_labels_file": str(pieces / "train.en"),
                    "source_vocabulary": str(pieces / "vocab.txt"),
                    "target_vocabulary": str(pieces / "vocab.txt"),
                },
                "train": {"max_step": steps},
            }
        )
    )
    onmt_main = python.parent / "onmt-main"
    command = [
        str(onmt_main),
        "--model",
        str(HERE / "opennmt" / "model.py"),
        "--config",
        str(HERE / "opennmt" / "multi30k.yml"),
        str(data_config),
        "--log_level",
        "INFO",
        "train",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    env.pop("PYTHONPATH", None)
    start = time.time()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.time() - start
    log_text = proc.stdout + proc.stderr
    (work / "opennmt_train.log").write_text(log_text)
    if proc.returncode != 0:
        tail = "\n".join(log_text.strip().splitlines()[-20:])
        raise RuntimeError(f"onmt-main exited with {proc.returncode}:\n{tail}")
    version = subprocess.run(
        [
            str(python),
            "-c",
            "import opennmt, tensorflow as tf; print(opennmt.__version__, tf.__version__)",
        ],
        capture_output=True,
        text=True,
        env=env,
    ).stdout.split()
    result = parse_opennmt_log(log_text, tokens_per_batch)
    result["versions"] = {"opennmt-tf": version[0], "tensorflow": version[1]} if version else {}
    result["process_seconds"] = wall
    return result


def parse_opennmt_log(log_text: str, tokens_per_batch: float) -> dict:
    """Step marks, rates and gaps from an ``onmt-main train`` log that reports every step."""
    lines = log_text.splitlines()
    marks, loop_start, imputed = [], None, []
    for index, line in enumerate(lines):
        match = _STEP_LINE.match(line)
        if not match:
            continue
        stamp, step, steps_per_second, target_rate = match.groups()
        if loop_start is None:
            # The last log line before the first step: the trainer starts right after it.
            for previous in reversed(lines[:index]):
                other = _ANY_LINE.match(previous)
                if other and "Number of model" not in other.group(3):
                    loop_start = (_timestamp(other.group(1)), other.group(3))
                    break
        # One report per step: its target tokens are its rate times its duration. The first
        # two reports say 0 (OpenNMT-tf resets its counters around the step-1 checkpoint):
        # those steps get the corpus mean per batch.
        rate, target_rate = float(steps_per_second), float(target_rate)
        if rate > 0 and target_rate > 0:
            count = target_rate / rate
        else:
            count = tokens_per_batch
            imputed.append(int(step))
        marks.append({"step": int(step), "time": _timestamp(stamp), "count": count})
    if not marks or loop_start is None:
        raise RuntimeError("no step lines in the OpenNMT-tf log (see opennmt_train.log)")
    origin = loop_start[0]
    marks = [{"step": 0, "time": origin}, *marks]
    gaps = [
        {"after_step": a["step"], "seconds": b["time"] - a["time"]}
        for a, b in itertools.pairwise(marks[1:])
    ]
    return {
        "system": "OpenNMT-tf",
        "mode": {
            "precision": "float32",
            "jit_compile": False,
            "steps_per_loop": 1,
            "batch_type": "examples",
            "batch_size": 128,
            "bucketing": "length_bucket_width 2, sample_buffer_size 500000 (OpenNMT-tf defaults)",
            "report_every_steps": 1,
        },
        "loop_start_line": loop_start[1],
        "steps_with_mean_tokens": imputed,
        "marks": [{**m, "time": m["time"] - origin} for m in marks],
        "median_step_seconds": statistics.median(g["seconds"] for g in gaps) if gaps else None,
        "largest_gap": max(gaps, key=lambda g: g["seconds"]) if gaps else None,
        **_rates(marks),
    }


# --- report -----------------------------------------------------------------------------------


def table(results: dict) -> str:
    rows = [
        "| system | mode | end-to-end tok/s | steady tok/s (after step 30) | largest gap between "
        "steps | target tokens / steps | loop time |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in ("opennmt", "ours"):
        side = results.get(key)
        if not side or "error" in side:
            continue
        mode = side["mode"]
        precision = mode.get("policy") or mode["precision"]  # OpenNMT-tf's: "float32"
        if mode["precision"] == "auto":
            precision = f"auto = {precision}"
        described = (
            f"{precision if precision != 'none' else 'float32'}, "
            f"{'XLA' if mode['jit_compile'] else 'no XLA'}, {mode['steps_per_loop']} step(s)/call"
        )
        gap = side["largest_gap"]
        rows.append(
            f"| {side['system']} | {described} | {side['end_to_end_tokens_per_second']:.0f} | "
            f"{side['steady_tokens_per_second']:.0f} | {gap['seconds']:.2f} s (after step "
            f"{gap['after_step']}) | {side['target_tokens']:.0f} / {side['steps']} | "
            f"{side['loop_seconds']:.1f} s |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", nargs="?", choices=("all", "ours"), default="all")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "multi30k")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "peer")
    parser.add_argument(
        "--opennmt-python", type=Path, default=HERE / ".venv-opennmt" / "bin" / "python"
    )
    parser.add_argument("--skip-opennmt", action="store_true")
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="engine config override"
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "peer.json")
    args = parser.parse_args(argv)
    data, work = args.data.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, str(ROOT))

    if args.side == "ours":
        print("RESULT " + json.dumps(run_ours(data, work, args.steps, args.overrides)))
        return 0

    results: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "steps": args.steps,
        "load_average_before": os.getloadavg(),
        "cpus": os.cpu_count(),
        "cpu": _cpu(),
    }
    _log("preparing the shared SentencePiece pieces ...")
    results["data"] = prepare(data, work)
    if not args.skip_opennmt:
        _log("OpenNMT-tf ...")
        results["load_average_before_opennmt"] = os.getloadavg()
        try:
            info = results["data"]
            per_batch = info["target_tokens_per_epoch_with_eos"] / info["pairs"] * 128
            results["opennmt"] = run_opennmt(args.opennmt_python, work, args.steps, per_batch)
        except (OSError, RuntimeError) as error:
            results["opennmt"] = {"error": str(error)}
            _log(f"OpenNMT-tf failed: {error}")
    if not args.skip_ours:
        _log("this engine ...")
        results["load_average_before_ours"] = os.getloadavg()
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "ours",
            "--steps",
            str(args.steps),
            "--data",
            str(data),
            "--work",
            str(work),
        ]
        for override in args.overrides:
            command += ["--set", override]
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
            results["ours"] = {"error": tail}
            _log(f"the engine failed:\n{tail}")
        else:
            results["ours"] = json.loads(lines[-1][len("RESULT ") :])
    results["load_average_after"] = os.getloadavg()
    results["noisy"] = (
        max(results["load_average_before"][0], results["load_average_after"][0]) > 1.5
    )
    ours, peer = results.get("ours", {}), results.get("opennmt", {})
    if "end_to_end_tokens_per_second" in ours and "end_to_end_tokens_per_second" in peer:
        results["end_to_end_ratio"] = (
            ours["end_to_end_tokens_per_second"] / peer["end_to_end_tokens_per_second"]
        )
        results["steady_ratio"] = (
            ours["steady_tokens_per_second"] / peer["steady_tokens_per_second"]
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    cpu = results["cpu"]
    print(
        f"CPU: {cpu['model'] or 'unknown'}; bfloat16 flags: {', '.join(cpu['bf16_flags']) or 'none'}"
    )
    print(table(results))
    if "end_to_end_ratio" in results:
        print(
            f"\nengine / OpenNMT-tf: end-to-end {results['end_to_end_ratio']:.2f}x (target >= "
            f"1.3x), steady {results['steady_ratio']:.2f}x; load average before "
            f"{results['load_average_before']}, after {results['load_average_after']}"
            + (" (noisy: load > 1.5)" if results["noisy"] else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
