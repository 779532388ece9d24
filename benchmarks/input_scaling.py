"""Memory and start-up against corpus size: Multi30k and Multi30k repeated, 5 training steps.

A benchmark, not a test. For each corpus it trains ``configs/multi30k_de_en.yaml`` for 5 steps
(no validation split, so no decoding) in a fresh process and reports the process's peak RSS
and its wall time (Python start, TensorFlow import, vocabulary, input pipeline, 5 steps).
The repeated corpora are written under ``/tmp`` (``--workdir``) from
``../shared/data/multi30k``.

Runs:
* ``29k``: Multi30k's 29,000 pairs, vocabulary learned from them;
* ``2.9M``: the pairs repeated 100 times, vocabulary learned from the default bounded sample
  (``data.vocab_sample``);
* ``2.9M prebuilt``: the same corpus with the 29k run's vocabulary (``data.vocabulary``), which
  isolates the input pipeline from SentencePiece training;
* ``29M prebuilt`` (``--big``): repeated 1,000 times.

Measured on the shared 2-core machine (load average about 3, so wall times vary by +-30%;
before streaming: 29k 1.9 GB / 25 s, 2.9M 7.1 GB / 109 s)::

    run              peak RSS GB   wall s
    29k                     2.08     23.9 - 34.4
    2.9M                    2.13     27.3 - 38.9   (vocabulary from the 500k-pair sample)
    2.9M prebuilt           2.12     24.7 - 34.2
    29M prebuilt            2.12     37.1

Usage::

    python benchmarks/input_scaling.py [--workdir /tmp/input_scaling] [--big]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "multi30k"
CONFIG = ROOT / "configs" / "multi30k_de_en.yaml"


def repeat_corpus(workdir: Path, times: int) -> tuple[str, str]:
    """``train.de``/``train.en`` concatenated ``times`` times (written once)."""
    out = workdir / f"x{times}"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for side in ("de", "en"):
        path = out / f"train.{side}"
        if not path.exists():
            text = (DATA / f"train.{side}").read_text(encoding="utf-8").rstrip("\n") + "\n"
            with open(path, "w", encoding="utf-8") as f:
                for _ in range(times):
                    f.write(text)
        paths.append(str(path))
    return paths[0], paths[1]


def one_run(args) -> None:
    """Child process: train 5 steps, print wall time and peak RSS as JSON."""
    start = time.perf_counter()
    from transformer_tf.config import config_from_dict
    from transformer_tf.training.trainer import build_trainer

    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    raw["data"]["splits"] = {"train": {"source": args.source, "target": args.target}}
    if args.vocabulary:
        raw["data"]["vocabulary"] = args.vocabulary
    raw["training"].update(
        {"steps": 5, "epochs": None, "log_every": 5, "checkpoint_every": 5, "eval_every": None}
    )
    config = config_from_dict(raw, base_dir=CONFIG.parent)
    trainer = build_trainer(config, args.run_dir, show_progress=False)
    ready = time.perf_counter() - start
    trainer.train()
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        "RESULT " + json.dumps({"wall_s": wall, "build_s": ready, "peak_rss_gb": peak_kib / 2**20})
    )


def measure(label, source, target, run_dir, vocabulary=None) -> dict:
    command = [sys.executable, __file__, "--one", "--source", source, "--target", target,
               "--run-dir", str(run_dir)]  # fmt: skip
    if vocabulary:
        command += ["--vocabulary", vocabulary]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"{label} failed:\n{result.stderr[-3000:]}")
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    figures = {"run": label, **json.loads(line[len("RESULT ") :])}
    print(json.dumps(figures), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/input_scaling")
    parser.add_argument("--big", action="store_true", help="also 29M pairs (about 3 GB of text)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--vocabulary", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one_run(args)
    workdir = Path(args.workdir)
    runs = workdir / "runs"
    if runs.exists():
        import shutil

        shutil.rmtree(runs)
    small = (str(DATA / "train.de"), str(DATA / "train.en"))
    results = [measure("29k", *small, runs / "29k")]
    vocabulary = str(runs / "29k" / "vocab")
    large = repeat_corpus(workdir, 100)
    results.append(measure("2.9M", *large, runs / "2.9M"))
    results.append(measure("2.9M prebuilt", *large, runs / "2.9M-prebuilt", vocabulary))
    if args.big:
        huge = repeat_corpus(workdir, 1000)
        results.append(measure("29M prebuilt", *huge, runs / "29M-prebuilt", vocabulary))
    base = results[0]
    print(f"\n{'run':<16}{'peak RSS GB':>12}{'wall s':>9}{'RSS x':>8}{'wall x':>8}")
    for r in results:
        print(
            f"{r['run']:<16}{r['peak_rss_gb']:>12.2f}{r['wall_s']:>9.1f}"
            f"{r['peak_rss_gb'] / base['peak_rss_gb']:>8.2f}{r['wall_s'] / base['wall_s']:>8.2f}"
        )


if __name__ == "__main__":
    main()
