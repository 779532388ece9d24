import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# `training.mixed_precision: auto` follows the CPU (bfloat16 on AMX / avx512_bf16): pin it to
# float32 so that the suite's numbers do not depend on the machine it runs on. Subprocesses
# inherit it. tests/test_precision.py tests the hardware decision itself.
os.environ.setdefault("TRANSFORMER_TF_AUTO_PRECISION", "none")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
