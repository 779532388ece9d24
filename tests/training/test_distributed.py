"""tf.distribute for real on CPUs: 2 mirrored replicas (tests/training/test_multi_worker.py: 2
worker processes).

Logical CPU devices must be configured before TensorFlow initialises, so these tests run their
training in a fresh subprocess.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import (
    classification_config,
    make_imdb_folder,
    script_result,
    translation_config,
)
from tests.training.test_update import _assert_union

ROOT = Path(__file__).resolve().parents[2]

# One fresh process (one TensorFlow start-up) for every mirrored check of the suite: the curves
# of each case on one device and on two replicas (the seq2seq case keeps moving averages, so
# its two runs also give the EMA comparison), then test_update's accumulation and all-reduce
# measurements on two replicas.
MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    from tests.training import test_update
    from transformer_tf.config import config_from_dict
    from transformer_tf.training.trainer import build_trainer

    raws, out = json.loads(sys.argv[1]), sys.argv[2]
    mirrored = {"strategy": "mirrored", "devices": ["/cpu:0", "/cpu:1"]}
    curves = {}
    for case, raw in raws.items():
        curves[case] = {}
        for name, distribute in [("single", {"strategy": "cpu"}), ("mirrored", mirrored)]:
            config = config_from_dict({**raw, "distribute": distribute})
            run_dir = f"{out}/{case}/{name}"
            trainer = build_trainer(config, run_dir, show_progress=False)
            if case == "seq2seq" and name == "mirrored":
                count1 = test_update.record_reductions(trainer)
            result = trainer.train()
            lines = open(f"{run_dir}/train_log.jsonl").read().splitlines()
            curve = curves[case][name] = {
                "losses": [json.loads(line)["loss"] for line in lines],
                "validation": result.validation[-1]["loss"],
                "checksum": float(sum(np.abs(w.numpy().astype("float64")).sum()
                                      for w in trainer.model.weights)),
            }
            if trainer.ema is not None:
                if name == "mirrored":
                    # Every replica holds the same averages.
                    for average in trainer.ema.averages:
                        first, second = trainer.strategy.experimental_local_results(average)
                        assert (first.numpy() == second.numpy()).all(), average.name
                curve["ema"] = {
                    "averages": [a.numpy().tolist() for a in trainer.ema.averages],
                    "weights": [v.numpy().tolist() for v in trainer.model.trainable_variables],
                    "num_updates": int(trainer.ema.num_updates.numpy()),
                    "names": [v.path for v in trainer.model.trainable_variables],
                }
    union = test_update.accumulation_vs_union(out + "/union", mirrored)
    # The reductions traced into the loops of the mirrored seq2seq run (no accumulation) and of
    # the accumulating side of `union` (2 micro-batches).
    result = {"curves": curves, "union": union, "count1": count1,
              "count2": union.pop("reductions")}  # fmt: skip
    print("MIRRORED " + json.dumps(result))
    """
)

MIRRORED_STEPS = 15
EMA_DECAY = 0.5


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory):
    """Every mirrored measurement, in one subprocess: three curve cases (a classifier, seq2seq
    with sentence batches and moving averages, seq2seq with token batches), each trained on one
    device and on two replicas, and test_update's accumulation and reduction counts."""
    root = tmp_path_factory.mktemp("mirrored")
    imdb = make_imdb_folder(root / "imdb")
    # Nothing below asserts on decoding: validation scores the loss only.
    short = {"steps": MIRRORED_STEPS, "eval_every": MIRRORED_STEPS,
             "checkpoint_every": MIRRORED_STEPS, "validation": {"decode": False}}  # fmt: skip
    raws = {
        "classifier": classification_config(
            imdb, steps=15, eval_every=None, checkpoint_every=15, batch_size=15
        ),
        # The moving averages change no update (the curve is the same); validation scores
        # them on both sides.
        "seq2seq": translation_config(training={**short, "ema_decay": EMA_DECAY}),
        # A 40-token budget gives batches of 1 to 5 sentences: odd sizes split unevenly over the
        # two replicas, and a 1-sentence batch leaves one replica with an empty batch.
        "token_batches": translation_config(
            training={**short, "batch_size": 40, "batch_type": "tokens"}
        ),
    }
    return script_result(
        MIRRORED_SCRIPT, json.dumps(raws), str(root / "runs"), prefix="MIRRORED", timeout=900
    )


def _assert_same_curve(curves):
    single, mirrored = curves["single"], curves["mirrored"]
    # Same global batch, loss normalised by the global count: the same updates up to float
    # summation order. Tolerance: 1e-4 relative over the whole curve.
    assert len(single["losses"]) == len(mirrored["losses"]) >= 3
    np.testing.assert_allclose(mirrored["losses"], single["losses"], rtol=1e-4)
    assert mirrored["validation"] == pytest.approx(single["validation"], rel=1e-4)
    assert mirrored["checksum"] == pytest.approx(single["checksum"], rel=1e-5)


def test_two_mirrored_replicas_follow_the_single_device_curve_classifier(two_replicas):
    _assert_same_curve(two_replicas["curves"]["classifier"])


def test_two_mirrored_replicas_follow_the_single_device_curve_seq2seq(two_replicas):
    _assert_same_curve(two_replicas["curves"]["seq2seq"])


def test_two_mirrored_replicas_follow_the_single_device_curve_token_batches(two_replicas):
    _assert_same_curve(two_replicas["curves"]["token_batches"])


# (from tests/training/test_ema.py: the seq2seq case keeps moving averages)
def test_two_mirrored_replicas_give_the_single_device_averages(two_replicas):
    curves = two_replicas["curves"]["seq2seq"]
    single, mirrored = curves["single"]["ema"], curves["mirrored"]["ema"]
    assert single["num_updates"] == mirrored["num_updates"] == MIRRORED_STEPS
    # An attention key's bias has a gradient that is zero but for rounding (softmax ignores a
    # shift of all its scores), which Adam scales up to steps of the learning rate in a
    # direction set by the summation order: those weights themselves differ between one and
    # two replicas, so their averages are not compared.
    compared = 0
    for name, got, expected in zip(
        single["names"], mirrored["averages"], single["averages"], strict=True
    ):
        if name.endswith("key/bias"):
            continue
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7, err_msg=name)
        compared += 1
    assert compared >= len(single["names"]) - 3
    # The averages are not the weights.
    assert not np.allclose(single["averages"][0], single["weights"][0], rtol=1e-4)


# (from tests/training/test_update.py)
def test_accumulated_micro_batches_equal_their_union_on_two_replicas(two_replicas):
    _assert_union(two_replicas["union"])


# (from tests/training/test_update.py)
@pytest.mark.parametrize("accumulation", [1, 2])
def test_one_all_reduce_of_one_gradient_copy_per_update(two_replicas, accumulation):
    result = two_replicas[f"count{accumulation}"]
    # The whole loop traces one update (its while body): one reduction, of every gradient
    # plus the (loss sum, count) pair packed in the same call; nothing else is reduced.
    assert result["calls"] == [
        ["batch_reduce_to", 1 + result["variables"], result["gradient_bytes"] + 8]
    ]
