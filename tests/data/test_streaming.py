"""The streamed training input: shards read line by line, tokenized in the graph, sharded
among input pipelines; the bounded vocabulary sample; tfds translation; the config checks."""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.data.batch_contents import examples, unpad
from tests.fixtures import translation_config, write_config
from transformer_tf.assembly import wait_for_vocabulary
from transformer_tf.config import config_from_dict, load_config
from transformer_tf.data import streaming
from transformer_tf.data.translation import encode_pairs
from transformer_tf.errors import ConfigError, UserError
from transformer_tf.run import RunDir
from transformer_tf.tasks import make_task

WORDS = ["the", "a", "cat", "dog", "sees", "eats", "big", "small", "red", "blue", "house", "tree"]


def _write_shards(root: Path, shards: int, per_shard: int, seed: int = 0):
    """``shards`` line-aligned file pairs of distinct sentences (a line's first word pair is
    its number), plus the pairs in file order."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    sources, targets, pairs = [], [], []
    for k in range(shards):
        src, tgt = [], []
        for i in range(per_shard):
            n = k * per_shard + i
            words = rng.choices(WORDS, k=rng.randint(1, 6))
            src.append(f"w{n} " + " ".join(words))
            tgt.append(f"v{n} " + " ".join(reversed(words)))
        (root / f"src.{k}").write_text("\n".join(src) + "\n", encoding="utf-8")
        (root / f"tgt.{k}").write_text("\n".join(tgt) + "\n", encoding="utf-8")
        sources.append(str(root / f"src.{k}"))
        targets.append(str(root / f"tgt.{k}"))
        pairs.extend(zip(src, tgt, strict=True))
    return sources, targets, pairs


def _config(sources, targets, data=None, **training):
    raw = translation_config(training={"batch_size": 8, "steps": 2, **training})
    raw["data"] = {
        "source": "parallel_text",
        "splits": {"train": {"source": sources, "target": targets}},
        "tokenizer": "word",
        "vocab_size": 200,
        "max_length": 9,
        "shuffle_buffer": 16,
        **(data or {}),
    }
    return config_from_dict(raw)


def _task(tmp_path, sources, targets, data=None, **training):
    task = make_task(_config(sources, targets, data, **training), RunDir(tmp_path / "run"))
    task.prepare(create=True, write=False)
    return task


def _expected(task, pairs) -> collections.Counter:
    sources, targets, _ = encode_pairs(
        pairs, task.source_tokenizer, task.target_tokenizer, task.config.data.max_length
    )
    return collections.Counter(zip(map(tuple, sources), map(tuple, targets), strict=True))


def test_streamed_epoch_holds_each_pair_of_the_shards_once(tmp_path):
    sources, targets, pairs = _write_shards(tmp_path / "data", shards=3, per_shard=40)
    task = _task(tmp_path, sources, targets)
    expected = _expected(task, pairs)
    # Every pair fits max_length 9 (at most 7 tokens a side) and each is distinct.
    assert len(expected) == 120 and max(expected.values()) == 1
    for epoch in (0, 1):
        assert examples(task.dataset("train", training=True, epoch=epoch)) == expected


@pytest.mark.parametrize("width", [1, 3])
def test_data_bucket_width_sets_the_length_buckets_of_the_streamed_batches(tmp_path, width):
    sources, targets, pairs = _write_shards(tmp_path / "data", shards=1, per_shard=120)
    task = _task(tmp_path, sources, targets, data={"bucket_width": width})
    dataset = task.dataset("train", training=True)
    for features, labels in dataset.as_numpy_iterator():
        # max(len(x), len(y) + 1) of every example of a batch lies in one (k*w, (k+1)*w].
        lengths = {
            max(len(unpad(x)), len(unpad(y)))
            for x, y in zip(features["source"], labels, strict=True)
        }
        assert len({(n - 1) // width for n in lengths}) == 1, lengths
    assert examples(dataset) == _expected(task, pairs)


def test_empty_sides_and_over_long_pairs_are_dropped_while_streaming(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    lines = [("a cat", "v0 cat"), ("", "v1 dog"), ("a dog", ""), ("  ", "  "),
             ("w " * 9, "v3"), ("the tree", "v4 " * 9), ("w " * 8, "v6"), ("\ufeffred", "v5 red")]  # fmt: skip
    (data / "s").write_text("\n".join(s for s, _ in lines) + "\n\n\n", encoding="utf-8")
    (data / "t").write_text("\n".join(t for _, t in lines) + "\n", encoding="utf-8")
    task = _task(tmp_path, str(data / "s"), str(data / "t"))
    kept = examples(task.dataset("train", training=True))
    tokenizer = task.source_tokenizer
    texts = sorted(
        (tokenizer.decode(x), task.target_tokenizer.decode(y)) for x, y in kept.elements()
    )
    assert texts == [("a cat", "v0 cat"), ("red", "v5 red"), (" ".join("w" * 8), "v6")]


def test_the_same_seed_gives_the_same_batches_and_another_epoch_another_order(tmp_path):
    sources, targets, _ = _write_shards(tmp_path / "data", shards=2, per_shard=60)
    task = _task(tmp_path, sources, targets)

    def batches(epoch):
        tf.random.set_seed(5)
        return [
            f["source"].tolist() for f, _ in task.dataset("train", True, epoch).as_numpy_iterator()
        ]

    first = batches(0)
    assert batches(0) == first
    assert batches(1) != first
    # Resume: skipping k batches gives exactly the rest of the epoch.
    tf.random.set_seed(5)
    rest = [
        f["source"].tolist() for f, _ in task.dataset("train", True, 0).skip(3).as_numpy_iterator()
    ]
    assert rest == first[3:]


@pytest.mark.parametrize("files,pipelines,by_line", [(4, 2, False), (3, 3, False), (2, 3, True)])
def test_pipelines_read_disjoint_parts_that_cover_the_corpus(tmp_path, files, pipelines, by_line):
    sources, targets, pairs = _write_shards(tmp_path / "data", shards=files, per_shard=10)
    assert streaming.shard_plan(files, pipelines, 0)[1] is by_line
    parts = []
    for i in range(pipelines):
        dataset = streaming.parallel_text_pairs(
            sources, targets, num_pipelines=pipelines, pipeline_id=i
        )
        parts.append([(s.decode(), t.decode()) for s, t in dataset.as_numpy_iterator()])
    seen = [pair for part in parts for pair in part]
    assert sorted(seen) == sorted(pairs)  # disjoint (no pair twice) and covering
    if not by_line:  # by file: pipeline i reads whole shards i, i + P, ...
        assert parts[0][:10] == pairs[:10]


def test_a_pipeline_with_an_input_context_makes_per_replica_batches_of_its_part(tmp_path):
    sources, targets, pairs = _write_shards(tmp_path / "data", shards=1, per_shard=50)
    task = _task(tmp_path, sources, targets)
    parts = collections.Counter()
    for i in range(2):
        context = tf.distribute.InputContext(2, i, 2)
        dataset = task.dataset("train", training=True, input_context=context)
        assert max(f["source"].shape[0] for f, _ in dataset.as_numpy_iterator()) == 4  # 8 / 2
        part = examples(dataset)
        assert not parts & part
        parts += part
    assert parts == _expected(task, pairs)


def _streamed_config(sources, targets, steps):
    return _config(sources, targets, steps=steps, eval_every=None, checkpoint_every=7, log_every=1)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """A 16-step run streamed from 2 shards of 40 pairs, trained while reading a corpus into
    Python raises: its data (sources, targets), root directory, trainer and the arguments of
    every ``tf.data.TextLineDataset`` it opened."""
    from transformer_tf.tasks import translation
    from transformer_tf.training.trainer import build_trainer

    root = tmp_path_factory.mktemp("streamed")
    sources, targets, _ = _write_shards(root / "data", shards=2, per_shard=40)
    opened = []
    text_lines = tf.data.TextLineDataset

    def recording(*args, **kwargs):
        opened.append(args)
        return text_lines(*args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("training read a corpus into Python")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(translation, "read_parallel", refuse)
        patch.setattr(translation, "encode_pairs", refuse)
        patch.setattr(tf.data, "TextLineDataset", recording)
        trainer = build_trainer(
            _streamed_config(sources, targets, 16), root / "straight", show_progress=False
        )
        trainer.train()
    return {"data": (sources, targets), "root": root, "trainer": trainer, "opened": opened}


def test_training_streams_with_text_lines_and_reads_no_corpus_into_python(streamed):
    assert int(streamed["trainer"].state.step.numpy()) == 16 and streamed["opened"]


def test_the_vocabulary_sample_is_the_first_pairs_spread_over_the_shards(tmp_path):
    sources, targets, pairs = _write_shards(tmp_path / "data", shards=2, per_shard=10)
    got = streaming.sample_parallel(sources, targets, 5)
    chosen = pairs[:3] + pairs[10:12]
    assert got == ([s for s, _ in chosen], [t for _, t in chosen])
    task = make_task(_config(sources, targets), RunDir(tmp_path / "run"))
    assert task.vocabulary_sample() == streaming.sample_parallel(sources, targets, 1_000_000)


def test_count_lines_ignores_trailing_blank_lines_and_mismatches_are_data_errors(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x\n\ny\n  \n\n")
    b.write_bytes(b"x\ny\nz")
    assert streaming.count_lines(a) == 3 and streaming.count_lines(b) == 3
    b.write_bytes(b"x\ny\n")
    with pytest.raises(Exception, match=r"differ in length: .*a has 3 lines but .*b has 2"):
        streaming.check_aligned([str(a)], [str(b)])


def test_mismatched_shard_counts_are_a_config_error_with_file_and_line(tmp_path):
    sources, targets, _ = _write_shards(tmp_path / "data", shards=2, per_shard=2)
    raw = translation_config()
    raw["data"] = {"source": "parallel_text",
                   "splits": {"train": {"source": sources, "target": targets[:1]}}}  # fmt: skip
    path = write_config(tmp_path / "c.yaml", raw)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "target:" in text)
    assert f"c.yaml:{line}: data.splits.train.target: expected as many target files as " in message
    assert "found 1 target file" in message


def test_a_missing_shard_is_named_with_its_index(tmp_path):
    sources, targets, _ = _write_shards(tmp_path / "data", shards=2, per_shard=2)
    raw = translation_config()
    raw["data"] = {"source": "parallel_text",
                   "splits": {"train": {"source": [sources[0], "nope"], "target": targets}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"data\.splits\.train\.source\[1\]: .*'nope'"):
        load_config(write_config(tmp_path / "c.yaml", raw))


def test_tfds_translation_trains_and_evaluates_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    from transformer_tf.training.trainer import build_trainer

    raw = translation_config(training={"steps": 2, "batch_size": 4, "eval_every": None,
                                       "checkpoint_every": 2})  # fmt: skip
    raw["data"] = {"source": "tfds", "name": "ted_hrlr_translate/pt_to_en",
                   "source_language": "pt", "target_language": "en",
                   "data_dir": str(tmp_path / "tfds"), "tokenizer": "word", "max_length": 32}  # fmt: skip
    raw["training"]["validation"] = {"decode": False}
    config = config_from_dict(raw)
    assert type(config.data).__name__ == "TfdsTranslationData"
    with tfds.testing.mock_data(num_examples=12):
        trainer = build_trainer(config, tmp_path / "run", show_progress=False)
        result = trainer.train()
        scores = trainer.evaluate_split("test")
        pairs = trainer.task.raw_splits["validation"]
    assert result.step == 2
    assert result.validation and np.isfinite(result.validation[-1]["loss"])
    assert np.isfinite(scores["loss"]) and len(pairs) == 12


def test_tfds_translation_with_a_wrong_language_key_is_a_data_error(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=3), pytest.raises(Exception, match="'de'"):
        streaming.tfds_text_pairs("ted_hrlr_translate/pt_to_en", "train", "de", "en",
                                  data_dir=str(tmp_path))  # fmt: skip


def test_a_non_chief_worker_gives_up_waiting_with_a_clear_error(tmp_path):
    sources, targets, _ = _write_shards(tmp_path / "data", shards=1, per_shard=5)
    run = RunDir(tmp_path / "run")
    task = make_task(_config(sources, targets), run)
    with pytest.raises(UserError, match=r"no vocabulary appeared in .*run/vocab within 0\.2 s"):
        wait_for_vocabulary(task, run, timeout=0.2, poll=0.05)
    task.prepare(create=True, write=True)
    wait_for_vocabulary(task, run, timeout=0.0)  # present: returns at once


def test_a_prebuilt_vocabulary_is_used_and_copied_into_the_run(tmp_path):
    sources, targets, _ = _write_shards(tmp_path / "data", shards=1, per_shard=20)
    first = _task(tmp_path / "a", sources, targets)
    from transformer_tf.data.tokenizers import save_tokenizers

    save_tokenizers(tmp_path / "prebuilt", first.source_tokenizer, first.target_tokenizer)
    raw = _config(sources, targets).model_dump(mode="json")
    raw["data"]["vocabulary"] = str(tmp_path / "prebuilt")
    # A different sample would give a different vocabulary if one were learned.
    raw["data"]["vocab_sample"] = 1
    task = make_task(config_from_dict(raw), RunDir(tmp_path / "run"))
    assert not task.vocabulary_from_chief
    task.prepare(create=True, write=True)
    assert task.source_tokenizer.vocab == first.source_tokenizer.vocab
    assert (tmp_path / "run" / "vocab" / "tokenizer.json").is_file()


def test_a_resumed_streamed_run_equals_an_uninterrupted_one(streamed, tmp_path):
    from transformer_tf.training.trainer import build_trainer

    sources, targets = streamed["data"]

    def run(steps):
        config = _streamed_config(sources, targets, steps)
        trainer = build_trainer(config, tmp_path / "resumed", show_progress=False)
        trainer.train()
        return trainer

    # 80 pairs in batches of 8: about 10 batches an epoch, so step 7 is mid-epoch and the
    # resumed part crosses an epoch boundary.
    run(7)
    resumed = run(16)
    for a, b in zip(streamed["trainer"].model.weights, resumed.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    def losses(run_dir):
        records = [json.loads(x) for x in (run_dir / "train_log.jsonl").open()]
        return {r["step"]: r["loss"] for r in records}

    straight = losses(streamed["root"] / "straight")
    assert losses(tmp_path / "resumed") == straight and len(straight) == 16


# --- Subword regularization ------------------------------------------------------------------

SYLLABLES = ["ka", "to", "ri", "ne", "mo", "su", "la", "pe"]


def _syllable_corpus(root: Path, lines: int = 400):
    """Words of 2-4 syllables: a unigram model learns syllables and whole words, so most words
    have several segmentations to sample from."""
    rng = random.Random(3)
    words = ["".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))) for _ in range(60)]
    text = [" ".join(rng.choices(words, k=rng.randint(2, 5))) for _ in range(lines)]
    root.mkdir(parents=True, exist_ok=True)
    for side in ("src", "tgt"):
        (root / side).write_text("\n".join(text) + "\n", encoding="utf-8")
    return [str(root / "src")], [str(root / "tgt")], text


def test_subword_regularization_samples_training_segmentations_each_epoch(tmp_path):
    sources, targets, text = _syllable_corpus(tmp_path / "data")
    data = {
        "tokenizer": "sentencepiece",
        "vocab_size": 120,
        "max_length": 64,
        "shuffle_buffer": 1000,
        "splits": {
            "train": {"source": sources, "target": targets},
            "validation": {"source": sources, "target": targets},
        },
        "subword_regularization": {"alpha": 0.5, "nbest_size": -1},
    }
    task = _task(tmp_path, sources, targets, data)
    tokenizer = task.source_tokenizer

    def segmentations(dataset):
        # Decoded text -> the ids it came as: sampling changes the ids, never the text.
        found = collections.defaultdict(set)
        for features, _ in dataset.as_numpy_iterator():
            for row in features["source"]:
                ids = unpad(row)
                found[tokenizer.decode(ids)].add(ids)
        return found

    epochs = [segmentations(task.dataset("train", training=True, epoch=e)) for e in range(2)]
    deterministic = {sentence: (tuple(tokenizer.encode(sentence)),) for sentence in text}
    # Every training sentence still reads back as itself, but is cut differently across the
    # two epochs (and within one, when it is there twice), not always the deterministic way.
    assert set(epochs[0]) == set(epochs[1]) == set(text)
    sampled = {s for s in text if epochs[0][s] | epochs[1][s] != set(deterministic[s])}
    assert len(sampled) > len(set(text)) // 2
    # Validation is segmented the deterministic way, the same every time.
    for _ in range(2):
        validation = segmentations(task.dataset("validation", training=False))
        assert {s: tuple(ids) for s, ids in validation.items()} == deterministic


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            {"tokenizer": "word", "subword_regularization": {"alpha": 0.1}},
            "data.subword_regularization samples SentencePiece segmentations: it needs "
            "data.tokenizer: sentencepiece (found 'word')",
        ),
        (
            {"subword_regularization": {"nbest_size": 1}},
            "data.subword_regularization.nbest_size: expected -1 (sample among all "
            "segmentations) or an integer >= 2 (among the n best), found 1 (which does not "
            "sample; remove data.subword_regularization instead)",
        ),
        (
            {"subword_regularization": {"alpha": 0}},
            "data.subword_regularization.alpha: expected a number in (0, 1]",
        ),
    ],
)
def test_subword_regularization_config_errors(tmp_path, setting, expected):
    sources, targets, _ = _write_shards(tmp_path, 1, 4)
    with pytest.raises(ConfigError) as excinfo:
        _config(sources, targets, {"tokenizer": "sentencepiece", **setting})
    assert expected in str(excinfo.value)
    assert excinfo.value.key == "data.subword_regularization" + (
        "" if "tokenizer" in setting else "." + next(iter(setting["subword_regularization"]))
    )


# --- Weighted corpora ------------------------------------------------------------------------


def _mixture(tmp_path, weights=(3, 1), **training):
    """Two corpora whose sentences say where they come from (``a<n> ...``, ``b<n> ...``)."""
    corpora = []
    for tag, weight in zip("ab", weights, strict=True):
        root = tmp_path / tag
        root.mkdir()
        lines = [f"{tag}{n} " + " ".join(WORDS[n % 5 : n % 5 + 3]) for n in range(40)]
        for side in ("src", "tgt"):
            (root / side).write_text("\n".join(lines) + "\n", encoding="utf-8")
        corpora.append(
            {
                "name": tag,
                "source": str(root / "src"),
                "target": str(root / "tgt"),
                "weight": weight,
            }
        )
    return corpora


def _batches(task, count):
    batches = []
    for features, _ in task.dataset("train", training=True).take(count).as_numpy_iterator():
        batches.append([unpad(row) for row in features["source"]])
    return batches


def test_weighted_corpora_are_drawn_in_proportion_and_resume_exactly(tmp_path):
    corpora = _mixture(tmp_path)
    data = {"splits": {"train": corpora}, "vocab_size": 300, "max_length": 12}
    task = _task(tmp_path, corpora[0]["source"], corpora[0]["target"], data)
    batches = _batches(task, 60)
    tags = [task.source_tokenizer.decode(row)[0] for batch in batches for row in batch]
    n = len(tags)
    share = tags.count("a") / n
    # Binomial noise of a 3:1 draw: within four standard deviations of 0.75.
    assert abs(share - 0.75) < 4 * (0.75 * 0.25 / n) ** 0.5
    # The log's shares count the draws (blocks of SELECT_BLOCK, ahead of training).
    fields = task.log_fields()
    assert set(fields) == {"corpus_share/a", "corpus_share/b"}
    assert task._drawn.sum() % streaming.SELECT_BLOCK == 0
    drawn = task._drawn.sum()
    assert abs(fields["corpus_share/a"] - 0.75) < 4 * (0.75 * 0.25 / drawn) ** 0.5
    assert fields["corpus_share/a"] + fields["corpus_share/b"] == pytest.approx(1.0)
    # A new pipeline (a resumed run) that skips the first 25 batches continues the same ones.
    again = _task(tmp_path / "again", corpora[0]["source"], corpora[0]["target"], data)
    resumed = [
        [unpad(row) for row in features["source"]]
        for features, _ in again.dataset("train", training=True).skip(25).take(35)
    ]
    assert resumed == batches[25:]


@pytest.mark.parametrize(
    ("training", "change", "expected"),
    [
        ({"steps": None, "epochs": 2}, None, "training.steps: a weighted mixture of corpora"),
        ({"epochs": 2}, None, "training.epochs: a weighted mixture of corpora"),
        ({}, ("weight", 0), "data.splits.train[1].weight: expected a number > 0, found 0"),
        ({}, ("validation", None), "data.splits.validation: expected a mapping with `source`"),
    ],
)
def test_weighted_corpora_config_errors(tmp_path, training, change, expected):
    corpora = _mixture(tmp_path)
    splits = {"train": corpora}
    if change and change[0] == "weight":
        corpora[1]["weight"] = 0
    if change and change[0] == "validation":
        splits["validation"] = corpora
    with pytest.raises(ConfigError) as excinfo:
        _config(corpora[0]["source"], corpora[0]["target"], {"splits": splits}, **training)
    assert expected in str(excinfo.value)
