import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# `training.mixed_precision: auto` follows the CPU (bfloat16 on AMX / avx512_bf16): pin it to
# float32 so that the suite's numbers do not depend on the machine it runs on. Subprocesses
# inherit it. tests/test_precision.py tests the hardware decision itself.
os.environ.setdefault("TRANSFORMER_TF_AUTO_PRECISION", "none")
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
