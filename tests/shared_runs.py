"""Trained toy runs shared by several test files (session fixtures: trained once per xdist worker).

tests/conftest.py makes the fixtures available to every test file (defined there once, so a
session fixture runs once per process, not once per module). The runs are read-only: a test
that writes into one copies it first (``shutil.copytree``).
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


@pytest.fixture(scope="session")
def toy_translation_run(tmp_path_factory):
    """A finished run of :func:`toy_translation_raw_config`, trained through the CLI."""
    from tests.fixtures import train_through_cli

    root = tmp_path_factory.mktemp("shared_toy_translation")
    return train_through_cli(root, toy_translation_raw_config())


@pytest.fixture(scope="module")
def load_each_run_once():
    """Within a test module, ``transformer_tf.assembly.load_run`` called again with the same
    arguments (run directory, checkpoint, overrides, ...) gives the run it loaded the first time:
    the same model object, so the decoders it traced are reused (``make_decoder`` keeps one per
    model and options) instead of traced again by every ``translate`` command.

    The first call with each set of arguments is a real load, through the CLI where the test
    calls the CLI; loading is deterministic, so what the tests compare is unchanged. Only for
    runs that no test of the module writes to (a cached load would not see a new checkpoint).
    Use it with ``pytestmark = pytest.mark.usefixtures("load_each_run_once")``.
    """
    from pathlib import Path

    from transformer_tf import assembly

    load_run = assembly.load_run
    loaded = {}

    def load_run_once(run_dir, **kwargs):
        key = (str(Path(run_dir).resolve()), repr(sorted(kwargs.items())))
        if key not in loaded:
            loaded[key] = load_run(run_dir, **kwargs)
        return loaded[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assembly, "load_run", load_run_once)
        yield
