import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# `training.mixed_precision: auto` follows the CPU (bfloat16 on AMX / avx512_bf16): pin it to
# float32 so that the suite's numbers do not depend on the machine it runs on. Subprocesses
# inherit it. tests/test_precision.py tests the hardware decision itself.
os.environ.setdefault("TRANSFORMER_TF_AUTO_PRECISION", "none")
# TensorFlow's own kernels rather than oneDNN's (its default on x86): oneDNN prepares a primitive
# for each new shape, which the suite's tiny models and many bucket shapes pay again and again.
# Side by side on an Intel Xeon with AMX (2 cores), the whole suite took 484.8 s of pytest and
# 862 s of user CPU without oneDNN, 521.8 s and 928 s with it. No test asserts anything a kernel
# library decides; `make demo` and the benchmarks run with oneDNN, and
# `TF_ENABLE_ONEDNN_OPTS=1 make test` runs the suite with it. Subprocesses inherit it.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Under pytest-xdist (`make test`: one worker per core) each worker's TensorFlow would start one
# intra-op thread per core of the machine: share the cores out instead. 193 s against 200-213 s
# for a slice of the suite on 2 cores. Subprocesses inherit it.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))

import keras  # noqa: E402
import pytest  # noqa: E402

# Fixtures of trained runs shared across files (defined here once: one training per process).
from tests.shared_runs import load_each_run_once, toy_translation_run  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


# -- toy runs shared by the test files (trained once per xdist worker) --------------------------


@pytest.fixture(scope="session")
def shared_imdb(tmp_path_factory):
    """The generated aclImdb folder (tests.fixtures.make_imdb_folder, 60 reviews per class)."""
    from tests.fixtures import make_imdb_folder

    return make_imdb_folder(tmp_path_factory.mktemp("shared_imdb"))


@pytest.fixture(scope="session")
def classification_run(shared_imdb, tmp_path_factory):
    """A finished run of ``classification_config(shared_imdb, keep_checkpoints=3)``: 30 steps,
    checkpoints 10, 20 and 30 kept, validated every 10 steps. Read it, or copy it
    (shutil.copytree) before writing to it."""
    from tests.fixtures import classification_config
    from transformer_tf.config import config_from_dict
    from transformer_tf.training.trainer import train

    run_dir = tmp_path_factory.mktemp("classification_run") / "run"
    config = config_from_dict(classification_config(shared_imdb, keep_checkpoints=3))
    train(config, run_dir, show_progress=False)
    return run_dir


# -- scheduling under pytest-xdist ---------------------------------------------------------------

# `make test` hands whole files to the two workers (--dist loadfile), by default those with the
# most tests first, which leaves the files of a few long tests (the distributed ones) to the end,
# where one worker runs them while the other has finished. Longest first instead: the files that
# took the longest (seconds of setup and calls under `make test`, measured with this order on an
# Intel Xeon with AMX, 2 cores: the first ones run beside each other, so they read long), then
# every other file in collection order. A rough order is enough: it only has to put the long
# files before the many short ones that fill the gaps.
LONGEST_FILES = (
    "training/test_distributed.py",  # 59
    "training/test_positions.py",  # 59
    "training/test_multi_worker.py",  # 53
    "training/test_engine.py",  # 73 (beside the two before: it waits for the CPU)
    "importing/test_import.py",  # 57
    "inference/test_ensemble.py",  # 53
    "test_run_integrity.py",  # 47
    "training/test_mixed_precision.py",  # 42
    "test_pretraining.py",  # 40
    "test_extending.py",  # 39
    "training/test_update.py",  # 36
    "training/test_batch_size.py",  # 35
    "training/test_ema.py",  # 35
    "test_translation_cli.py",  # 35
    "test_init_from.py",  # 34
    "test_cli_quiet.py",  # 34
    "models/test_seq2seq.py",  # 32
    "test_backends.py",  # 32
    "data/test_streaming.py",  # 29
    "inference/test_search.py",  # 26
)


def pytest_configure(config):
    # xdist's own reordering (by number of tests) would undo the order below.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).parent
    rank = {str(tests / name): index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(str(item.path), len(rank)))  # stable: files stay whole
