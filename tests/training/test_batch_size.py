"""``training.batch_size: auto`` and ``training.effective_batch_size``: the search with an injected
memory limit, the accumulation, the CPU default, the run's record and its reuse on resume."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

from tests.fixtures import classification_config, translation_config, write_config
from transformer_tf.assembly import assemble, load_run
from transformer_tf.cli import main
from transformer_tf.config import config_from_dict
from transformer_tf.errors import UserError
from transformer_tf.run import RunDir
from transformer_tf.training import batch_size
from transformer_tf.training.batch_size import (
    BatchChoice,
    MemoryProbe,
    choose_batch,
    largest_fitting,
    max_tries,
    split_effective,
)
from transformer_tf.training.trainer import build_trainer


def _training(**keys):
    raw = translation_config(training={"batch_type": "tokens", "batch_size": "auto", **keys})
    return config_from_dict(raw).training


# -- the search ---------------------------------------------------------------------------------


def test_the_search_finds_the_largest_fitting_multiple_and_keeps_the_margin():
    result = largest_fitting(lambda b: b <= 5000, start=1024, cap=16384, granularity=128)
    assert result.tries == (
        (1024, True), (2048, True), (4096, True), (8192, False), (6144, False), (5120, False),
        (4608, True), (4864, True), (4992, True),
    )  # fmt: skip
    # 4992 = 39 x 128 is the largest multiple of 128 <= 5000; 0.9 x 4992 = 4492.8 -> 35 x 128.
    assert (result.largest, result.chosen, result.capped) == (4992, 4480, False)
    assert max_tries(1024, 16384, 128) == 11


@pytest.mark.parametrize("limit", [130, 700, 1023, 1024, 3000, 5000, 8191, 12345, 16383])
def test_the_search_is_exact_to_the_granularity_and_bounded(limit):
    result = largest_fitting(lambda b: b <= limit, start=1024, cap=16384, granularity=128)
    largest = limit // 128 * 128
    assert result.largest == largest
    assert result.chosen == max(128, int(largest * 0.9) // 128 * 128)
    assert len(result.tries) <= max_tries(1024, 16384, 128)
    assert len({size for size, _ in result.tries}) == len(result.tries)  # no size tried twice


def test_the_search_when_the_first_try_fails():
    result = largest_fitting(lambda b: b <= 700, start=1024, cap=16384, granularity=128)
    assert result.tries == ((1024, False), (512, True), (768, False), (640, True))
    # 0.9 x 640 = 576 -> 512.
    assert (result.largest, result.chosen) == (640, 512)


def test_a_cap_that_fits_is_used_whole_and_nothing_fitting_is_zero():
    result = largest_fitting(lambda b: True, start=1024, cap=4099, granularity=128)
    assert result.tries == ((1024, True), (2048, True), (4096, True), (4099, True))
    assert (result.largest, result.chosen, result.capped) == (4099, 4099, True)
    result = largest_fitting(lambda b: False, start=1024, cap=16384, granularity=128)
    assert (result.largest, result.chosen) == (0, 0)
    assert [size for size, _ in result.tries] == [1024, 512, 256, 128]


# -- the accumulation ---------------------------------------------------------------------------


def test_the_accumulation_makes_the_global_batch_the_requested_one():
    # ceil(4096 / 1500) = 3 does not divide 4096; 4 does: 4 x 1024.
    assert split_effective(4096, 1500) == (1024, 4)
    assert split_effective(4096, 4096) == (4096, 1)
    assert split_effective(4096, 5000) == (4096, 1)
    # ceil(25000 / 3072) = 9 does not divide 25000; 10 does.
    assert split_effective(25000, 3072) == (2500, 10)
    # 4099 is prime: no accumulation of 3..5 divides it; 3 x 1366 = 4098, short by 1 (< 3).
    assert split_effective(4099, 1500) == (1366, 3)


def test_auto_with_a_fake_memory_limit_searches_and_accumulates_to_the_effective_batch():
    choice = choose_batch(_training(effective_batch_size=4096), fits=lambda b: b <= 1700)
    # Tries 1024, 2048 (no), 1536, 1792 (no), 1664: 0.9 x 1664 = 1497.6 -> 1408 fits;
    # ceil(4096 / 1408) = 3 does not divide 4096, 4 does.
    assert choice.search["tries"] == [
        [1024, True], [2048, False], [1536, True], [1792, False], [1664, True],
    ]  # fmt: skip
    assert (choice.batch_size, choice.accumulation, choice.global_batch) == (1024, 4, 4096)
    assert choice.reason == (
        "the largest batch that fit was 1664 tokens (5 tries); 90% of it kept as a margin; "
        "training.effective_batch_size 4096 = 4 x 1024"
    )
    # The effective batch bounds the search: when it fits, it is one batch.
    choice = choose_batch(_training(effective_batch_size=4096), fits=lambda b: b <= 5000)
    assert (choice.batch_size, choice.accumulation) == (4096, 1)
    assert [size for size, _ in choice.search["tries"]] == [1024, 2048, 4096]


def test_the_search_counts_per_replica_on_several_replicas():
    choice = choose_batch(_training(), num_replicas=2, fits=lambda b: b <= 5000)
    # Start 2048, granularity 256, cap 32768: largest 4864 (19 x 256); 0.9 x 4864 -> 4352.
    assert choice.search["tries"][:3] == [[2048, True], [4096, True], [8192, False]]
    assert (choice.search["largest"], choice.batch_size, choice.accumulation) == (4864, 4352, 1)


def test_numbers_cpu_and_nothing_fitting():
    numeric = choose_batch(_training(batch_size=1500, effective_batch_size=4096))
    assert (numeric.batch_size, numeric.accumulation, numeric.global_batch) == (1500, 3, 4500)
    assert numeric.describe() == (
        "1500 tokens x 3 accumulated = 4500 tokens per update (training.effective_batch_size "
        "4096 / training.batch_size 1500, rounded up)"
    )
    plain = choose_batch(_training(batch_size=64, batch_type="examples", gradient_accumulation=2))
    assert plain.describe() == (
        "64 examples x 2 accumulated = 128 examples per update (training.batch_size)"
    )
    cpu = choose_batch(_training())
    assert cpu.describe() == (
        "2048 tokens per update (auto: CPU, no device memory to probe: the CPU default of 2048 "
        "tokens; set training.batch_size to a number to override)"
    )
    cpu = choose_batch(_training(effective_batch_size=4096))
    assert (cpu.batch_size, cpu.accumulation) == (2048, 2)
    with pytest.raises(UserError) as excinfo:
        choose_batch(_training(), fits=lambda b: False, device="1 GPU(s)")
    assert str(excinfo.value) == (
        "training.batch_size: auto: not even 128 tokens (128 per replica, in examples of "
        "data.max_length tokens) train in device memory (1 GPU(s)); make the model or "
        "data.max_length smaller"
    )


def test_out_of_memory_errors_and_the_agreement_of_workers():
    from transformer_tf.training.batch_size import _out_of_memory, agreement

    assert _out_of_memory(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating"))
    assert _out_of_memory(tf.errors.InternalError(None, None, "RESOURCE_EXHAUSTED: XLA"))
    assert not _out_of_memory(tf.errors.InternalError(None, None, "cuDNN failed"))
    agree = agreement(tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert (agree(True), agree(False)) == (True, False)


@pytest.mark.parametrize("task", ["translation", "classification"])
def test_a_try_runs_the_worst_case_batch_and_leaves_the_model_as_it_was(
    task, shared_imdb, tmp_path
):
    if task == "translation":
        raw = translation_config(
            model={"dropout": 0.1}, data={"max_length": 40}, training={"ema_decay": 0.99}
        )
        shape = (25, 40)  # 1000 tokens of 40-token examples
    else:
        raw = classification_config(shared_imdb, batch_type="tokens")
        raw["model"]["dropout"] = 0.1
        shape = (20, 48)  # data.max_length 48
    config = config_from_dict(raw)
    assembly = assemble(config, RunDir(tmp_path / "run"), create=True)
    inputs, labels = assembly.task.probe_batch(1000)
    ids = inputs["source"] if task == "translation" else inputs
    assert tuple(ids.shape) == shape
    state = [v.numpy() for v in assembly.model.non_trainable_variables]
    weights = [w.numpy() for w in assembly.model.weights]
    probe = MemoryProbe(
        tf.distribute.get_strategy(), assembly.model, assembly.task, config.training
    )
    assert probe(1000) and probe(3000)
    assert any(  # the dropout seeds moved ...
        (a != v.numpy()).any()
        for a, v in zip(state, assembly.model.non_trainable_variables, strict=True)
    )
    probe.close()
    for before, variable in zip(state, assembly.model.non_trainable_variables, strict=True):
        assert (before == variable.numpy()).all()  # ... and are back
    for before, weight in zip(weights, assembly.model.weights, strict=True):
        assert (before == weight.numpy()).all()


# -- in training ----------------------------------------------------------------------------


def _auto_config(**training):
    return config_from_dict(
        translation_config(
            training={
                "batch_type": "tokens",
                "batch_size": "auto",
                "steps": 2,
                "eval_every": None,
                "log_every": 1,
                "checkpoint_every": 2,
                "validation": {"decode": False},
                **training,
            }
        )
    )


def test_auto_on_a_cpu_takes_the_default_and_a_resume_keeps_the_record(tmp_path, capsys):
    run_dir = tmp_path / "run"
    path = write_config(tmp_path / "auto.yaml", _auto_config().model_dump(mode="json"))
    assert main(["train", str(path), "--run-dir", str(run_dir), "--no-progress"]) == 0
    assert (
        "batch size: 2048 tokens per update (auto: CPU, no device memory to probe: the CPU "
        "default of 2048 tokens; set training.batch_size to a number to override)\n"
    ) in capsys.readouterr().out
    record = json.loads((run_dir / "batch_size.json").read_text())
    assert record == {
        "requested": "auto",
        "batch_size": 2048,
        "gradient_accumulation": 1,
        "effective_batch_size": None,
        "global_batch": 2048,
        "unit": "tokens",
        "reason": "CPU, no device memory to probe: the CPU default of 2048 tokens; set "
        "training.batch_size to a number to override",
        "search": None,
    }
    assert "batch_size: auto" in (run_dir / "config.yaml").read_text()
    # evaluate, translate and export size their batches by the record.
    assert load_run(run_dir).config.training.batch_size == 2048
    # A resumed run reads the record back (here edited, to tell it from the default).
    (run_dir / "batch_size.json").write_text(json.dumps({**record, "batch_size": 1536}))
    resumed = build_trainer(_auto_config(steps=4), run_dir, show_progress=False)
    assert (resumed.batch.batch_size, resumed.config.training.batch_size) == (1536, 1536)
    assert resumed.batch.reason.startswith("kept from the run's start (CPU, no device memory")
    assert resumed.train().step == 4
    assert json.loads((run_dir / "batch_size.json").read_text())["batch_size"] == 1536


@pytest.fixture
def fake_device_memory(monkeypatch):
    """The search runs on the CPU as on a GPU, with real tries, and a try of more than
    ``limit[0]`` tokens raises the out-of-memory error of a GPU."""
    limit = [1700]
    tried = []
    monkeypatch.setattr(batch_size, "on_gpus", lambda strategy: True)
    real_run = MemoryProbe.run

    def run(self, tokens):
        tried.append(tokens)
        if tokens > limit[0]:
            raise tf.errors.ResourceExhaustedError(None, None, f"OOM allocating {tokens}")
        real_run(self, tokens)

    monkeypatch.setattr(MemoryProbe, "run", run)
    return limit, tried


def test_auto_with_a_fake_memory_limit_trains_as_the_number_it_found(tmp_path, fake_device_memory):
    _, tried = fake_device_memory
    run_dir = tmp_path / "auto"
    config = _auto_config(effective_batch_size=4096)
    trainer = build_trainer(config, run_dir, show_progress=False)
    assert tried == [1024, 2048, 1536, 1792, 1664]
    assert (trainer.batch.batch_size, trainer.batch.accumulation) == (1024, 4)
    training = trainer.config.training
    assert (training.batch_size, training.gradient_accumulation) == (1024, 4)
    record = json.loads((run_dir / "batch_size.json").read_text())
    assert (record["batch_size"], record["gradient_accumulation"], record["global_batch"]) == (
        1024,
        4,
        4096,
    )
    assert record["search"] == {
        "tries": [[1024, True], [2048, False], [1536, True], [1792, False], [1664, True]],
        "largest": 1664,
        "cap": 4096,
        "granularity": 128,
        "margin": 0.9,
    }
    trainer.train()
    # The same run given those numbers: the tries left the model as they found it.
    numbers = _auto_config(batch_size=1024, gradient_accumulation=4)
    build_trainer(numbers, tmp_path / "numbers", show_progress=False).train()
    logs = [
        [json.loads(line)["loss"] for line in (tmp_path / name / "train_log.jsonl").open()]
        for name in ("auto", "numbers")
    ]
    assert len(logs[0]) == 2 and logs[0] == logs[1]
    # Resumed, the run searches no more.
    tried.clear()
    resumed = build_trainer(
        _auto_config(effective_batch_size=4096, steps=3), run_dir, show_progress=False
    )
    assert tried == []
    assert (resumed.batch.batch_size, resumed.batch.accumulation) == (1024, 4)


def test_the_record_answers_only_the_same_request():
    training = _training(effective_batch_size=4096)
    choice = choose_batch(training)
    assert BatchChoice.from_record(choice.record()) == choice
    assert choice.answers(training)
    assert not choice.answers(_training(effective_batch_size=8192))
    assert not choice.answers(_training(batch_size=1024, effective_batch_size=4096))
