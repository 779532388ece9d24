"""Tests for transformer_tf.data.imdb on tiny generated aclImdb folders (no network)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from transformer_tf.data.classification import (
    EncodedTexts,
    document_counts,
    encode_texts,
    make_classification_dataset,
    review_bucket_boundaries,
    truncate,
)
from transformer_tf.data.imdb import (
    TextSplit,
    load_imdb_directory,
    load_imdb_tfds,
    split_validation,
)
from transformer_tf.data.review_tokenizer import ReviewTokenizer, clean_text, tf_clean_text
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


# --- ReviewTokenizer ------------------------------------------------------------------------

TRAIN_TEXTS = POS + NEG
# Punctuation, HTML line breaks, capitals, curly quotes, unseen words, an empty text.
PROBES = [
    *TRAIN_TEXTS,
    "never seen words",
    "GREAT film, LOVED it!<br /><br />Don\u2019t miss it...",
    "Boring<br/>and too long (really).",
    "",
]


def old_vectorizer(texts: list[str], vocab_size: int, ngrams: int, lowercase: bool):
    """The vocabulary path this tokenizer replaced: clean_text, then an adapted Keras
    TextVectorization (standardize=None, whitespace split, n-grams)."""
    layer = keras.layers.TextVectorization(
        max_tokens=vocab_size,
        standardize=None,
        split="whitespace",
        ngrams=ngrams if ngrams > 1 else None,
        output_mode="int",
    )
    layer.adapt(tf.data.Dataset.from_tensor_slices([clean_text(t, lowercase) for t in texts]))
    return layer


def old_ids(layer, texts: list[str], lowercase: bool) -> list[list[int]]:
    dense = layer(tf.constant([clean_text(t, lowercase) for t in texts])).numpy()
    return [[int(i) for i in row if i != 0] for row in dense]


@pytest.mark.parametrize(("ngrams", "lowercase"), [(1, True), (2, True), (2, False), (3, True)])
def test_tokenizer_ids_equal_the_old_vectorizer(ngrams: int, lowercase: bool):
    tokenizer = ReviewTokenizer.build(TRAIN_TEXTS, 40, ngrams=ngrams, lowercase=lowercase)
    layer = old_vectorizer(TRAIN_TEXTS, 40, ngrams, lowercase)
    assert tokenizer.vocab == layer.get_vocabulary()
    assert tokenizer.vocab_size == layer.vocabulary_size() <= 40
    expected = old_ids(layer, PROBES, lowercase)
    assert tokenizer.encode_batch(PROBES) == expected
    assert [tokenizer.encode(t) for t in PROBES] == expected
    assert tokenizer.tf_encode(tf.constant(PROBES)).to_list() == expected


def test_tokenizer_known_ids_with_bigrams_and_case():
    tokenizer = ReviewTokenizer(
        ["", "[UNK]", "great", "film", "!", "great film", "film !"], ngrams=2, lowercase=True
    )
    # Words first, then the bigrams; cleaning lowercases and splits "!" off; "[UNK]" and an
    # unseen bigram are OOV.
    assert tokenizer.tokens("GREAT Film!") == ["great", "film", "!", "great film", "film !"]
    assert tokenizer.encode("GREAT Film!") == [2, 3, 4, 5, 6]
    assert tokenizer.encode("film great [UNK]") == [3, 2, 1, 1, 1, 1, 1, 1, 1]
    assert tokenizer.encode("<br />") == []
    cased = ReviewTokenizer(tokenizer.vocab, ngrams=2, lowercase=False)
    assert cased.encode("GREAT film") == [1, 3, 1]
    assert tokenizer.decode([2, 3, 0, 0, 99]) == "great film [UNK]"
    decoded = tokenizer.tf_decode(tf.constant([[2, 5, 0], [99, 0, 0]])).numpy().tolist()
    assert decoded == [b"great great film", b"[UNK]"]


def test_tokenizer_uses_training_texts_only():
    tokenizer = ReviewTokenizer.build(TRAIN_TEXTS, vocab_size=100)
    assert tokenizer.vocab[:2] == ["", "[UNK]"]
    assert "unseenword" not in tokenizer.vocab
    ids = tokenizer.encode("Great unseenword FILM")
    assert ids == [tokenizer.vocab.index("great"), 1, tokenizer.vocab.index("film")]


def test_a_run_learns_its_vocabulary_from_its_training_split_only(tmp_path: Path):
    """Every review carries a word of its own: the run's vocabulary has exactly the words of
    the reviews its training split kept, none of the validation reviews carved from the same
    folder and none of the test reviews."""
    from tests.fixtures import classification_config, make_imdb_folder
    from transformer_tf.config import config_from_dict
    from transformer_tf.run import RunDir
    from transformer_tf.tasks import make_task

    root = make_imdb_folder(tmp_path / "imdb", per_class=20)
    for i, review in enumerate(sorted((root / "aclImdb").rglob("*.txt"))):
        review.write_text(f"{review.read_text()} uniq{i}x")
    config = classification_config(root)
    config["data"].update(vocab_size=1000, validation_fraction=0.25)
    task = make_task(config_from_dict(config), RunDir(tmp_path / "run"))
    task.prepare(create=True, write=False)
    vocab = set(task.tokenizer.vocab)

    def own_words(split):
        texts, _ = task.splits[split]
        return {word for text in texts for word in text.split() if word.startswith("uniq")}

    train, validation, test = own_words("train"), own_words("validation"), own_words("test")
    assert len(train) == 30 and len(validation) == 10 and len(test) == 40
    assert {word for word in vocab if word.startswith("uniq")} == train


def test_tokenizer_save_and_load_give_identical_ids(tmp_path: Path):
    tokenizer = ReviewTokenizer.build(TRAIN_TEXTS, vocab_size=12, ngrams=2, max_length=16)
    paths = tokenizer.save(tmp_path / "run")
    # The files of run directories made before ReviewTokenizer existed.
    assert paths == [tmp_path / "run" / "vocab.txt", tmp_path / "run" / "vectorizer.json"]
    lines = paths[0].read_text(encoding="utf-8").split("\n")[:-1]
    assert lines == tokenizer.vocab and len(lines) == 12
    config = json.loads(paths[1].read_text(encoding="utf-8"))
    assert config == {
        "vocab_size": 12,
        "max_length": 16,
        "ngrams": 2,
        "lowercase": True,
        "vocabulary_file": "vocab.txt",
        "num_tokens": 12,
    }
    loaded = ReviewTokenizer.load(tmp_path / "run")
    assert loaded.vocab == tokenizer.vocab
    assert (loaded.ngrams, loaded.lowercase, loaded.max_tokens, loaded.max_length) == (
        2,
        True,
        12,
        16,
    )
    assert loaded.encode_batch(PROBES) == tokenizer.encode_batch(PROBES)
    assert loaded.tf_encode(tf.constant(PROBES)).to_list() == tokenizer.encode_batch(PROBES)


def test_tokenizer_loads_a_run_directory_written_before_it(tmp_path: Path):
    """The exact files save_vocabulary wrote (vocab.txt and vectorizer.json)."""
    vocab = ["", "[UNK]", "the", "film", "the film"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    settings = {"vocab_size": 50, "max_length": 24, "ngrams": 2, "lowercase": False,
                "vocabulary_file": "vocab.txt", "num_tokens": 5}  # fmt: skip
    (tmp_path / "vectorizer.json").write_text(json.dumps(settings), encoding="utf-8")
    tokenizer = ReviewTokenizer.load(tmp_path)
    assert (tokenizer.vocab, tokenizer.ngrams, tokenizer.lowercase) == (vocab, 2, False)
    assert (tokenizer.max_tokens, tokenizer.max_length) == (50, 24)
    assert tokenizer.encode("the film The") == [2, 3, 1, 4, 1]


def test_tokenizer_load_missing_or_malformed_files(tmp_path: Path):
    with pytest.raises(DataError, match="vectorizer.json") as info:
        ReviewTokenizer.load(tmp_path)
    assert str(tmp_path) in str(info.value)
    (tmp_path / "vectorizer.json").write_text('{"vocab_size": 5}', encoding="utf-8")
    with pytest.raises(DataError, match="malformed"):
        ReviewTokenizer.load(tmp_path)
    settings = {"vocab_size": 5, "max_length": 8, "ngrams": 1, "lowercase": True}
    (tmp_path / "vectorizer.json").write_text(json.dumps(settings), encoding="utf-8")
    (tmp_path / "vocab.txt").write_text("[UNK]\nthe\n", encoding="utf-8")
    with pytest.raises(DataError, match="must start with the padding token"):
        ReviewTokenizer.load(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n[UNK]\nthe", encoding="utf-8")
    with pytest.raises(DataError, match="truncated"):
        ReviewTokenizer.load(tmp_path)


def test_tokenizer_rejects_bad_build_arguments():
    with pytest.raises(ValueError, match="vocab_size must be >= 3"):
        ReviewTokenizer.build(TRAIN_TEXTS, vocab_size=2)
    with pytest.raises(DataError, match="empty list"):
        ReviewTokenizer.build([], vocab_size=10)


# --- truncate and buckets --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("truncation", "expected"),
    [
        ("head", [[0, 1, 2, 3, 4, 5, 6, 7], [3, 4]]),
        ("tail", [[12, 13, 14, 15, 16, 17, 18, 19], [3, 4]]),
        ("head_tail", [[0, 1, 14, 15, 16, 17, 18, 19], [3, 4]]),  # quarter + three quarters
    ],
)
def test_truncate_known_answers(truncation: str, expected: list[list[int]]):
    ids = tf.ragged.constant([list(range(20)), [3, 4]], dtype=tf.int32)
    assert truncate(ids, 8, truncation).to_list() == expected
    with pytest.raises(ValueError, match="truncation must be one of"):
        truncate(ids, 8, "middle")


def test_review_bucket_boundaries_known_answers():
    # ~25% apart (the buckets the IMDb recipe was tuned with), and the truncated reviews
    # (exactly max_length) alone in the overflow bucket.
    assert review_bucket_boundaries(24) == [7, 9, 11, 14, 18, 23]
    assert review_bucket_boundaries(256) == [
        7, 9, 11, 14, 18, 23, 29, 37, 47, 59, 74, 93, 117, 147, 184, 230, 255
    ]  # fmt: skip
    assert review_bucket_boundaries(8) == [7]
    assert review_bucket_boundaries(1) == []


# --- make_classification_dataset -------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus():
    """40 reviews of lengths 1..40, each with a unique first word so examples are identifiable."""
    rng = np.random.default_rng(0)
    words = ["good", "bad", "plot", "actor", "scene", "film"]
    texts = [f"w{i} " + " ".join(rng.choice(words, size=i)) for i in range(40)]
    labels = np.arange(40) % 2
    tokenizer = ReviewTokenizer.build(texts, vocab_size=100, max_length=24)
    return texts, labels, tokenizer


def rows(dataset) -> list[tuple[tuple[int, ...], int]]:
    """(ids without padding, label) for every example, in dataset order."""
    out = []
    for ids, labels in dataset:
        for row, label in zip(ids.numpy(), labels.numpy(), strict=True):
            out.append((tuple(row[row != 0].tolist()), int(label)))
    return out


def corpus_dataset(corpus, **kwargs):
    """The batches of the corpus fixture, truncated to its tokenizer's 24 tokens."""
    texts, labels, tokenizer = corpus
    return make_classification_dataset(texts, labels, tokenizer, max_length=24, **kwargs)


def every_example(corpus) -> Counter:
    """(truncated ids, label) of every example of the corpus fixture, once each."""
    texts, labels, tokenizer = corpus
    return Counter(
        (tuple(tokenizer.encode(t)[:24]), int(label))
        for t, label in zip(texts, labels, strict=True)
    )


def test_dataset_shapes_dtypes_and_padding(corpus):
    dataset = corpus_dataset(corpus, batch_size=8, shuffle=True, seed=1)
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
    dataset = corpus_dataset(corpus, batch_size=6, shuffle=True, seed=0, bucket=bucket)
    assert Counter(rows(dataset)) == every_example(corpus)
    assert Counter(rows(dataset)) == every_example(corpus)  # again, on the second (cached) pass


def test_dataset_order_depends_on_seed_and_epoch_only(corpus):
    def order(seed: int, epoch: int) -> list:
        return rows(corpus_dataset(corpus, batch_size=4, shuffle=True, seed=seed, epoch=epoch))

    assert order(5, 0) == order(5, 0)
    assert order(5, 1) == order(5, 1)
    assert order(5, 0) != order(5, 1)
    assert order(5, 0) != order(6, 0)


def test_unshuffled_unbucketed_dataset_keeps_input_order(corpus):
    texts, labels, tokenizer = corpus
    dataset = corpus_dataset(corpus, batch_size=7, shuffle=False, seed=0, bucket=False)
    assert [label for _, label in rows(dataset)] == labels.tolist()
    assert [ids[0] for ids, _ in rows(dataset)] == [tokenizer.encode(t)[0] for t in texts]


def test_bucketing_reduces_padding(corpus):
    def padding(bucket: bool) -> int:
        dataset = corpus_dataset(corpus, batch_size=4, shuffle=True, seed=0, bucket=bucket)
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
    tokenizer = ReviewTokenizer.build([text], vocab_size=30, max_length=8)
    vocabulary = tokenizer.vocab
    dataset = make_classification_dataset(
        [text, "t3 t4"],
        [1, 0],
        tokenizer,
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
    texts, labels, tokenizer = corpus
    encoded = encode_texts(texts, tokenizer, max_length=10, truncation="tail")
    assert len(encoded) == 40 and encoded.lengths().max() == 10
    kwargs = dict(batch_size=4, max_length=10, shuffle=True, seed=3, truncation="tail")
    from_texts = rows(make_classification_dataset(texts, labels, tokenizer, **kwargs))
    assert rows(make_classification_dataset(encoded, labels, **kwargs)) == from_texts
    with pytest.raises(ValueError, match="encoded with max_length=10"):
        make_classification_dataset(encoded, labels, **{**kwargs, "max_length": 12})
    with pytest.raises(ValueError, match="tokenizer is needed"):
        make_classification_dataset(texts, labels, **kwargs)


def test_token_budget_batches(corpus):
    budget = 48
    dataset = corpus_dataset(corpus, batch_size=budget, batch_type="tokens", shuffle=True, seed=0)
    sizes = {}
    for ids, _ in dataset:
        rows_, length = ids.shape
        assert rows_ * length <= budget
        sizes.setdefault(length, set()).add(rows_)
    # Short reviews come in larger batches than long ones: the buckets are [8, 16, 23, 24], so
    # lengths <= 8 come 48 // 8 = 6 per batch, 9-16 3 per batch, 17-23 and the truncated
    # reviews (24 tokens) 2 per batch.
    assert max(max(n) for length, n in sizes.items() if length <= 8) == 6
    assert max(max(n) for length, n in sizes.items() if 8 < length <= 16) == 3
    assert max(sizes[24]) == 2
    assert Counter(rows(dataset)) == every_example(corpus)


def test_dataset_rejects_bad_arguments(corpus):
    texts, labels, tokenizer = corpus
    with pytest.raises(ValueError, match="truncation"):
        make_classification_dataset(
            texts,
            labels,
            tokenizer,
            batch_size=4,
            max_length=8,
            shuffle=False,
            seed=0,
            truncation="middle",
        )
    with pytest.raises(ValueError, match="labels"):
        make_classification_dataset(
            texts, labels[:-1], tokenizer, batch_size=4, max_length=8, shuffle=False, seed=0
        )


def test_document_counts_count_each_text_once_per_token_and_class():
    # Texts: [3 3 4] (class 1), [4 2] (class 0), [] (class 1), [2 3 2 2] (class 0).
    encoded = EncodedTexts(
        ids=np.array([3, 3, 4, 4, 2, 2, 3, 2, 2], np.int32),
        starts=np.array([0, 3, 5, 5, 9], np.int64),
        max_length=8,
        truncation="head",
    )
    counts = document_counts(encoded, [1, 0, 1, 0], vocab_size=6, num_classes=2)
    expected = np.zeros((6, 2), np.int64)
    expected[2] = [2, 0]  # both class-0 texts, once each although the last has it three times
    expected[3] = [1, 1]
    expected[4] = [1, 1]
    np.testing.assert_array_equal(counts, expected)
    with pytest.raises(ValueError, match="4 texts but 3 labels"):
        document_counts(encoded, [1, 0, 1], vocab_size=6, num_classes=2)
