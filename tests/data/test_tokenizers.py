"""Word and SentencePiece tokenizers: Python side, TF side, and saving/loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from transformer_tf.data.special_tokens import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID
from transformer_tf.data.tokenizers import (
    MANIFEST_NAME,
    SentencePieceTokenizer,
    SentencePieceVocabTokenizer,
    WordTokenizer,
    build_tokenizers,
    load_tokenizers,
    save_tokenizers,
)
from transformer_tf.data.toy import generate_toy_pairs
from transformer_tf.errors import DataError, UserError

TEXTS = [
    "the dog buys a red apple",
    "Hello, World! (said the dog)",
    "",
    "  tabs\tand   spaces  ",
    "unseen zebra <pad> </s>",
]


@pytest.fixture(scope="module")
def toy_pairs():
    return generate_toy_pairs(200, seed=3)


@pytest.fixture(scope="module")
def word_tokenizer(toy_pairs):
    texts = [s for s, _ in toy_pairs] + ["Hello, world! (said the dog)"]
    return WordTokenizer.build(texts, lowercase=True, split_punctuation=True)


@pytest.fixture(scope="module")
def sentencepiece_tokenizer(toy_pairs):
    texts = [side for pair in toy_pairs for side in pair] + ["Hello, world! (said the dog)"]
    return SentencePieceTokenizer.train(texts, vocab_size=100, model_type="bpe")


@pytest.fixture(scope="module")
def foreign_sentencepiece(toy_pairs):
    """A SentencePiece model with SentencePiece's own special ids (unk 0, bos 1, eos 2, as
    OPUS-MT's have), and its pieces."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([side for pair in toy_pairs for side in pair]),
        model_writer=model,
        vocab_size=80,
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [processor.id_to_piece(i) for i in range(3, processor.get_piece_size())]
    return model.getvalue(), pieces


@pytest.fixture(scope="module")
def sentencepiece_vocab_tokenizer(foreign_sentencepiece):
    model, pieces = foreign_sentencepiece
    # Another order than the model's ids, and every fifth piece left out (they encode as UNK).
    kept = [p for i, p in enumerate(reversed(pieces)) if i % 5]
    return SentencePieceVocabTokenizer(model, [*SPECIAL_TOKENS, *kept])


@pytest.fixture(scope="module")
def sentencepiece_vocab_eos_tokenizer(foreign_sentencepiece, sentencepiece_vocab_tokenizer):
    model, _ = foreign_sentencepiece
    return SentencePieceVocabTokenizer(model, sentencepiece_vocab_tokenizer.vocab, add_eos=True)


@pytest.fixture(params=["word", "sentencepiece", "sentencepiece_vocab", "sentencepiece_vocab_eos"])
def tokenizer(
    request,
    word_tokenizer,
    sentencepiece_tokenizer,
    sentencepiece_vocab_tokenizer,
    sentencepiece_vocab_eos_tokenizer,
):
    return {
        "word": word_tokenizer,
        "sentencepiece": sentencepiece_tokenizer,
        "sentencepiece_vocab": sentencepiece_vocab_tokenizer,
        "sentencepiece_vocab_eos": sentencepiece_vocab_eos_tokenizer,
    }[request.param]


def _ids_batch(vocab_size: int) -> np.ndarray:
    """Rows exercising decode: BOS/PAD skipped, stop at EOS, out-of-range ids, empty output."""
    return np.array(
        [
            [BOS_ID, 5, 6, PAD_ID, 7, EOS_ID, 8, 9],
            [5, vocab_size + 3, -1, 4, PAD_ID, PAD_ID, PAD_ID, PAD_ID],
            [EOS_ID, 5, 5, 5, 5, 5, 5, 5],
            [UNK_ID, 4, 5, 6, 7, 8, 9, 10],
        ],
        dtype=np.int32,
    )


# --- WordTokenizer ---------------------------------------------------------------------------


def test_word_vocabulary_is_sorted_by_frequency_then_alphabetically():
    tokenizer = WordTokenizer.build(["b a c", "c b", "c d", "e"])
    assert tokenizer.vocab == [*SPECIAL_TOKENS, "c", "b", "a", "d", "e"]
    assert tokenizer.vocab_size == 9
    assert WordTokenizer.build(["b a c", "c b", "c d", "e"], max_size=6).vocab[4:] == ["c", "b"]
    assert WordTokenizer.build(["b a c", "c b", "c d", "e"], min_count=2).vocab[4:] == ["c", "b"]


def test_word_encode_decode_round_trip_and_unknowns():
    tokenizer = WordTokenizer.build(["the dog buys a red apple", "the cat"])
    ids = tokenizer.encode("the dog buys a red apple")
    assert min(ids) >= len(SPECIAL_TOKENS)
    assert tokenizer.decode(ids) == "the dog buys a red apple"
    assert tokenizer.encode("the zebra") == [tokenizer.encode("the")[0], UNK_ID]
    # Special-token strings in raw text are unknown words, never PAD/BOS/EOS ids.
    assert tokenizer.encode("<pad> <s> </s> <unk>") == [UNK_ID] * 4
    assert tokenizer.decode([BOS_ID, *ids[:2], EOS_ID, *ids[2:]]) == "the dog"


def test_word_punctuation_and_lowercase():
    tokenizer = WordTokenizer.build(["Hello, World!"], lowercase=True, split_punctuation=True)
    tokens = tokenizer.split('Hello, "World" (x)!')
    assert " ".join(tokens) == 'hello , " world " ( x ) !' and len(tokens) == 9
    assert tokenizer.decode(tokenizer.encode("HELLO,world!")) == "hello , world !"


def test_word_save_load_round_trip(tmp_path, word_tokenizer):
    files = word_tokenizer.save(tmp_path, "source")
    assert sorted(f.name for f in files) == ["source.json", "source.vocab"]
    lines = (tmp_path / "source.vocab").read_text(encoding="utf-8").split("\n")
    assert lines[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    loaded = WordTokenizer.load(tmp_path, "source")
    assert loaded.vocab == word_tokenizer.vocab
    assert [loaded.encode(t) for t in TEXTS] == [word_tokenizer.encode(t) for t in TEXTS]


def test_word_vocabulary_must_start_with_special_tokens():
    with pytest.raises(DataError, match="must start with"):
        WordTokenizer(["a", "b"])


# --- SentencePieceTokenizer ------------------------------------------------------------------


def test_sentencepiece_special_ids_and_round_trip(sentencepiece_tokenizer):
    tokenizer = sentencepiece_tokenizer
    assert 50 < tokenizer.vocab_size <= 100
    processor = tokenizer._processor
    pieces = [processor.id_to_piece(i) for i in range(len(SPECIAL_TOKENS))]
    assert tuple(pieces) == SPECIAL_TOKENS
    text = "the dog buys a red apple"
    ids = tokenizer.encode(text)
    assert BOS_ID not in ids and EOS_ID not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode([PAD_ID, BOS_ID, *ids, EOS_ID, *ids]) == text
    assert UNK_ID in tokenizer.encode("zebra \u4e2d")  # unseen characters


def test_sentencepiece_unigram_and_lowercase(toy_pairs):
    texts = [s for s, _ in toy_pairs]
    tokenizer = SentencePieceTokenizer.train(texts, 80, model_type="unigram", lowercase=True)
    assert tokenizer.vocab_size <= 80
    assert tokenizer.encode("THE Dog") == tokenizer.encode("the dog")
    with pytest.raises(UserError, match="model_type"):
        SentencePieceTokenizer.train(texts, 80, model_type="wordpiece")


def test_sentencepiece_save_load_round_trip(tmp_path, sentencepiece_tokenizer):
    files = sentencepiece_tokenizer.save(tmp_path, "target")
    assert [f.name for f in files] == ["target.model"]
    loaded = SentencePieceTokenizer.load(tmp_path, "target")
    assert [loaded.encode(t) for t in TEXTS] == [sentencepiece_tokenizer.encode(t) for t in TEXTS]
    with pytest.raises(DataError, match="missing"):
        SentencePieceTokenizer.load(tmp_path, "absent")


# --- TF side, both kinds ---------------------------------------------------------------------


def test_sentencepiece_vocab_looks_pieces_up_by_string(
    foreign_sentencepiece, sentencepiece_vocab_tokenizer, tmp_path
):
    import sentencepiece as spm

    model, _ = foreign_sentencepiece
    tokenizer = sentencepiece_vocab_tokenizer
    processor = spm.SentencePieceProcessor(model_proto=model)
    text = "the dog buys a red apple"
    pieces = processor.encode(text, out_type=str)
    expected = [tokenizer.vocab.index(p) if p in tokenizer.vocab else UNK_ID for p in pieces]
    assert tokenizer.encode(text) == expected
    assert UNK_ID in expected and len(set(expected)) > 3  # both kinds of piece are exercised
    assert tokenizer.decode([BOS_ID, *expected, EOS_ID, 7]) == processor.decode_pieces(
        [p if p in tokenizer.vocab else "<unk>" for p in pieces]
    )
    files = tokenizer.save(tmp_path, "source")
    assert [f.name for f in files] == ["source.model", "source.vocab", "source.json"]
    loaded = SentencePieceVocabTokenizer.load(tmp_path, "source")
    assert loaded.vocab == tokenizer.vocab and loaded.encode(text) == expected
    with_eos = SentencePieceVocabTokenizer(model, tokenizer.vocab, add_eos=True)
    assert with_eos.encode(text) == [*expected, EOS_ID]
    with_eos.save(tmp_path, "marian")
    assert SentencePieceVocabTokenizer.load(tmp_path, "marian").encode(text) == [*expected, EOS_ID]
    with pytest.raises(DataError, match="must start with <pad>, <unk>, <s>, </s>"):
        SentencePieceVocabTokenizer(model, ["</s>", "<unk>", "<s>", "<pad>", "x"])
    with pytest.raises(DataError, match="duplicate tokens in a SentencePiece vocabulary"):
        SentencePieceVocabTokenizer(model, [*SPECIAL_TOKENS, "x", "x"])


def _ragged_to_lists(ragged: tf.RaggedTensor) -> list[list[int]]:
    return [[int(i) for i in row] for row in ragged.to_list()]


def test_tf_encode_and_decode_match_python(tokenizer):
    encoded = tokenizer.tf_encode(tf.constant(TEXTS))
    assert isinstance(encoded, tf.RaggedTensor) and encoded.dtype == tf.int32
    assert _ragged_to_lists(encoded) == [tokenizer.encode(t) for t in TEXTS]

    ids = _ids_batch(tokenizer.vocab_size)
    decoded = tokenizer.tf_decode(tf.constant(ids))
    assert decoded.dtype == tf.string and decoded.shape == (len(ids),)
    assert [s.decode("utf-8") for s in decoded.numpy()] == [tokenizer.decode(r) for r in ids]
    assert tokenizer.decode(ids[2]) == ""

    # Inside a tf.function with unknown batch and length.
    encode = tf.function(tokenizer.tf_encode, input_signature=[tf.TensorSpec([None], tf.string)])
    decode = tf.function(
        tokenizer.tf_decode, input_signature=[tf.TensorSpec([None, None], tf.int32)]
    )
    assert _ragged_to_lists(encode(tf.constant(TEXTS))) == [tokenizer.encode(t) for t in TEXTS]
    round_trip = decode(encode(tf.constant(TEXTS[:1])).to_tensor())
    assert round_trip.numpy()[0].decode("utf-8") == tokenizer.decode(tokenizer.encode(TEXTS[0]))


def test_tf_functions_survive_saved_model_export(tmp_path, tokenizer):
    module = tf.Module()
    # Attaching the tokenizer's tf_module makes the SavedModel track its resources.
    module.tokenizer = tokenizer.tf_module
    module.encode = tf.function(
        tokenizer.tf_encode, input_signature=[tf.TensorSpec([None], tf.string)]
    )
    module.decode = tf.function(
        tokenizer.tf_decode, input_signature=[tf.TensorSpec([None, None], tf.int32)]
    )
    tf.saved_model.save(module, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))

    assert _ragged_to_lists(loaded.encode(tf.constant(TEXTS))) == [
        tokenizer.encode(t) for t in TEXTS
    ]
    ids = _ids_batch(tokenizer.vocab_size)
    assert [s.decode("utf-8") for s in loaded.decode(tf.constant(ids)).numpy()] == [
        tokenizer.decode(r) for r in ids
    ]


def test_two_sentencepiece_models_stay_apart_in_one_saved_model(
    tmp_path, sentencepiece_tokenizer, sentencepiece_vocab_tokenizer
):
    """A source and a target SentencePiece model in one SavedModel (non-shared vocabularies, an
    imported Marian model): each side encodes and decodes with its own model after loading."""
    module = tf.Module()
    module.source, module.target = sentencepiece_tokenizer.tf_module, sentencepiece_vocab_tokenizer.tf_module  # fmt: skip
    spec = [tf.TensorSpec([None], tf.string)]
    module.encode_source = tf.function(sentencepiece_tokenizer.tf_encode, input_signature=spec)
    module.encode_target = tf.function(sentencepiece_vocab_tokenizer.tf_encode, input_signature=spec)  # fmt: skip
    decode_spec = [tf.TensorSpec([None, None], tf.int32)]
    module.decode_target = tf.function(sentencepiece_vocab_tokenizer.tf_decode, input_signature=decode_spec)  # fmt: skip
    tf.saved_model.save(module, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    texts = [t for t in TEXTS if t]
    assert _ragged_to_lists(loaded.encode_source(tf.constant(texts))) == [sentencepiece_tokenizer.encode(t) for t in texts]  # fmt: skip
    target_ids = [sentencepiece_vocab_tokenizer.encode(t) for t in texts]
    assert _ragged_to_lists(loaded.encode_target(tf.constant(texts))) == target_ids
    padded = tf.ragged.constant(target_ids).to_tensor()
    decoded = [s.decode("utf-8") for s in loaded.decode_target(padded).numpy()]
    assert decoded == [sentencepiece_vocab_tokenizer.decode(ids) for ids in target_ids]


# --- build / save / load of a pair -----------------------------------------------------------


def test_build_tokenizers_shared_and_separate(toy_pairs):
    sources = [s for s, _ in toy_pairs]
    targets = [t for _, t in toy_pairs]
    src, tgt = build_tokenizers(
        "word", sources, targets, vocab_size=None, shared=False, lowercase=False
    )
    assert src is not tgt
    assert "buys" in src.vocab and "buys" not in tgt.vocab
    shared_src, shared_tgt = build_tokenizers(
        "word", sources, targets, vocab_size=50, shared=True, lowercase=False
    )
    assert shared_src is shared_tgt and shared_src.vocab_size == 50

    with pytest.raises(UserError, match="unknown tokenizer kind"):
        build_tokenizers("bytes", sources, targets, vocab_size=50, shared=True, lowercase=False)
    with pytest.raises(UserError, match="vocab_size"):
        build_tokenizers(
            "sentencepiece", sources, targets, vocab_size=None, shared=True, lowercase=False
        )


@pytest.mark.parametrize("shared", [False, True])
def test_save_and_load_tokenizers_from_a_run_directory(tmp_path, toy_pairs, shared):
    sources = [s for s, _ in toy_pairs]
    targets = [t for _, t in toy_pairs]
    src, tgt = build_tokenizers(
        "sentencepiece" if shared else "word",
        sources,
        targets,
        vocab_size=120,
        shared=shared,
        lowercase=True,
    )
    manifest_path = save_tokenizers(tmp_path, src, tgt)
    manifest = json.loads(manifest_path.read_text())
    assert manifest_path.name == MANIFEST_NAME
    assert manifest["shared"] is shared
    assert manifest["source"]["kind"] == src.kind

    loaded_src, loaded_tgt = load_tokenizers(tmp_path)
    assert (loaded_src is loaded_tgt) is shared
    assert type(loaded_src) is type(src)
    for original, loaded, texts in ((src, loaded_src, sources), (tgt, loaded_tgt, targets)):
        assert loaded.vocab_size == original.vocab_size
        assert [loaded.encode(t) for t in texts[:50]] == [original.encode(t) for t in texts[:50]]


def test_load_tokenizers_errors(tmp_path):
    with pytest.raises(DataError, match="missing"):
        load_tokenizers(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text('{"format_version": 1, "shared": false}')
    with pytest.raises(DataError, match="invalid tokenizer manifest"):
        load_tokenizers(tmp_path)
