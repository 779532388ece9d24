"""Trained toy runs shared by several test files (session fixtures: trained once per xdist worker).

Import a fixture into a test file with ``from tests.shared_runs import NAME  # noqa: F401``. The
runs are read-only: a test that writes into one copies it first (``shutil.copytree``).
"""

from __future__ import annotations

import pytest

# The toy translation run of the inference tests (translate, evaluate, alignments, exports).
# data.max_length 16: sources keep 15 tokens, so that test sentences of the toy task (4 to 20
# tokens) are cut, which tests/test_translate_cli.py needs; decoding.beam_size 3: the n-best
# lists of tests/test_translate_cli.py. 60 steps: a model that is not degenerate (varied
# translations of varied lengths, tests/inference/test_ctranslate2.py). Checkpoints every 10
# steps (the last five kept: 20 to 60). Validation without decoding: no test of this run asserts
# anything about its validation (tests/test_translation_cli.py tests validation decoding on runs
# of its own).
TOY_MAX_LENGTH = 16
TOY_BEAM_SIZE = 3
TOY_STEPS = 60


def toy_translation_raw_config() -> dict:
    from tests.fixtures import translation_config

    raw = translation_config(
        data={"max_length": TOY_MAX_LENGTH},
        training={"steps": TOY_STEPS, "checkpoint_every": 10, "eval_every": 10},
        decoding={"beam_size": TOY_BEAM_SIZE},
    )
    raw["training"]["validation"] = {"decode": False}
    return raw


# Each test module that imports a fixture gets a fixture definition of its own, which would train
# again: the runs are kept here, once per process (per xdist worker), for the whole session.
_TRAINED: dict[str, object] = {}


@pytest.fixture(scope="session")
def toy_translation_run(tmp_path_factory):
    """A finished run of :func:`toy_translation_raw_config`, trained through the CLI."""
    from tests.fixtures import write_config
    from transformer_tf.cli import main

    if "toy_translation" not in _TRAINED:
        root = tmp_path_factory.mktemp("shared_toy_translation")
        config = write_config(root / "toy.yaml", toy_translation_raw_config())
        assert main(["train", str(config), "--run-dir", str(root / "run"), "--no-progress"]) == 0
        _TRAINED["toy_translation"] = root / "run"
    return _TRAINED["toy_translation"]
