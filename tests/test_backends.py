"""The layers and models run under Keras' JAX and PyTorch backends, not only TensorFlow.

Keras fixes its backend at import, and this test process has imported it with TensorFlow, so each
backend runs ``tests/backend_check.py`` in a fresh interpreter. That script prints ``OK <check>``
per check; every one must be present, so a check that silently stopped running fails here too.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "backend_check.py"

EXPECTED = (
    "backend",
    "no_tensorflow",
    "seq2seq_forward",
    "classifier_forward",
    "masked_lm_forward",
    "causality",
    "seq2seq_source_padding",
    "classifier_padding",
    "seq2seq_fit",
    "classifier_fit",
    "cached_decoding",
    "seq2seq_keras_round_trip",
    "classifier_keras_round_trip",
    "relative_positions",
    "rotary_positions",
)


def run_checks(backend: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(ROOT),
        # The checks are about the backend, not a device: keep them on the CPU everywhere.
        "CUDA_VISIBLE_DEVICES": "",
    }
    if backend == "jax":
        # JAX compiles each new operation shape with XLA; the checks run hundreds of tiny ones
        # once each, so compile them quickly rather than well (49 s -> 35 s on a 2-core CPU).
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = (
            "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
        )
    return subprocess.run(
        [sys.executable, str(SCRIPT), backend],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_layers_and_models_under_backend(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    result = run_checks(backend)
    report = f"stdout:\n{result.stdout}\nstderr (tail):\n{result.stderr[-4000:]}"
    assert result.returncode == 0, report
    passed = [line[3:] for line in result.stdout.splitlines() if line.startswith("OK ")]
    assert passed == list(EXPECTED), report
