"""The run directory and the assembly: the model's recorded shape, and what an override may do.

A derived length used to be re-derived from the overridden config at every load, so
`evaluate RUN --set decoding.max_length=600` on a run with learned positions ended in a
TensorFlow shape error (exit 1, traceback). The built arguments are now recorded with the run.
"""

from __future__ import annotations

import json

import keras
import pytest

from tests.fixtures import classification_config, make_imdb_folder, translation_config, write_config
from transformer_tf.assembly import assemble, load_run
from transformer_tf.cli import main
from transformer_tf.config import config_from_dict, load_config
from transformer_tf.errors import UserError
from transformer_tf.run import RunDir

# model.max_length 16 is below what the data (64 tokens + EOS) and decoding (40 + 1) need: the
# model gets max(16, 65, 41) = 65 positions.
POSITIONS = 65


def _train(root, positional_encoding):
    raw = translation_config(
        model={"max_length": 16, "positional_encoding": positional_encoding},
        training={"steps": 2, "checkpoint_every": 2, "eval_every": 1000},
    )
    config = write_config(root / f"{positional_encoding}.yaml", raw)
    run_dir = root / positional_encoding
    assert main(["train", str(config), "--run-dir", str(run_dir), "--no-progress"]) == 0
    return run_dir


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("learned"), "learned")


@pytest.fixture(scope="module")
def sinusoidal_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("sinusoidal"), "sinusoidal")


def test_the_built_arguments_are_recorded(learned_run):
    record = json.loads((learned_run / "model_args.json").read_text())
    assert record["name"] == "seq2seq_transformer"
    arguments = record["arguments"]
    assert arguments["max_length"] == POSITIONS
    assert arguments["positional_encoding"] == "learned"
    run = load_run(learned_run)
    assert arguments["source_vocab_size"] == run.task.source_tokenizer.vocab_size
    assert arguments["target_vocab_size"] == run.task.target_tokenizer.vocab_size
    # The model is built from the record: the same arguments, the same position table.
    config = run.model.get_config()
    assert {k: config[k] for k in arguments} == arguments
    table = run.model.target_embedding.position_encoding.position_embeddings
    assert tuple(table.shape) == (POSITIONS, 32)


def test_decoding_longer_than_a_learned_table_is_a_clear_error(learned_run, capsys):
    code = main(
        ["evaluate", str(learned_run), "--split", "test", "--set", "decoding.max_length=600"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert (
        f"decoding.max_length=600 needs 601 positions, but the model of {learned_run} was built "
        f"with {POSITIONS}" in err
    )
    assert "use decoding.max_length <= 64" in err


def test_a_shorter_decoding_limit_uses_the_recorded_shape(learned_run):
    # Re-deriving from the override would give max(16, 65, 11) = 65 here too, so shrink the data
    # length as well: derived, the table would have 33 rows and the checkpoint would not load.
    run = load_run(learned_run, overrides=["decoding.max_length=10", "data.max_length=32"])
    assert run.model.target_embedding.position_encoding.max_length == POSITIONS


def test_decoding_longer_than_the_sinusoidal_table_works(sinusoidal_run, capsys):
    assert (
        main(
            [
                "translate",
                str(sinusoidal_run),
                "--set",
                "decoding.max_length=600",
                "--beam-size",
                "1",
                "the big dog sees a cat",
            ]
        )
        == 0
    )
    assert len(capsys.readouterr().out.splitlines()) == 1
    run = load_run(sinusoidal_run, overrides=["decoding.max_length=600"])
    assert run.model.target_embedding.position_encoding.max_length == 601


def test_a_run_without_a_record_derives_its_shape_from_its_saved_config(tmp_path, learned_run):
    # Runs written before model_args.json: the shape comes from their config.yaml, never from
    # the overrides of the command.
    import shutil

    old = tmp_path / "old"
    shutil.copytree(learned_run, old)
    (old / "model_args.json").unlink()
    run = load_run(old, overrides=["data.max_length=32"])
    assert run.model.target_embedding.position_encoding.max_length == POSITIONS
    with pytest.raises(UserError, match="decoding.max_length=100 needs 101 positions"):
        load_run(old, overrides=["decoding.max_length=100"])
    assert not (old / "model_args.json").exists()  # reading a run never writes into it


def test_a_model_change_through_set_is_refused(learned_run):
    with pytest.raises(UserError, match=r"--set cannot change the model.*model.d_model"):
        load_run(learned_run, overrides=["model.d_model=64"])


@pytest.mark.parametrize(
    "key", ["data.split_seed=7", "data.validation_fraction=0.2", "data.max_length=64",
            "data.truncation=tail"],
)  # fmt: skip
def test_a_classification_run_keeps_its_validation_split_and_preprocessing(tmp_path, key, capsys):
    """`evaluate --set data.split_seed=7` scored training reviews as validation (2,258 of 2,500
    on IMDb); resuming with it mixed two splits. Both are refused; repointing the data is not."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    folder = make_imdb_folder(tmp_path / "imdb", per_class=4)
    config = config_from_dict(classification_config(folder))
    run.write_config(config)
    field = key.split("=")[0]
    with pytest.raises(UserError, match=rf"--set cannot change .*\({field}\).*validation split"):
        run.read_config([key])
    # The same run resumed with the key set: the trainer's compatibility check.
    changed_config = load_config(run.config_file, [key])
    with pytest.raises(UserError, match=rf"validation split \({field} differ"):
        run.check_compatible(changed_config)
    assert main(["evaluate", str(run.path), "--set", key]) == 2
    assert "validation split" in capsys.readouterr().err
    other = make_imdb_folder(tmp_path / "other", per_class=4)
    assert run.read_config([f"data.path={other}"]).data.path == str(other)


def test_run_dir_layout_and_compatibility(tmp_path, learned_run):
    run = RunDir(learned_run)
    assert run.is_run() and run.config_file.name == "config.yaml"
    assert run.checkpoint_steps() == [2]
    assert run.find_checkpoint("latest") == str(learned_run / "checkpoints" / "ckpt-2")
    config = run.read_config()
    assert run.check_compatible(config) is True
    dumped = config.model_dump(mode="json")
    other = config_from_dict({**dumped, "model": {**dumped["model"], "d_model": 64}})
    with pytest.raises(
        UserError, match=r"different model, vocabulary or validation split \(model.d_model differ"
    ):
        run.check_compatible(other)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty and has no config.yaml"):
        RunDir(tmp_path / "notes").check_compatible(config)
    assert RunDir(tmp_path / "fresh").check_compatible(config) is False


def test_share_embeddings_with_two_vocabularies_is_a_user_error(tmp_path):
    (tmp_path / "train.src").write_text("a b c\nb c d\n", encoding="utf-8")
    (tmp_path / "train.tgt").write_text("x y\ny z w v\n", encoding="utf-8")
    raw = translation_config(model={"share_embeddings": True})
    raw["data"] = {
        "source": "parallel_text",
        "tokenizer": "word",
        "shared_vocab": False,
        "splits": {"train": {"source": "train.src", "target": "train.tgt"}},
    }
    config = config_from_dict(raw, base_dir=tmp_path)
    with pytest.raises(UserError, match=r"share_embeddings needs one vocabulary.*8 and 9"):
        assemble(config, RunDir(tmp_path / "run"), create=True)
    assert not (tmp_path / "run" / "model_args.json").exists()


def test_loading_leaves_the_global_dtype_policy_alone(learned_run):
    keras.config.set_dtype_policy("float32")
    load_run(learned_run)
    assert keras.config.dtype_policy().name == "float32"
