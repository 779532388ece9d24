"""Tests for transformer_tf.data.imdb on tiny generated aclImdb folders (no network)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from transformer_tf.data.imdb import (
    TextSplit,
    build_vectorizer,
    clean_text,
    encode_texts,
    load_imdb_directory,
    load_imdb_tfds,
    load_vectorizer,
    make_classification_dataset,
    save_vocabulary,
    split_validation,
    tf_clean_text,
)
from transformer_tf.errors import DataError

POS = ["A great film!<br /><br />Loved it.", "Wonderful acting, don't miss it.", ""]
NEG = ["Terrible plot...", "Boring<br/>and too long.", "Worst movie ever (really)."]


def write_split(root: Path, split: str, pos: list[str], neg: list[str]) -> None:
    """Write one aclImdb split; file names follow the official `<id>_<rating>.txt` pattern."""
    for name, texts in (("pos", pos), ("neg", neg)):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i, text in enumerate(texts):
            (folder / f"{i}_{8 if name == 'pos' else 2}.txt").write_text(text, encoding="utf-8")


@pytest.fixture
def acl(tmp_path: Path) -> Path:
    """A complete tiny aclImdb folder with the distracting extras of the real archive."""
    root = tmp_path / "aclImdb"
    write_split(root, "train", POS, NEG)
    write_split(root, "test", ["Good fun."], ["Bad fun.", "Awful."])
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0_0.txt").write_text("unlabeled review", encoding="utf-8")
    (root / "train" / "urls_pos.txt").write_text("http://example.com\n", encoding="utf-8")
    (root / "train" / "labeledBow.feat").write_text("0:1 1:2\n", encoding="utf-8")
    (root / "imdb.vocab").write_text("the\n", encoding="utf-8")
    (root / "train" / "pos" / "notes.md").write_text("not a review", encoding="utf-8")
    return root


# --- load_imdb_directory ---------------------------------------------------------------------


def test_reads_layout_with_labels_and_ignores_extras(acl: Path):
    data = load_imdb_directory(acl)
    assert list(data) == ["train", "test"]
    train = data["train"]
    # neg (label 0) first, then pos, each in sorted file order; unsup/ and other files ignored.
    assert train.texts == NEG + POS
    assert train.labels.dtype == np.int32
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert (train.files, train.skipped) == (6, 0)
    assert "unlabeled review" not in train.texts
    assert data["test"].texts == ["Bad fun.", "Awful.", "Good fun."]
    assert data["test"].labels.tolist() == [0, 0, 1]


def test_empty_file_is_kept_as_empty_review(acl: Path):
    train = load_imdb_directory(acl, splits=("train",))["train"]
    assert "" in train.texts
    assert train.labels[train.texts.index("")] == 1


def test_accepts_folder_containing_aclimdb(acl: Path):
    data = load_imdb_directory(acl.parent, splits=("test",))
    assert list(data) == ["test"]
    assert len(data["test"]) == 3


def test_only_requested_splits_are_checked(tmp_path: Path):
    write_split(tmp_path / "aclImdb", "train", ["good"], ["bad"])
    assert len(load_imdb_directory(tmp_path, splits=("train",))["train"]) == 2


def test_missing_folder_names_path(tmp_path: Path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="IMDb folder not found") as info:
        load_imdb_directory(missing)
    assert str(missing) in str(info.value)


def test_archive_file_instead_of_folder(tmp_path: Path):
    archive = tmp_path / "aclImdb_v1.tar.gz"
    archive.write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match="tar xzf aclImdb_v1.tar.gz"):
        load_imdb_directory(archive)


def test_missing_test_split_explains_how_to_get_one(tmp_path: Path):
    root = tmp_path / "aclImdb"
    write_split(root, "train", ["good"], ["bad"])
    with pytest.raises(DataError) as info:
        load_imdb_directory(root, splits=("train", "test"))
    message = str(info.value)
    assert "'test' split not found" in message
    assert str(root / "test") in message
    assert "found folders: train" in message
    assert "data.source: directory" in message


def test_empty_class_folder_names_path(tmp_path: Path):
    root = tmp_path / "aclImdb"
    write_split(root, "train", [], ["bad"])
    with pytest.raises(DataError, match="no .txt files") as info:
        load_imdb_directory(root, splits=("train",))
    assert str(root / "train" / "pos") in str(info.value)


def test_missing_class_folder_names_path(tmp_path: Path):
    (tmp_path / "train" / "pos").mkdir(parents=True)
    (tmp_path / "train" / "pos" / "0_9.txt").write_text("good", encoding="utf-8")
    with pytest.raises(DataError, match="class folder not found") as info:
        load_imdb_directory(tmp_path, splits=("train",))
    assert str(tmp_path / "train" / "neg") in str(info.value)


def test_non_utf8_file_is_skipped_counted_and_named(acl: Path, caplog):
    bad = acl / "train" / "neg" / "9_1.txt"
    bad.write_bytes(b"caf\xe9 latin-1 text")
    (acl / "train" / "pos" / "7_10.txt").write_bytes("\ufeffBOM review".encode())
    with caplog.at_level(logging.WARNING, logger="transformer_tf.data.imdb"):
        train = load_imdb_directory(acl, splits=("train",))["train"]
    assert (train.files, train.skipped, len(train)) == (8, 1, 7)
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert "BOM review" in train.texts  # the byte-order mark is dropped, the review kept
    assert "Skipped 1 of 8" in caplog.text and str(bad) in caplog.text


# --- load_imdb_tfds --------------------------------------------------------------------------


def test_tfds_loading_with_mock_data(tmp_path: Path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):
        data = load_imdb_tfds(data_dir=tmp_path, splits=("train", "test"))
    assert list(data) == ["train", "test"]
    for split in data.values():
        assert (len(split), split.files, split.skipped) == (5, 5, 0)
        assert all(isinstance(text, str) for text in split.texts)
        assert split.labels.dtype == np.int32
        assert set(split.labels.tolist()) <= {0, 1}


def test_tfds_without_prepared_data_is_a_data_error(tmp_path: Path):
    with pytest.raises(DataError, match="data.source: directory") as info:
        load_imdb_tfds(data_dir=tmp_path, splits=("train",), download=False)
    assert str(tmp_path) in str(info.value)


def test_tfds_download_failure_is_a_data_error(tmp_path: Path, monkeypatch):
    import tensorflow_datasets as tfds

    def no_network(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'ai.stanford.edu'")

    monkeypatch.setattr(tfds, "load", no_network)
    with pytest.raises(DataError, match=r"no network\?.*data.source: directory.*ConnectionError"):
        load_imdb_tfds(data_dir=tmp_path)


# --- cleaning --------------------------------------------------------------------------------

CLEAN_CASES = [
    ("Great movie!<br /><br />Loved it.", "great movie ! loved it ."),
    ("one<br/>two<BR>three <i>four</i>", "one two three four"),
    ("I don't think it's 'good', really...", "i don't think it's ' good ' , really . . ."),
    (
        "The actors' work (mostly) was OK-ish; 7/10.",
        "the actors ' work ( mostly ) was ok - ish ; 7 / 10 .",
    ),
    ("  lots\tof \n whitespace  ", "lots of whitespace"),
    ("rock'n'roll and ''double'' quotes", "rock'n'roll and '' double '' quotes"),
    ("a < b but <3 stays", "a < b but < 3 stays"),
    (
        "Don\u2019t \u201cquote\u201d \x96 dash\x85 caf\u00e9 \u00c9T\u00c9",
        'don\'t " quote " - dash . . . café été',
    ),
    ("", ""),
    ("<br />", ""),
]


@pytest.mark.parametrize(("raw", "expected"), CLEAN_CASES)
def test_clean_text_examples(raw: str, expected: str):
    assert clean_text(raw) == expected


def test_clean_text_can_keep_case():
    assert clean_text("Don't SHOUT!<br />", lowercase=False) == "Don't SHOUT !"


@pytest.mark.parametrize("lowercase", [True, False])
def test_tf_clean_text_equals_python(lowercase: bool):
    samples = (
        [raw for raw, _ in CLEAN_CASES]
        + POS
        + NEG
        + ["\u00bfQu\u00e9? \u00a1S\u00ed! 5\u00a3 \u00bd"]
    )
    got = tf_clean_text(tf.constant(samples), lowercase=lowercase).numpy()
    assert [g.decode("utf-8") for g in got] == [clean_text(s, lowercase) for s in samples]


# --- split_validation ------------------------------------------------------------------------


def make_split(n_pos: int, n_neg: int) -> TextSplit:
    texts = [f"pos{i}" for i in range(n_pos)] + [f"neg{i}" for i in range(n_neg)]
    return TextSplit(texts, np.array([1] * n_pos + [0] * n_neg), files=n_pos + n_neg)


def test_split_validation_is_stratified_disjoint_and_complete():
    full = make_split(40, 20)
    train, val = split_validation(full, 0.25, seed=3)
    assert Counter(val.labels.tolist()) == {1: 10, 0: 5}
    assert Counter(train.labels.tolist()) == {1: 30, 0: 15}
    assert not set(train.texts) & set(val.texts)
    assert sorted(train.texts + val.texts) == sorted(full.texts)
    for part in (train, val):  # labels still belong to their texts
        assert all(
            label == t.startswith("pos") for t, label in zip(part.texts, part.labels, strict=True)
        )


def test_split_validation_is_deterministic_per_seed():
    full = make_split(30, 30)
    first = split_validation(full, 0.2, seed=7)[1].texts
    assert split_validation(full, 0.2, seed=7)[1].texts == first
    assert split_validation(full, 0.2, seed=8)[1].texts != first


def test_split_validation_rejects_bad_fraction_and_empty_parts():
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        split_validation(make_split(5, 5), 1.0, seed=0)
    with pytest.raises(DataError, match="validation split empty"):
        split_validation(make_split(1, 1), 0.1, seed=0)


# --- vectorizer ------------------------------------------------------------------------------

TRAIN_TEXTS = [clean_text(t) for t in POS + NEG]


def test_vectorizer_uses_training_texts_only():
    vectorizer = build_vectorizer(TRAIN_TEXTS, vocab_size=100, max_length=16)
    vocabulary = vectorizer.get_vocabulary()
    assert vocabulary[:2] == ["", "[UNK]"]
    assert "unseenword" not in vocabulary
    ids = vectorizer(tf.constant(["great unseenword film"])).numpy()[0].tolist()
    assert ids[1] == 1  # OOV
    assert ids[0] == vocabulary.index("great") and ids[2] == vocabulary.index("film")
    # A batch pads the shorter row with 0 (output_sequence_length=None: to the longest row).
    assert vectorizer(tf.constant(["great", "great film"])).numpy()[0].tolist() == [ids[0], 0]


def test_save_and_load_vectorizer_give_identical_ids(tmp_path: Path):
    vectorizer = build_vectorizer(TRAIN_TEXTS, vocab_size=12, max_length=16, ngrams=2)
    path = save_vocabulary(vectorizer, tmp_path / "run")
    assert path == tmp_path / "run" / "vocab.txt"
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    assert lines == vectorizer.get_vocabulary() and len(lines) == 12
    config = json.loads((tmp_path / "run" / "vectorizer.json").read_text(encoding="utf-8"))
    assert config | {"num_tokens": 0} == {
        "vocab_size": 12,
        "max_length": 16,
        "ngrams": 2,
        "lowercase": True,
        "vocabulary_file": "vocab.txt",
        "num_tokens": 0,
    }
    loaded = load_vectorizer(tmp_path / "run")
    probe = tf.constant(TRAIN_TEXTS + ["never seen words", "great film , loved it ."])
    np.testing.assert_array_equal(loaded(probe).numpy(), vectorizer(probe).numpy())
    assert loaded.get_vocabulary() == vectorizer.get_vocabulary()


def test_load_vectorizer_missing_files(tmp_path: Path):
    with pytest.raises(DataError, match="vectorizer.json") as info:
        load_vectorizer(tmp_path)
    assert str(tmp_path) in str(info.value)


# --- make_classification_dataset -------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus():
    """40 reviews of lengths 1..40, each with a unique first word so examples are identifiable."""
    rng = np.random.default_rng(0)
    words = ["good", "bad", "plot", "actor", "scene", "film"]
    texts = [f"w{i} " + " ".join(rng.choice(words, size=i)) for i in range(40)]
    labels = np.arange(40) % 2
    vectorizer = build_vectorizer(texts, vocab_size=100, max_length=24)
    return texts, labels, vectorizer


def rows(dataset) -> list[tuple[tuple[int, ...], int]]:
    """(ids without padding, label) for every example, in dataset order."""
    out = []
    for ids, labels in dataset:
        for row, label in zip(ids.numpy(), labels.numpy(), strict=True):
            out.append((tuple(row[row != 0].tolist()), int(label)))
    return out


def test_dataset_shapes_dtypes_and_padding(corpus):
    texts, labels, vectorizer = corpus
    dataset = make_classification_dataset(
        texts, labels, vectorizer, batch_size=8, max_length=24, shuffle=True, seed=1
    )
    assert dataset.element_spec[0].dtype == tf.int32 and dataset.element_spec[1].dtype == tf.int32
    for ids, batch_labels in dataset:
        ids = ids.numpy()
        assert ids.ndim == 2 and ids.shape[0] == batch_labels.shape[0] <= 8
        assert 1 <= ids.shape[1] <= 24
        lengths = (ids != 0).sum(axis=1)
        assert lengths.max() == ids.shape[1]  # padded to the longest row, not further
        # Padding (0) only after the tokens.
        assert all(
            (row[:n] != 0).all() and (row[n:] == 0).all()
            for row, n in zip(ids, lengths, strict=True)
        )


@pytest.mark.parametrize("bucket", [True, False])
def test_dataset_has_every_example_once(corpus, bucket: bool):
    texts, labels, vectorizer = corpus
    dataset = make_classification_dataset(
        texts, labels, vectorizer, batch_size=6, max_length=24, shuffle=True, seed=0, bucket=bucket
    )
    expected = [
        (tuple(vectorizer(t).numpy()[:24].tolist()), int(label))
        for t, label in zip(texts, labels, strict=True)
    ]
    assert Counter(rows(dataset)) == Counter(expected)
    assert Counter(rows(dataset)) == Counter(expected)  # again, on the second (cached) pass


def test_dataset_order_depends_on_seed_and_epoch_only(corpus):
    texts, labels, vectorizer = corpus

    def order(seed: int, epoch: int) -> list:
        return rows(
            make_classification_dataset(
                texts,
                labels,
                vectorizer,
                batch_size=4,
                max_length=24,
                shuffle=True,
                seed=seed,
                epoch=epoch,
            )
        )

    assert order(5, 0) == order(5, 0)
    assert order(5, 1) == order(5, 1)
    assert order(5, 0) != order(5, 1)
    assert order(5, 0) != order(6, 0)


def test_unshuffled_unbucketed_dataset_keeps_input_order(corpus):
    texts, labels, vectorizer = corpus
    dataset = make_classification_dataset(
        texts, labels, vectorizer, batch_size=7, max_length=24, shuffle=False, seed=0, bucket=False
    )
    assert [label for _, label in rows(dataset)] == labels.tolist()
    assert [ids[0] for ids, _ in rows(dataset)] == [vectorizer(t).numpy()[0] for t in texts]


def test_bucketing_reduces_padding(corpus):
    texts, labels, vectorizer = corpus

    def padding(bucket: bool) -> int:
        dataset = make_classification_dataset(
            texts,
            labels,
            vectorizer,
            batch_size=4,
            max_length=24,
            shuffle=True,
            seed=0,
            bucket=bucket,
        )
        return sum(int((ids == 0).numpy().sum()) for ids, _ in dataset)

    assert padding(bucket=True) < padding(bucket=False) / 2


@pytest.mark.parametrize(
    ("truncation", "expected"),
    [
        ("head", list(range(0, 8))),
        ("tail", list(range(12, 20))),
        ("head_tail", [0, 1] + list(range(14, 20))),  # first quarter + last three quarters
    ],
)
def test_truncation(truncation: str, expected: list[int]):
    text = " ".join(f"t{i}" for i in range(20))
    vectorizer = build_vectorizer([text], vocab_size=30, max_length=8)
    vocabulary = vectorizer.get_vocabulary()
    dataset = make_classification_dataset(
        [text, "t3 t4"],
        [1, 0],
        vectorizer,
        batch_size=2,
        max_length=8,
        shuffle=False,
        seed=0,
        truncation=truncation,
        bucket=False,
    )
    ids, labels = next(iter(dataset))
    assert ids.shape == (2, 8)
    assert [vocabulary[i] for i in ids.numpy()[0]] == [f"t{i}" for i in expected]
    assert [vocabulary[i] for i in ids.numpy()[1][:2]] == ["t3", "t4"]  # short rows untouched
    assert labels.numpy().tolist() == [1, 0]


def test_encoded_texts_give_the_same_dataset_as_raw_texts(corpus):
    texts, labels, vectorizer = corpus
    encoded = encode_texts(texts, vectorizer, max_length=10, truncation="tail")
    assert len(encoded) == 40 and encoded.lengths().max() == 10
    kwargs = dict(batch_size=4, max_length=10, shuffle=True, seed=3, truncation="tail")
    from_texts = rows(make_classification_dataset(texts, labels, vectorizer, **kwargs))
    assert rows(make_classification_dataset(encoded, labels, **kwargs)) == from_texts
    with pytest.raises(ValueError, match="encoded with max_length=10"):
        make_classification_dataset(encoded, labels, **{**kwargs, "max_length": 12})
    with pytest.raises(ValueError, match="vectorizer is needed"):
        make_classification_dataset(texts, labels, **kwargs)


def test_token_budget_batches(corpus):
    texts, labels, vectorizer = corpus
    budget = 48
    dataset = make_classification_dataset(
        texts,
        labels,
        vectorizer,
        batch_size=budget,
        batch_type="tokens",
        max_length=24,
        shuffle=True,
        seed=0,
    )
    sizes = {}
    for ids, _ in dataset:
        rows_, length = ids.shape
        assert rows_ * length <= budget
        sizes.setdefault(length, set()).add(rows_)
    # Short reviews come in larger batches than long ones: the first bucket holds lengths < 8
    # (48 // 7 = 6 per batch), the truncated reviews (24 tokens) come 2 per batch.
    assert max(max(n) for length, n in sizes.items() if length < 8) == 6
    assert max(sizes[24]) == 2
    expected = [
        (tuple(vectorizer(t).numpy()[:24].tolist()), int(label))
        for t, label in zip(texts, labels, strict=True)
    ]
    assert Counter(rows(dataset)) == Counter(expected)


def test_dataset_rejects_bad_arguments(corpus):
    texts, labels, vectorizer = corpus
    with pytest.raises(ValueError, match="truncation"):
        make_classification_dataset(
            texts,
            labels,
            vectorizer,
            batch_size=4,
            max_length=8,
            shuffle=False,
            seed=0,
            truncation="middle",
        )
    with pytest.raises(ValueError, match="labels"):
        make_classification_dataset(
            texts, labels[:-1], vectorizer, batch_size=4, max_length=8, shuffle=False, seed=0
        )
