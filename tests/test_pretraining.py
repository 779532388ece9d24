"""Masked-LM pretraining (``task: masked_lm``), then a classifier fine-tuned from it
(``train --init-from``): the scores, the transfer, freezing and learning-rate scales."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.fixtures import (
    classification_config,
    make_imdb_folder,
    train_through_cli,
    translation_config,
    write_config,
)
from transformer_tf.assembly import load_run
from transformer_tf.cli import main
from transformer_tf.config import config_from_dict
from transformer_tf.errors import UserError
from transformer_tf.evaluation.evaluator import evaluate_run
from transformer_tf.models import weight_path
from transformer_tf.training.optimizer import update_scales
from transformer_tf.training.trainer import build_trainer

MLM_HEAD = ["logits_bias", "transform/bias", "transform/kernel"]
MLM_HEAD += ["transform_norm/beta", "transform_norm/gamma"]


def _pretrain_config(root) -> dict:
    reviews = root / "aclImdb" / "train"
    return {
        "task": "masked_lm",
        "model": {"num_layers": 2, "d_model": 32, "num_heads": 2, "d_ff": 32, "dropout": 0.0},
        "data": {
            "paths": [str(reviews / "pos"), str(reviews / "neg")],
            "validation_fraction": 0.2,
            "max_length": 24,
            "vocab_size": 40,
        },
        "training": {
            "batch_size": 16,
            "steps": 20,
            "learning_rate": 0.005,
            "warmup_steps": 5,
            "label_smoothing": 0.0,
            "checkpoint_every": 10,
            "eval_every": 10,
            "seed": 3,
        },
        "distribute": {"strategy": "cpu"},
    }


@pytest.fixture(scope="module")
def imdb(tmp_path_factory):
    return make_imdb_folder(tmp_path_factory.mktemp("imdb"))


@pytest.fixture(scope="module")
def pretrained(imdb):
    """A masked LM pretrained on the text of the toy reviews (labels ignored)."""
    return train_through_cli(imdb, _pretrain_config(imdb), name="pretrained")


def _finetune_config(imdb, **training) -> dict:
    config = classification_config(imdb / "aclImdb", **training)
    del config["model"]  # every architecture key comes from the pretrained run
    config["model"] = {"num_classes": 2}
    config["data"]["ngrams"] = 2
    return config


def _build(config: dict, run_dir, **kwargs):
    trainer = build_trainer(config_from_dict(config), run_dir, show_progress=False, **kwargs)
    trainer.lock.release()
    return trainer


def _weights(model) -> dict[str, np.ndarray]:
    return {weight_path(w): np.array(w.numpy()) for w in model.weights}


def test_evaluate_reports_the_masked_token_scores(pretrained):
    scores = evaluate_run(pretrained)
    # The same numbers by another road: the model's logits at the masked positions, NumPy.
    run = load_run(pretrained)
    loss_sum = correct = count = 0.0
    for inputs, labels in run.task.dataset("validation", training=False):
        logits = run.model(inputs, training=False).numpy().astype("float64")
        ids, weights = labels["ids"].numpy(), labels["weights"].numpy()
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll = -np.take_along_axis(log_probs, ids[..., None], -1)[..., 0]
        loss_sum += (nll * weights).sum()
        correct += ((logits.argmax(-1) == ids) * weights).sum()
        count += weights.sum()
    assert count > 20
    assert scores["loss"] == pytest.approx(loss_sum / count, rel=1e-5)
    assert scores["accuracy"] == pytest.approx(correct / count, rel=1e-6)
    assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]), rel=1e-12)
    assert evaluate_run(pretrained) == scores  # validation masks the same tokens every time


def test_a_classifier_starts_from_the_pretrained_embedding_and_encoder(imdb, pretrained, tmp_path):
    trainer = _build(_finetune_config(imdb), tmp_path / "ft", init_from=str(pretrained))
    source = load_run(pretrained)
    theirs, ours = _weights(source.model), _weights(trainer.model)
    shared = sorted(set(theirs) & set(ours))
    assert [p for p in shared if not p.startswith(("embedding/", "encoder/"))] == []
    assert len([p for p in shared if p.startswith("encoder/layer_1/")]) == 16
    for path in shared:
        if path != "embedding/token_embedding/embeddings":
            np.testing.assert_allclose(ours[path], theirs[path], rtol=1e-6, err_msg=path)
    # The embedding is mapped by token: the words keep their rows, the bigrams are new.
    vocab, source_vocab = (
        trainer.task.vocabularies()["source"],
        source.task.vocabularies()["source"],
    )
    kept = [t for t in vocab if t in source_vocab]
    assert len(kept) > 15 and any(" " in t for t in vocab)
    table, source_table = (
        ours["embedding/token_embedding/embeddings"],
        theirs["embedding/token_embedding/embeddings"],
    )
    for token in kept:
        np.testing.assert_allclose(
            table[vocab.index(token)], source_table[source_vocab.index(token)], rtol=1e-6
        )
    record = json.loads((tmp_path / "ft" / "init_from.json").read_text())
    assert (record["task"], record["vocabulary"]) == ("masked_lm", "mapped by token")
    assert record["fresh"] == ["head/bias", "head/kernel"]
    assert record["left"] == MLM_HEAD
    np.testing.assert_array_equal(ours["head/bias"], 0.0)
    config = trainer.config
    assert (config.model.num_layers, config.model.d_model, config.model.d_ff) == (2, 32, 32)


def _train_steps(imdb, pretrained, run_dir, steps, **training):
    config = _finetune_config(imdb, steps=steps, eval_every=1000, checkpoint_every=1000, **training)
    trainer = _build(config, run_dir, init_from=str(pretrained))
    before = _weights(trainer.model)
    trainer.train()
    return before, _weights(trainer.model)


def test_frozen_pretrained_weights_stay_while_the_head_learns(imdb, pretrained, tmp_path):
    before, after = _train_steps(
        imdb, pretrained, tmp_path / "frozen", 4, freeze_pretrained_steps=4
    )
    for path in before:
        if path.startswith(("embedding/", "encoder/")):
            np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    assert not np.allclose(after["head/kernel"], before["head/kernel"])


def test_the_pretrained_learning_rate_scale_scales_their_update(imdb, pretrained, tmp_path):
    # One update from the same start and batch: the pretrained weights move `scale` times as
    # far (Adam's first step is lr * sign-like, so the gradient could not have carried it).
    start, full = _train_steps(imdb, pretrained, tmp_path / "full", 1)
    _, scaled = _train_steps(
        imdb, pretrained, tmp_path / "scaled", 1, pretrained_learning_rate_scale=0.25
    )
    for path in start:
        if path == "naive_bayes_ratios":
            continue
        factor = 0.25 if path.startswith(("embedding/", "encoder/")) else 1.0
        np.testing.assert_allclose(
            scaled[path] - start[path], factor * (full[path] - start[path]), atol=1e-7, err_msg=path
        )


def test_layer_wise_decay_and_the_scales_of_each_weight():
    training = config_from_dict(
        translation_config(
            training={"layer_learning_rate_decay": 0.5, "pretrained_learning_rate_scale": 0.1}
        )
    ).training
    paths = [
        "embedding/token_embedding/embeddings",
        "encoder/layer_0/self_attention/query/kernel",
        "encoder/layer_1/feed_forward/inner/bias",
        "head/kernel",
    ]
    scales = update_scales(paths, training, fresh={"head/kernel"})
    assert scales == [(0.1 * 0.125, False), (0.1 * 0.25, False), (0.1 * 0.5, False), (1.0, False)]
    plain = config_from_dict(translation_config()).training
    assert update_scales(paths, plain, fresh=set()) is None
    frozen = plain.model_copy(update={"freeze_pretrained_steps": 3})
    assert update_scales(paths, frozen, fresh={"head/kernel"})[::3] == [(1.0, True), (1.0, False)]
    assert update_scales(paths, frozen, fresh=None) is None  # trained from scratch: no effect


def test_a_pretraining_run_has_no_translate_or_export(pretrained, tmp_path, capsys):
    text = tmp_path / "in.txt"
    text.write_text("a film\n")
    assert main(["translate", str(pretrained), "--input", str(text)]) == 2
    assert "they support: train, evaluate)" in capsys.readouterr().err
    assert main(["export", str(pretrained), str(tmp_path / "export")]) == 2
    assert "a masked_lm run has nothing to serve" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()


def test_runs_of_other_tasks_are_refused(imdb, pretrained, classification_run, tmp_path):
    with pytest.raises(UserError, match="is a masked_lm run; this config trains translation"):
        _build(translation_config(), tmp_path / "t", init_from=str(pretrained))
    assert not (tmp_path / "t").exists()
    # classification_run: the suite's shared classifier (tests/conftest.py).
    with pytest.raises(UserError, match="is a classification run; this config trains masked_lm"):
        _build(_pretrain_config(imdb), tmp_path / "m", init_from=str(classification_run))
    assert not (tmp_path / "m").exists()


def test_a_source_that_shares_no_word_is_refused(imdb, tmp_path):
    # A masked LM of other words: only the padding and unknown tokens are in both vocabularies.
    (tmp_path / "alien.txt").write_text("\n".join(f"zq{i} zq{i + 1} zq{i + 2}" for i in range(50)))
    config = _pretrain_config(imdb)
    config["data"]["paths"] = [str(tmp_path / "alien.txt")]
    config["training"].update(steps=2, eval_every=2, checkpoint_every=2)
    alien = train_through_cli(tmp_path, config, name="alien")
    with pytest.raises(UserError, match="no token of the new run's source vocabulary but the"):
        _build(_finetune_config(imdb), tmp_path / "ft", init_from=str(alien))
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"data": {"mask_probability": 1.5}}, "data.mask_probability: expected a number in (0, 1)"),
        ({"data": {"paths": ["EMPTY"]}}, "a folder with no *.txt file"),
        ({"model": {"pooling": "mean"}}, "model.pooling is a key of a classification head"),
        (
            {"model": {"name": "transformer_classifier"}},
            "`transformer_classifier` is the model of task 'classification'",
        ),
    ],
)
def test_bad_pretraining_configs_exit_2(imdb, tmp_path, capsys, change, expected):
    (tmp_path / "empty").mkdir()
    config = _pretrain_config(imdb)
    for section, values in change.items():
        values = {k: [str(tmp_path / "empty")] if v == ["EMPTY"] else v for k, v in values.items()}
        config[section] = {**config[section], **values}
    path = write_config(tmp_path / "bad.yaml", config)
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# --- Denoising (BART text infilling), then translation ---------------------------------------


@pytest.fixture(scope="module")
def denoised(tmp_path_factory):
    """A denoising run on the toy translation task's sentences, both languages, as plain text."""
    from transformer_tf.data.toy import toy_splits

    root = tmp_path_factory.mktemp("denoising")
    pairs = toy_splits(400, 40, 40, seed=1234)["train"]
    (root / "mono.txt").write_text("\n".join(s for pair in pairs for s in pair) + "\n")
    config = translation_config(
        data={"tokenizer": "word", "paths": [str(root / "mono.txt")], "max_length": 24},
        training={"label_smoothing": 0.0},
    )
    config["task"] = "denoising"
    config["data"] = {
        key: config["data"][key] for key in ("tokenizer", "paths", "max_length", "bucket_width")
    }
    del config["decoding"]
    return train_through_cli(root, config, name="denoised")


def test_evaluate_reports_the_reconstruction_scores(denoised):
    scores = evaluate_run(denoised)
    run = load_run(denoised)
    loss_sum = correct = tokens = matches = sequences = 0.0
    for inputs, labels in run.task.dataset("validation", training=False):
        logits = run.model(inputs, training=False).numpy().astype("float64")
        labels = labels.numpy()
        real = labels != 0
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        loss_sum -= (np.take_along_axis(log_probs, labels[..., None], -1)[..., 0] * real).sum()
        right = (logits.argmax(-1) == labels) & real
        correct, tokens = correct + right.sum(), tokens + real.sum()
        matches += (right.sum(1) == real.sum(1)).sum()
        sequences += len(labels)
        assert (inputs["source"].numpy() == run.task.mask_id).any()
    assert sequences >= 10
    assert scores["loss"] == pytest.approx(loss_sum / tokens, rel=1e-5)
    assert scores["token_accuracy"] == pytest.approx(correct / tokens, rel=1e-6)
    assert scores["exact_match"] == pytest.approx(matches / sequences, rel=1e-6)
    assert evaluate_run(denoised) == scores


def test_a_translation_run_starts_from_every_denoising_weight(denoised, tmp_path):
    trainer = _build(translation_config(), tmp_path / "mt", init_from=str(denoised))
    source = load_run(denoised)
    theirs, ours = _weights(source.model), _weights(trainer.model)
    assert set(theirs) == set(ours)
    record = json.loads((tmp_path / "mt" / "init_from.json").read_text())
    assert (record["task"], record["fresh"], record["left"]) == ("denoising", [], [])
    vocabularies = trainer.task.vocabularies()
    source_vocabularies = source.task.vocabularies()
    assert source_vocabularies["source"][-1] == "<mask>"
    indexed = {weight_path(v): (name, axis) for v, name, axis in trainer.model.vocabulary_weights()}
    for path, value in ours.items():
        if path not in indexed:
            np.testing.assert_allclose(value, theirs[path], rtol=1e-6, err_msg=path)
            continue
        name, axis = indexed[path]
        new, old = vocabularies[name], source_vocabularies[name]
        kept = [t for t in new if t in old]
        assert len(kept) > 20
        for token in kept:
            np.testing.assert_allclose(
                np.take(value, new.index(token), axis=axis),
                np.take(theirs[path], old.index(token), axis=axis),
                rtol=1e-6,
            )


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"mask_ratio": 1.0}, "data.mask_ratio: expected a number in (0, 1), found 1.0"),
        ({"poisson_lambda": 0}, "data.poisson_lambda: expected a number > 0, found 0"),
        ({"mask_probability": 0.15}, "unknown key `data.mask_probability`"),
    ],
)
def test_bad_denoising_configs_name_the_key(tmp_path, data, expected):
    from transformer_tf.errors import ConfigError

    (tmp_path / "mono.txt").write_text("a b c\n")
    raw = {"task": "denoising", "data": {"paths": [str(tmp_path / "mono.txt")], **data}}
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw)
    assert expected in str(error.value)


@pytest.mark.parametrize(
    "name, task", [("imdb_pretrain", "masked_lm"), ("multi30k_denoising", "denoising")]
)
def test_the_shipped_pretraining_configs_load(tmp_path, name, task):
    from pathlib import Path

    from transformer_tf.config import load_config

    (tmp_path / "text.txt").write_text("one document\n")
    path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    config = load_config(path, [f"data.paths=[{tmp_path / 'text.txt'}]"])
    assert (config.task, config.data.paths) == (task, [str(tmp_path / "text.txt")])
    finetune = load_config(path.parent / "imdb_finetune.yaml")
    if task == "masked_lm":  # the fine-tuning config names the same architecture
        for key in ("num_layers", "d_model", "num_heads", "d_ff", "positional_encoding"):
            assert getattr(finetune.model, key) == getattr(config.model, key), key
