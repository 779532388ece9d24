"""Plain-text documents for pretraining: reading, the validation split, masked-LM batches."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from transformer_tf.data import text
from transformer_tf.data.masking import mask_tokens
from transformer_tf.data.review_tokenizer import ReviewTokenizer
from transformer_tf.data.seeds import epoch_seeds
from transformer_tf.errors import DataError

WORDS = ["the", "movie", "was", "good", "bad", "plot", "actors", "story", "and", "a", "it", "very"]


@pytest.fixture
def corpus(tmp_path):
    """A folder of 30 one-document files and a file of 20 lines (and two empty lines)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "docs"
    folder.mkdir()
    documents = []
    for i in range(30):
        doc = " ".join(rng.choice(WORDS, size=rng.integers(1, 30)))
        (folder / f"{i:02d}.txt").write_text(doc)
        documents.append(doc)
    (folder / "notes.md").write_text("not a document")
    lines = [" ".join(rng.choice(WORDS, size=rng.integers(1, 30))) for _ in range(20)]
    (tmp_path / "lines.txt").write_text("\n".join(lines[:10]) + "\n\n  \n" + "\n".join(lines[10:]))
    return tmp_path, documents + lines


def _strings(dataset) -> list[str]:
    return [s.decode() for s in dataset.as_numpy_iterator()]


def test_documents_are_the_folder_files_then_the_lines(corpus):
    root, documents = corpus
    read = _strings(text.text_documents([root / "docs", root / "lines.txt"]))
    assert read == documents  # files by name (not notes.md), then the non-empty lines


def test_paths_without_documents_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: a folder with no \\*.txt file"):
        text.document_files([tmp_path / "empty"])
    with pytest.raises(DataError, match="nothing: no such text file or folder"):
        text.document_files([tmp_path / "nothing"])


def test_the_validation_split_depends_on_the_text_and_the_seed_only(corpus):
    root, documents = corpus
    docs = text.text_documents([root / "docs", root / "lines.txt"])

    def split(dataset, name, seed=1234):
        return _strings(dataset.filter(lambda d: text.in_split(d, name, 0.3, seed)))

    train, validation = split(docs, "train"), split(docs, "validation")
    assert sorted(train + validation) == sorted(documents) and validation and train
    # Another order of the same documents: each keeps its side.
    reordered = tf.data.Dataset.from_tensor_slices(documents[::-1])
    assert split(reordered, "validation") == validation[::-1]
    # A duplicate of a validation document is a validation document.
    doubled = tf.data.Dataset.from_tensor_slices([validation[0], documents[0], validation[0]])
    assert split(doubled, "validation").count(validation[0]) == 2
    assert split(docs, "validation", seed=7) != validation


def test_chosen_positions_gathers_the_chosen_tokens():
    inputs = tf.constant([[5, 9, 7, 0], [9, 6, 9, 8]])
    labels = tf.constant([[0, 4, 0, 0], [5, 0, 6, 0]])
    weights = tf.constant([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    model_inputs, targets = text.chosen_positions(inputs, labels, weights)
    np.testing.assert_array_equal(model_inputs["token_ids"], inputs)
    np.testing.assert_array_equal(model_inputs["mask_positions"], [[1, 0], [0, 2]])
    np.testing.assert_array_equal(targets["ids"], [[4, 0], [5, 6]])
    np.testing.assert_array_equal(targets["weights"], [[1.0, 0.0], [1.0, 1.0]])


def _tokenizer(documents):
    """Padding, OOV, the 12 words and the mask token (id 14)."""
    words = ReviewTokenizer.build(documents, 15)
    tokenizer = ReviewTokenizer([*words.vocab, text.MASK_TOKEN], max_tokens=16)
    assert tokenizer.vocab_size == 15
    return tokenizer


def _batches(documents, tokenizer, **kwargs):
    """(masked batches, the length batches they were made from)."""
    options = dict(max_length=12, batch_size=4, seed=3, shuffle_buffer=100, **kwargs)
    # Two pipelines: a second pass over one shuffled dataset reshuffles.
    plain = text.length_batches(documents, tokenizer, **options)
    masked = text.mask_batches(
        text.length_batches(documents, tokenizer, **options),
        mask_id=14,
        vocab_size=15,
        first_maskable_id=2,
        mask_probability=0.3,
        **{key: options[key] for key in ("seed", "epoch", "training") if key in options},
    )
    return list(masked.as_numpy_iterator()), list(plain.as_numpy_iterator())


def test_masked_batches_are_the_length_batches_masked_with_one_seed_each(corpus):
    root, documents = corpus
    docs = text.text_documents([root / "docs"])
    tokenizer = _tokenizer(documents)
    masked, plain = _batches(docs, tokenizer, epoch=2)
    assert len(masked) == len(plain) > 3
    _, mask_seed = epoch_seeds(3, 2)
    for index, ((inputs, labels), ids) in enumerate(zip(masked, plain, strict=True)):
        assert ids.shape[1] <= 12 and (ids != 0).any(axis=1).all()  # cut; no empty document
        expected = mask_tokens(
            ids,
            tf.constant([mask_seed, index], tf.int64),
            mask_id=14,
            vocab_size=15,
            mask_probability=0.3,
            first_maskable_id=2,
        )
        want_inputs, want_labels = text.chosen_positions(*expected)
        for got, want in ((inputs, want_inputs), (labels, want_labels)):
            for key in want:
                np.testing.assert_array_equal(got[key], want[key].numpy())
        # The labels are the original ids at the chosen positions.
        chosen = labels["weights"] > 0
        original = np.take_along_axis(ids, inputs["mask_positions"], axis=1)
        np.testing.assert_array_equal(labels["ids"][chosen], original[chosen])


def test_each_training_epoch_masks_anew_and_validation_always_the_same(corpus):
    root, documents = corpus
    docs = text.text_documents([root / "docs"])
    tokenizer = _tokenizer(documents)

    def positions(epoch, training):
        masked, _ = _batches(docs, tokenizer, epoch=epoch, training=training)
        return [inputs["mask_positions"].tolist() for inputs, _ in masked]

    assert positions(1, True) == positions(1, True)  # reproducible
    assert positions(1, True) != positions(2, True)
    assert positions(1, False) == positions(2, False)


def test_denoising_pairs_are_the_documents_and_their_infilled_copies(corpus):
    from transformer_tf.data.masking import infill_spans
    from transformer_tf.data.tokenizers import WordTokenizer

    root, documents = corpus
    docs = text.text_documents([root / "docs"])
    tokenizer = WordTokenizer.build(documents)
    mask_id = tokenizer.vocab_size

    def pairs(epoch, training):
        dataset = text.denoising_pairs(
            docs,
            tokenizer,
            mask_id=mask_id,
            max_length=10,
            seed=5,
            epoch=epoch,
            training=training,
            shuffle_buffer=100,
        )
        return [(x.tolist(), y.tolist()) for x, y in dataset.as_numpy_iterator()]

    evaluation = pairs(0, False)
    # In order, every document cut to max_length - 1 tokens (EOS comes with the batching).
    assert [y for _, y in evaluation] == [tokenizer.encode(d)[:9] for d in documents[:30]]
    _, mask_seed = epoch_seeds(5, 0)
    for index, (source, target) in enumerate(evaluation):
        corrupted, _ = infill_spans(
            tf.constant(target, tf.int32),
            tf.constant([mask_seed, index], tf.int64),
            mask_id=mask_id,
        )
        assert source == corrupted.numpy().tolist()[:10]
    assert sum(x.count(mask_id) for x, _ in evaluation) > 5
    assert pairs(3, False) == evaluation  # validation: the same corruption every time
    training = pairs(1, True)
    assert sorted(y for _, y in training) == sorted(y for _, y in evaluation)
    assert training == pairs(1, True) and training != pairs(2, True)
