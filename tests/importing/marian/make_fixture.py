"""Regenerate the tiny OPUS-MT style ``MarianMTModel`` fixture in this folder.

What it makes (all deterministic, fixed seeds):

* ``model/``: a tiny, randomly initialised ``MarianMTModel`` saved in the Hugging
  Face layout that OPUS-MT models (``Helsinki-NLP/opus-mt-*``) use:
  ``config.json``, ``generation_config.json``, ``model.safetensors`` and the
  ``MarianTokenizer`` files ``source.spm``, ``target.spm``, ``vocab.json``,
  ``tokenizer_config.json`` (and whatever else ``save_pretrained`` writes).
  The two SentencePiece models are trained here on generated toy text: a
  source "language" and a target "language" made of lowercase pseudo-words.
  After the usual init, every weight, bias, layer-norm parameter and the
  ``final_logits_bias`` buffer gets Gaussian noise (Linear weights
  std 1/sqrt(fan_in), token embeddings std 0.5, everything 1-D std 0.2), so that
  a re-implementation which drops any of them fails a logits comparison and the
  output depends clearly on the input. The sinusoidal position tables are left
  exactly as Marian computes them (they are not even stored in
  ``model.safetensors``).
* ``reference.json``: tokenizer ids, decoder inputs, labels and float32 logits
  for four sentence pairs (each alone and as one padded batch), plus greedy
  ``generate`` outputs (ids and decoded text) for four source sentences, and the
  versions of transformers, torch and sentencepiece that produced them.

``NOTES.md`` beside this file lists the facts a TensorFlow re-implementation
needs (tensor names, shapes, formulas, tokenizer and generation behaviour);
``check_numpy.py`` is those facts as a NumPy + sentencepiece program that
reproduces ``reference.json`` without torch or transformers.

How to run it: transformers, torch, sentencepiece and safetensors are NEVER
dependencies of this project; use a scratch virtual environment outside the
repository, e.g.::

    python3 -m venv /work/scratch/marian-venv
    /work/scratch/marian-venv/bin/pip install torch==2.13.0
    /work/scratch/marian-venv/bin/pip install transformers sentencepiece safetensors
    /work/scratch/marian-venv/bin/python tests/importing/marian/make_fixture.py

(versions used for the committed files are recorded in ``reference.json``).
The script rewrites ``model/`` and ``reference.json`` next to itself.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import transformers
from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE / "model"
REFERENCE = HERE / "reference.json"

SEED = 10  # picked so greedy output has both an early eos and a forced eos
SPM_VOCAB_SIZE = 48  # pieces per SentencePiece model, incl. <unk>, <s>, </s>
NOISE_STD = 0.2  # biases, layer norms, final_logits_bias
WEIGHT_GAIN = 1.0  # Linear weights: + N(0, WEIGHT_GAIN / sqrt(fan_in))
EMBED_STD = 0.5  # token embeddings: + N(0, EMBED_STD)

# Toy languages: syllables glued into pseudo-words. The vowels a/e/i/o are shared,
# so some pieces occur in both SentencePiece models (the joint vocab deduplicates them).
SRC_ONSETS = ["b", "d", "k", "l", "m", "n", "p", "r", "s", "t"]
SRC_VOWELS = ["a", "e", "i", "o"]
TGT_ONSETS = ["f", "g", "h", "j", "v", "w", "z", "l"]
TGT_VOWELS = ["a", "e", "i", "o", "u", "y"]

PAIRS = [
    ("tema", "fo"),
    ("ladi semo kira", "gavu jeze"),
    ("bone pita dore lasi moke", "hyfa zoli wega vu"),
    ("sanoke ti bera mo daliko perinase", "jowu heza fygalo vi zewa"),
]
GENERATE_SOURCES = [
    "pita",
    "dore lasi",
    "kira semo tema ladi",
    "mo bera sanoke q7 ti",  # 'q' and '7' are not in the source spm: <unk> path
]


def toy_corpus(rng: random.Random, onsets, vowels, n_sentences: int) -> list[str]:
    syllables = [o + v for o in onsets for v in vowels] + list(vowels)
    lines = []
    for _ in range(n_sentences):
        words = []
        for _ in range(rng.randint(2, 9)):
            words.append("".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))))
        lines.append(" ".join(words))
    return lines


def train_spm(lines: list[str], path: Path) -> None:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="unigram",
        vocab_size=SPM_VOCAB_SIZE,
        character_coverage=1.0,
        num_threads=1,
        seed_sentencepiece_size=10000,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())


def build_joint_vocab(source_spm: Path, target_spm: Path) -> dict[str, int]:
    """OPUS-MT layout: ``</s>`` 0, ``<unk>`` 1, then the pieces of both spm models
    (one joint vocab, each piece once), ``<pad>`` appended as the last id."""
    vocab = {"</s>": 0, "<unk>": 1}
    for path in (source_spm, target_spm):
        sp = spm.SentencePieceProcessor(model_file=str(path))
        for i in range(sp.get_piece_size()):
            if sp.is_control(i) or sp.is_unknown(i):
                continue  # <s>, </s>, <unk> of the spm model itself
            piece = sp.id_to_piece(i)
            if piece not in vocab:
                vocab[piece] = len(vocab)
    vocab["<pad>"] = len(vocab)
    return vocab


def f32(array) -> list:
    """Nested lists of floats that round-trip exactly to float32 (shortest repr)."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 0:
        return float(str(a))
    return [f32(x) for x in a]


def main() -> None:
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    if MODEL_DIR.exists():
        shutil.rmtree(MODEL_DIR)
    MODEL_DIR.mkdir(parents=True)

    rng = random.Random(SEED)
    src_lines = toy_corpus(rng, SRC_ONSETS, SRC_VOWELS, 3000)
    tgt_lines = toy_corpus(rng, TGT_ONSETS, TGT_VOWELS, 3000)
    # the reference sentences are part of the toy languages
    src_lines += [s for s, _ in PAIRS]
    tgt_lines += [t for _, t in PAIRS]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_spm(src_lines, tmp / "source.spm")
        train_spm(tgt_lines, tmp / "target.spm")
        vocab = build_joint_vocab(tmp / "source.spm", tmp / "target.spm")
        (tmp / "vocab.json").write_text(
            json.dumps(vocab, indent=2, ensure_ascii=False), encoding="utf-8"
        )
        tok = MarianTokenizer(
            source_spm=str(tmp / "source.spm"),
            target_spm=str(tmp / "target.spm"),
            vocab=str(tmp / "vocab.json"),
            source_lang="src",
            target_lang="tgt",
            model_max_length=64,
        )
        tok.save_pretrained(MODEL_DIR)

    vocab_size = len(vocab)
    pad_id = vocab["<pad>"]
    assert pad_id == vocab_size - 1 and tok.pad_token_id == pad_id
    assert tok.eos_token_id == 0 and tok.unk_token_id == 1

    config = MarianConfig(
        vocab_size=vocab_size,
        decoder_vocab_size=vocab_size,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        activation_function="swish",
        scale_embedding=True,
        max_position_embeddings=64,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        eos_token_id=0,
        bos_token_id=0,
        forced_eos_token_id=0,
        decoder_start_token_id=pad_id,
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        architectures=["MarianMTModel"],
        # keys that real OPUS-MT config.json files carry (transformers 5 ignores them)
        static_position_embeddings=True,
        normalize_before=False,
        normalize_embedding=False,
        add_final_layer_norm=False,
    )
    torch.manual_seed(SEED)
    model = MarianMTModel(config)
    model.eval()

    # Perturb every parameter and the final_logits_bias buffer, but not the
    # sinusoidal position tables. Tied tensors (shared / embed_tokens / lm_head)
    # are one tensor, so named_parameters() yields them once. The noise is large
    # enough that the model's output depends clearly on its input.
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embed_positions" in name:
                continue
            if param.ndim == 2 and "shared" not in name:  # Linear [out, in]
                std = WEIGHT_GAIN / param.shape[1] ** 0.5
            elif param.ndim == 2:  # token embeddings, scaled by sqrt(d_model) in use
                std = EMBED_STD
            else:  # biases, layer-norm weights and biases
                std = NOISE_STD
            param.add_(torch.randn(param.shape, generator=gen) * std)
        model.final_logits_bias.add_(
            torch.randn(model.final_logits_bias.shape, generator=gen) * NOISE_STD
        )
    assert model.lm_head.weight.data_ptr() == model.model.shared.weight.data_ptr()
    assert (
        model.model.encoder.embed_tokens.weight.data_ptr() == model.model.shared.weight.data_ptr()
    )

    generation_config = GenerationConfig(
        bad_words_ids=[[pad_id]],
        bos_token_id=0,
        decoder_start_token_id=pad_id,
        eos_token_id=0,
        forced_eos_token_id=0,
        max_length=64,
        num_beams=4,
        pad_token_id=pad_id,
    )
    model.generation_config = generation_config
    model.save_pretrained(MODEL_DIR, safe_serialization=True)
    for path in MODEL_DIR.iterdir():
        path.chmod(0o644)

    # Compute every reference value from what was written to disk.
    tok = MarianTokenizer.from_pretrained(MODEL_DIR)
    model = MarianMTModel.from_pretrained(MODEL_DIR)
    model.eval()

    def shift_right(labels: list[int]) -> list[int]:
        return [model.config.decoder_start_token_id] + labels[:-1]

    pairs = []
    with torch.no_grad():
        for src, tgt in PAIRS:
            enc = tok(src, text_target=tgt)
            input_ids, labels = enc["input_ids"], enc["labels"]
            decoder_input_ids = shift_right(labels)
            out = model(
                input_ids=torch.tensor([input_ids]),
                attention_mask=torch.ones(1, len(input_ids), dtype=torch.long),
                decoder_input_ids=torch.tensor([decoder_input_ids]),
            )
            pairs.append(
                {
                    "source": src,
                    "target": tgt,
                    "source_pieces": tok.convert_ids_to_tokens(input_ids),
                    "target_pieces": tok.convert_ids_to_tokens(labels),
                    "input_ids": input_ids,
                    "labels": labels,
                    "decoder_input_ids": decoder_input_ids,
                    "logits": f32(out.logits[0].numpy()),
                }
            )

        batch = tok(
            [s for s, _ in PAIRS],
            text_target=[t for _, t in PAIRS],
            padding=True,
            return_tensors="pt",
        )
        batch_decoder_input_ids = model.prepare_decoder_input_ids_from_labels(batch["labels"])
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=batch_decoder_input_ids,
        )
        batch_logits = out.logits.numpy()
        # padding must not change the logits at real positions
        for i, pair in enumerate(pairs):
            n = len(pair["labels"])
            np.testing.assert_allclose(batch_logits[i, :n], np.asarray(pair["logits"]), atol=1e-5)

        gen_batch = tok(GENERATE_SOURCES, padding=True, return_tensors="pt")
        gen_out = model.generate(
            **gen_batch,
            num_beams=1,
            do_sample=False,
            max_new_tokens=12,
            output_scores=True,
            return_dict_in_generate=True,
        )
        generated = gen_out.sequences
        # top-1 minus top-2 of the processed scores at every step (None where a
        # single token was allowed, i.e. the forced-eos step or a finished row)
        margins = []
        for row in range(generated.shape[0]):
            row_margins = []
            for step, step_scores in enumerate(gen_out.scores):
                if 0 in generated[row, 1 : step + 1].tolist():  # row already finished
                    row_margins.append(None)
                    continue
                top2 = torch.topk(step_scores[row], 2).values
                gap = float(top2[0] - top2[1])
                row_margins.append(round(gap, 6) if np.isfinite(gap) else None)
            margins.append(row_margins)
        gen_alone = []
        for src in GENERATE_SOURCES:
            one = tok([src], return_tensors="pt")
            ids = model.generate(**one, num_beams=1, do_sample=False, max_new_tokens=12)[0].tolist()
            gen_alone.append(ids)

    reference = {
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "sentencepiece": spm.__version__,
            "python": sys.version.split()[0],
        },
        "seed": SEED,
        "noise": {
            "bias_and_norm_std": NOISE_STD,
            "linear_gain": WEIGHT_GAIN,
            "embedding_std": EMBED_STD,
        },
        "vocab_size": vocab_size,
        "pad_token_id": pad_id,
        "eos_token_id": 0,
        "unk_token_id": 1,
        "decoder_start_token_id": model.config.decoder_start_token_id,
        "pairs": pairs,
        "batch": {
            "note": "the 4 pairs as one padded batch; decoder_attention_mask not passed (causal mask only)",
            "input_ids": batch["input_ids"].tolist(),
            "attention_mask": batch["attention_mask"].tolist(),
            "labels": batch["labels"].tolist(),
            "decoder_input_ids": batch_decoder_input_ids.tolist(),
            "logits": f32(batch_logits),
        },
        "generate": {
            "kwargs": {"num_beams": 1, "do_sample": False, "max_new_tokens": 12},
            "note": (
                "generation_config.json applies too: bad_words_ids [[pad]] (pad never generated), "
                "forced_eos_token_id 0 (eos forced at the last allowed step), decoder_start_token_id pad. "
                "sequences begin with the decoder start token; finished rows are padded with pad"
            ),
            "sources": GENERATE_SOURCES,
            "input_ids": gen_batch["input_ids"].tolist(),
            "attention_mask": gen_batch["attention_mask"].tolist(),
            "sequences": generated.tolist(),
            "sequences_each_alone": gen_alone,
            "greedy_margins": margins,
            "text": tok.batch_decode(generated, skip_special_tokens=True),
        },
    }
    REFERENCE.write_text(json.dumps(reference, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {MODEL_DIR} and {REFERENCE}")


if __name__ == "__main__":
    main()
