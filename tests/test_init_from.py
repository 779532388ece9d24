"""``train --init-from``: a new run from another run's weights, with and without a new vocabulary."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.fixtures import train_through_cli, translation_config, write_config
from transformer_tf.assembly import load_run
from transformer_tf.cli import main
from transformer_tf.config import config_from_dict
from transformer_tf.errors import UserError
from transformer_tf.training.trainer import build_trainer

# An untied output layer, so that every kind of token-indexed weight is mapped: two embeddings,
# the output kernel (tokens on axis 1) and its bias.
MODEL = {"tie_embeddings": False}


def _config(**sections):
    sections["model"] = {**MODEL, **sections.get("model", {})}
    # Validation without decoding: what these runs are for is their weights (validation
    # decoding is tested in tests/test_translation_cli.py).
    sections["training"] = {"validation": {"decode": False}, **sections.get("training", {})}
    return translation_config(**sections)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A trained toy translation run: the source of every test."""
    return train_through_cli(tmp_path_factory.mktemp("source"), _config())


def _build(config: dict, run_dir, **kwargs):
    trainer = build_trainer(config_from_dict(config), run_dir, show_progress=False, **kwargs)
    trainer.lock.release()
    return trainer


def _batch(source_tokens, target_tokens):
    """One hand-made batch of ids: a source sentence and a target input (BOS first)."""
    return {
        "source": np.array([source_tokens], dtype="int32"),
        "target": np.array([target_tokens], dtype="int32"),
    }


def test_same_vocabulary_starts_with_the_source_logits(source, tmp_path):
    # Fine-tuning settings differ (learning rate, steps, seed): the weights still come over.
    config = _config(training={"learning_rate": 0.0005, "steps": 6, "seed": 11})
    trainer = _build(config, tmp_path / "new", init_from=str(source))
    reference = load_run(source)
    assert int(trainer.state.step.numpy()) == 0
    assert int(trainer.optimizer.iterations.numpy()) == 0  # a fresh optimizer, schedule at 0
    assert (tmp_path / "new" / "vocab").is_dir()
    for name in ("source", "target"):
        assert trainer.task.vocabularies()[name] == reference.task.vocabularies()[name]
    for inputs, _ in reference.task.dataset("validation", training=False).take(2):
        np.testing.assert_allclose(
            trainer.model(inputs, training=False).numpy(),
            reference.model(inputs, training=False).numpy(),
            rtol=1e-6,
            atol=1e-6,
        )
    record = json.loads((tmp_path / "new" / "init_from.json").read_text())
    assert record["source"] == str(source.resolve())
    assert record["step"] == reference.step == 20
    assert record["vocabulary"] == "source"
    assert [(v["name"], v["new"], v["dropped"]) for v in record["vocabularies"]] == [
        ("source", 0, 0),
        ("target", 0, 0),
    ]


def test_a_new_vocabulary_is_mapped_by_token(source, tmp_path):
    # Other toy sentences (data.seed) and fewer of them: a vocabulary with new and missing words.
    config = _config(data={"seed": 5, "num_train": 250})
    trainer = _build(config, tmp_path / "new", init_from=str(source), update_vocab=True)
    # The same config from random weights, same seed: what the new tokens' rows start as.
    scratch = _build(config, tmp_path / "scratch")
    reference = load_run(source)
    new_vocab, old_vocab = trainer.task.vocabularies(), reference.task.vocabularies()
    record = trainer.initialized_from
    assert record["vocabulary"] == "mapped by token"
    for mapping in record["vocabularies"]:
        name = mapping["name"]
        kept = set(new_vocab[name]) & set(old_vocab[name])
        assert mapping["kept"] == len(kept)
        assert mapping["new"] == len(new_vocab[name]) - len(kept) > 0
        assert mapping["dropped"] == len(old_vocab[name]) - len(kept) > 0

    model, old, fresh = trainer.model, reference.model, scratch.model
    pairs = [
        (model.source_embedding.token_embedding.embeddings, old.source_embedding.token_embedding.embeddings, fresh.source_embedding.token_embedding.embeddings, "source", 0),
        (model.target_embedding.token_embedding.embeddings, old.target_embedding.token_embedding.embeddings, fresh.target_embedding.token_embedding.embeddings, "target", 0),
        (model.output_projection.kernel, old.output_projection.kernel, fresh.output_projection.kernel, "target", 1),
        (model.output_projection.bias, old.output_projection.bias, fresh.output_projection.bias, "target", 0),
    ]  # fmt: skip
    for ours, theirs, initial, name, axis in pairs:
        ours, theirs, initial = (np.moveaxis(w.numpy(), axis, 0) for w in (ours, theirs, initial))
        old_id = {token: i for i, token in enumerate(old_vocab[name])}
        for i, token in enumerate(new_vocab[name]):
            expected = theirs[old_id[token]] if token in old_id else initial[i]
            np.testing.assert_array_equal(ours[i], expected, err_msg=f"{name} token {token!r}")
    # Every other weight is the source's.
    mapped = {id(v) for v, _, _ in model.vocabulary_weights()}
    for ours, theirs in zip(model.weights, old.weights, strict=True):
        if id(ours) not in mapped:
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())

    # A sentence of kept tokens only: the same logits for every kept target token.
    def ids(vocab, words):
        return [vocab.index(w) for w in words]

    kept_source = [w for w in new_vocab["source"][4:] if w in old_vocab["source"]][:6]
    kept_target = [w for w in new_vocab["target"][4:] if w in old_vocab["target"]]
    new_logits = model(
        _batch(
            ids(new_vocab["source"], kept_source), [2, *ids(new_vocab["target"], kept_target[:5])]
        ),
        training=False,
    ).numpy()[0]
    old_logits = old(
        _batch(ids(old_vocab["source"], kept_source), [2, *ids(old_vocab["target"], kept_target[:5])]),
        training=False,
    ).numpy()[0]  # fmt: skip
    np.testing.assert_allclose(
        new_logits[:, ids(new_vocab["target"], kept_target)],
        old_logits[:, ids(old_vocab["target"], kept_target)],
        rtol=1e-6,
        atol=1e-6,
    )


def test_an_initialised_run_trains_checkpoints_and_resumes_exactly(source, tmp_path):
    config = _config(data={"seed": 5, "num_train": 250}, training={"steps": 20})
    path = write_config(tmp_path / "finetune.yaml", config)
    whole, legs = tmp_path / "whole", tmp_path / "legs"
    init = ["--init-from", str(source), "--update-vocab", "--no-progress"]
    assert main(["train", str(path), "--run-dir", str(whole), *init]) == 0
    # Stopped at step 10, then the same command again: it resumes (the source is not reloaded).
    assert (
        main(["train", str(path), "--run-dir", str(legs), *init, "--set", "training.steps=10"]) == 0
    )
    assert main(["train", str(path), "--run-dir", str(legs), *init]) == 0
    a, b = load_run(whole), load_run(legs)
    assert a.step == b.step == 20
    for x, y in zip(a.model.weights, b.model.weights, strict=True):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-5, atol=1e-6)
    # A resume without the option is an ordinary resume of the same run.
    assert main(["train", str(path), "--run-dir", str(legs), "--no-progress", "--set", "training.steps=25"]) == 0  # fmt: skip
    assert load_run(legs).step == 25
    assert json.loads((legs / "init_from.json").read_text())["source"] == str(source.resolve())


def test_the_train_command_says_where_the_weights_came_from(source, tmp_path, capsys):
    path = write_config(tmp_path / "c.yaml", _config(training={"steps": 2}))
    assert main(["train", str(path), "--run-dir", str(tmp_path / "r"), "--no-progress", "--init-from", str(source / "checkpoints" / "ckpt-10")]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    vocabularies = load_run(source).task.vocabularies()
    assert out[1] == (
        f"init from: {(source / 'checkpoints' / 'ckpt-10').resolve()} (step 10); source "
        f"vocabulary the source's ({len(vocabularies['source'])} tokens); "
        f"target vocabulary the source's ({len(vocabularies['target'])} tokens)"
    )


def _refused(tmp_path, capsys, config, *options):
    path = write_config(tmp_path / "c.yaml", config)
    run_dir = tmp_path / "new"
    code = main(["train", str(path), "--run-dir", str(run_dir), "--no-progress", *options])
    assert code == 2
    assert not run_dir.exists()  # nothing written
    return capsys.readouterr().err


def test_weights_that_do_not_fit_are_refused_naming_the_tensor(source, tmp_path, capsys):
    err = _refused(
        tmp_path, capsys, _config(model={"d_model": 16, "d_ff": 64}), "--init-from", str(source)
    )
    assert "tensor source_embedding/token_embedding/embeddings has shape [" in err
    assert ", 32] in the source and [" in err and ", 16] in the new model" in err
    assert "d_model (32 in the source, 16 here)" in err
    err = _refused(tmp_path, capsys, _config(model={"tie_embeddings": True}), "--init-from", str(source))  # fmt: skip
    assert "only the source has output_projection/kernel, output_projection/bias" in err
    assert "tie_embeddings (False in the source, True here)" in err


def test_a_model_that_differs_without_other_shapes_is_refused(source, tmp_path, capsys):
    err = _refused(
        tmp_path,
        capsys,
        _config(model={"activation": "gelu", "dropout": 0.3}),
        "--init-from",
        str(source),
    )
    assert (
        "the new model is not the source's model: the model arguments differ in activation " in err
    )
    assert "('relu' in the source, 'gelu' here)" in err and "dropout" not in err.split("Set")[0]


def test_bad_sources_are_refused(source, tmp_path, capsys):
    config = _config()
    err = _refused(tmp_path, capsys, config, "--init-from", str(tmp_path / "nowhere"))
    assert f"--init-from {tmp_path / 'nowhere'}: does not exist" in err
    err = _refused(tmp_path, capsys, config, "--init-from", str(source / "checkpoints" / "ckpt-7"))
    assert "is neither a run directory" in err
    # A partial checkpoint: its data file is gone.
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    for data in (broken / "checkpoints").glob("ckpt-20.data-*"):
        data.unlink()
    err = _refused(tmp_path, capsys, config, "--init-from", str(broken / "checkpoints" / "ckpt-20"))
    assert "ckpt-20" in err and "cannot be used" in err
    err = _refused(tmp_path, capsys, config, "--update-vocab")
    assert "--update-vocab goes with --init-from" in err


def test_a_trained_run_is_never_reinitialised(source, tmp_path, capsys):
    path = write_config(tmp_path / "c.yaml", _config())
    # A run trained from random weights with this config: a copy of the source run.
    run_dir = tmp_path / "scratch"
    shutil.copytree(source, run_dir)
    before = sorted(p.name for p in run_dir.rglob("*"))
    capsys.readouterr()
    assert main(["train", str(path), "--run-dir", str(run_dir), "--init-from", str(source)]) == 2
    assert "already holds a run trained from random weights" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.rglob("*")) == before


def test_another_task_is_refused(source, tmp_path):
    from tests.fixtures import classification_config, make_imdb_folder

    config = config_from_dict(classification_config(make_imdb_folder(tmp_path / "imdb")))
    with pytest.raises(UserError, match="is a translation run; this config trains classification"):
        build_trainer(config, tmp_path / "new", show_progress=False, init_from=str(source))
    assert not (tmp_path / "new").exists()
