"""``training.mixed_precision: auto``: the decision table, the CPU description, the environment
pin, and what a training run records and builds with."""

from __future__ import annotations

import json
import logging

import pytest

from tests.fixtures import translation_config
from transformer_tf.assembly import load_run
from transformer_tf.config import config_from_dict
from transformer_tf.errors import UserError
from transformer_tf.precision import (
    AUTO_ENV,
    Hardware,
    PrecisionChoice,
    choose_precision,
    read_cpu,
    resolve_precision,
)
from transformer_tf.run import RunDir
from transformer_tf.training.trainer import build_trainer, training_precision


def cpu(*flags):
    return Hardware("cpu", "Some CPU", frozenset({"avx2", "fma", *flags}))


def gpus(*caps):
    return Hardware("gpu", "Some CPU", frozenset(), tuple(caps))


@pytest.mark.parametrize(
    ("hardware", "policy"),
    [
        (cpu(), "float32"),
        (cpu("avx512f", "avx512_vnni"), "float32"),  # AVX-512 without bfloat16: emulated
        (cpu("avx512f", "avx512_bf16"), "mixed_bfloat16"),
        (cpu("avx512f", "avx512_bf16", "amx_bf16", "amx_tile"), "mixed_bfloat16"),
        (cpu("amx_bf16"), "mixed_bfloat16"),
        (Hardware("tpu"), "mixed_bfloat16"),
        (gpus((9, 0)), "mixed_bfloat16"),  # H100
        (gpus((8, 0)), "mixed_bfloat16"),  # A100
        (gpus((8, 6), (8, 0)), "mixed_bfloat16"),
        (gpus((7, 0)), "mixed_float16"),  # V100
        (gpus((7, 5)), "mixed_float16"),  # T4
        (gpus((8, 0), (7, 0)), "mixed_float16"),  # the oldest GPU decides
        (gpus((6, 1)), "float32"),  # P40: no tensor cores
        (gpus(), "float32"),
    ],
)
def test_auto_follows_the_decision_table(hardware, policy):
    choice = choose_precision("auto", hardware)
    assert choice.policy == policy
    assert choice.requested == "auto"


def test_auto_reasons_name_what_decided():
    assert choose_precision("auto", cpu("avx512_bf16")).reason == (
        "the CPU executes bfloat16 natively (avx512_bf16)"
    )
    assert "no amx_bf16 or avx512_bf16" in choose_precision("auto", cpu()).reason
    assert choose_precision("auto", gpus((7, 5))).reason.startswith(
        "GPU compute capability 7.5 has float16 tensor cores but no bfloat16"
    )


@pytest.mark.parametrize(
    ("requested", "policy"),
    [("none", "float32"), ("mixed_float16", "mixed_float16"), ("mixed_bfloat16", "mixed_bfloat16")],
)
@pytest.mark.parametrize("hardware", [cpu(), cpu("amx_bf16"), gpus((7, 0)), Hardware("tpu")])
def test_an_explicit_mode_is_obeyed_on_any_hardware(requested, policy, hardware):
    choice = choose_precision(requested, hardware)
    assert (choice.policy, choice.reason) == (policy, f"training.mixed_precision is `{requested}`")


def test_the_environment_pins_auto_but_not_an_explicit_mode(monkeypatch):
    monkeypatch.setenv(AUTO_ENV, "mixed_bfloat16")
    assert resolve_precision("auto", cpu()).policy == "mixed_bfloat16"
    assert resolve_precision("none", cpu()).policy == "float32"
    monkeypatch.setenv(AUTO_ENV, "none")
    assert resolve_precision("auto", cpu("amx_bf16")).policy == "float32"
    monkeypatch.delenv(AUTO_ENV)
    assert resolve_precision("auto", cpu("amx_bf16")).policy == "mixed_bfloat16"
    monkeypatch.setenv(AUTO_ENV, "bf16")
    with pytest.raises(UserError, match="TRANSFORMER_TF_AUTO_PRECISION='bf16' is not one of"):
        resolve_precision("auto", cpu())


def test_read_cpu_takes_the_model_and_flags_of_the_first_cpu(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n"
        "flags\t\t: fpu avx512f AVX512_BF16 avx512_vnni\n\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu amx_bf16\n"
    )
    model, flags = read_cpu(cpuinfo)
    assert model == "AMD EPYC 9R14"
    assert flags == frozenset({"fpu", "avx512f", "avx512_bf16", "avx512_vnni"})
    assert choose_precision("auto", Hardware("cpu", model, flags)).policy == "mixed_bfloat16"
    assert read_cpu(tmp_path / "missing") == ("", frozenset())


def _config(**training):
    raw = translation_config(training={"steps": 2, "eval_every": None, **training})
    return config_from_dict(raw)


def test_training_records_and_logs_the_choice_and_builds_with_it(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(AUTO_ENV, "mixed_bfloat16")
    with caplog.at_level(logging.INFO, logger="transformer_tf.training.trainer"):
        trainer = build_trainer(_config(), tmp_path / "run", show_progress=False)
    assert any(
        r.getMessage().startswith(
            f"precision: mixed_bfloat16 (auto: {AUTO_ENV}=mixed_bfloat16 in the environment; CPU "
        )
        for r in caplog.records
    )
    assert trainer.model.dtype_policy.name == "mixed_bfloat16"
    assert trainer.precision.policy == "mixed_bfloat16"
    record = json.loads((tmp_path / "run" / "precision.json").read_text())
    assert record["requested"] == "auto" and record["policy"] == "mixed_bfloat16"
    assert record["hardware"].startswith("CPU ")
    assert trainer.precision.describe() == (
        f"mixed_bfloat16 (auto: {AUTO_ENV}=mixed_bfloat16 in the environment; {record['hardware']})"
    )
    trainer.train()
    # evaluate/translate resolve `auto` on their own machine: here pinned to float32.
    monkeypatch.setenv(AUTO_ENV, "none")
    assert load_run(tmp_path / "run").model.dtype_policy.name == "float32"


def test_a_resumed_run_keeps_float16_loss_scaling_from_its_start(tmp_path):
    run = RunDir(tmp_path / "run")
    config = _config()
    run.path.mkdir()
    run.write_config(config)
    record = PrecisionChoice("auto", "mixed_float16", "GPU compute capability 7.0 ...").record()
    run.write_precision(record)
    choice = training_precision(config, run, "cpu", hardware=cpu("amx_bf16"))
    assert choice.policy == "mixed_float16"
    assert "its checkpoints hold a float16 loss scale" in choice.reason
    # bfloat16 <-> float32 needs no such care: the hardware at hand decides.
    run.write_precision(PrecisionChoice("auto", "mixed_bfloat16", "AMX").record())
    assert training_precision(config, run, "cpu", hardware=cpu()).policy == "float32"
    # An explicit mode is obeyed even then.
    run.write_precision(record)
    forced = _config(mixed_precision="none")
    assert training_precision(forced, run, "cpu", hardware=cpu()).policy == "float32"
