"""What a weighted mixture of corpora and the moving average of the weights cost in training speed.

A benchmark, not a test. It trains ``configs/multi30k_de_en.yaml`` (no validation) for
``--steps`` steps in a fresh process per run and reports the target tokens per second of the
last logging windows (``train_log.jsonl``), for:

* ``one corpus``: Multi30k's training split as it is;
* ``mixture 3:1``: the same pairs as two corpora (the first and second halves of the file),
  weighted 3:1 (``data.splits.train`` as a list);
* ``ema``: one corpus with ``training.ema_decay: 0.999``.

The runs alternate (``--repeats`` rounds) so that drift in the machine's load hits each alike;
the ratio of the means is what to read. Measured figures: ``benchmarks/README.md``.

Usage::

    python benchmarks/mixture.py [--data ../shared/data/multi30k] [--steps 200] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _halves(data: Path, workdir: Path) -> list[dict]:
    corpora = []
    sides = {
        side: (data / f"train.{side}").read_text(encoding="utf-8").splitlines()
        for side in ("de", "en")
    }
    half = len(sides["de"]) // 2
    for name, part, weight in (("first", slice(0, half), 3), ("second", slice(half, None), 1)):
        paths = {}
        for side, lines in sides.items():
            paths[side] = workdir / f"{name}.{side}"
            paths[side].write_text("\n".join(lines[part]) + "\n", encoding="utf-8")
        corpora.append(
            {"name": name, "source": str(paths["de"]), "target": str(paths["en"]), "weight": weight}
        )
    return corpora


def _run(name: str, changes: dict, steps: int, workdir: Path, data: Path) -> float:
    config = yaml.safe_load((ROOT / "configs/multi30k_de_en.yaml").read_text(encoding="utf-8"))
    config["data"]["splits"] = {
        "train": {"source": str(data / "train.de"), "target": str(data / "train.en")}
    }
    config["training"].update(steps=steps, log_every=50, eval_every=None, early_stopping=None)
    for section, values in changes.items():
        config[section].update(values)
    run_dir = workdir / f"run_{len(list(workdir.iterdir()))}"
    path = workdir / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    command = [sys.executable, "-m", "transformer_tf.cli", "train", str(path)]
    command += ["--run-dir", str(run_dir), "--no-progress"]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    records = [
        json.loads(line)
        for line in (run_dir / "train_log.jsonl").read_text().splitlines()
        if line.strip()
    ]
    rates = [r["tokens_per_second"] for r in records][1:]  # the first window holds the tracing
    return sum(rates) / len(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/multi30k")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mixture_bench_") as tmp:
        workdir = Path(tmp)
        data = args.data.resolve()
        corpora = _halves(data, workdir)
        runs = {
            "one corpus": {},
            "mixture 3:1": {"data": {"splits": {"train": corpora}}},
            "ema": {"training": {"ema_decay": 0.999}},
        }
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, changes in runs.items():
                rates[name].append(_run(name, changes, args.steps, workdir, data))
                print(f"{name}: {rates[name][-1]:.0f} target tokens/s", flush=True)
    base = sum(rates["one corpus"]) / len(rates["one corpus"])
    for name, values in rates.items():
        mean = sum(values) / len(values)
        print(f"{name:12s} {mean:8.0f} tokens/s  {mean / base:.3f} of one corpus  {values}")


if __name__ == "__main__":
    main()
