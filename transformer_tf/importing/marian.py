"""Read an OPUS-MT model in Hugging Face's ``MarianMTModel`` layout (``transformer-tf import
marian``).

The directory holds ``config.json``, ``model.safetensors`` (read with ``safetensors``' NumPy
API: arrays, nothing unpickled), ``source.spm``, ``target.spm`` and ``vocab.json`` (one
vocabulary for both sides), as ``MarianMTModel.save_pretrained`` and the Hugging Face Hub's
``Helsinki-NLP/opus-mt-*`` repositories have them. A Marian Transformer maps onto
:class:`~transformer_tf.models.seq2seq.Seq2SeqTransformer` with:

- post-norm blocks, layer norm epsilon 1e-5, no final norms, swish (or the config's)
  feed-forward activation;
- one embedding for source, target and output (``share_embeddings``, ``tie_embeddings``),
  scaled by sqrt(d_model), plus Marian's sinusoidal positions (``marian_sinusoidal``: sines
  then cosines, frequencies ``10000^(-2i/d)``, from position 0);
- the ``final_logits_bias`` as ``output_bias``.

Token ids: Marian's vocabulary has ``</s>`` 0, ``<unk>`` 1, the pieces, and ``<pad>`` last;
decoding starts from ``<pad>`` (``decoder_start_token_id``). Ours puts ``<pad>``, ``<unk>``,
``<s>``, ``</s>`` first, so rows are reordered: our ``<pad>`` and ``<s>`` both take Marian's
pad row (its decoder start), and ``<s>``'s logit bias is lowered by :data:`BOS_BIAS` so that
the softmax counts Marian's pad once (at our ``<pad>``, which our searches never generate, as
Marian's ``bad_words_ids`` forbids it). The source side appends ``</s>`` to every sentence as
Marian does (``sentencepiece_vocab`` tokenizer with ``add_eos``).

Refused, naming what is unsupported: separate source and target vocabularies
(``share_encoder_decoder_embeddings: false``), learned positions, an embedding layer norm or
final layer norms, pre-norm, and multilingual models whose vocabulary has ``>>xx<<``
target-language tokens (their tokenizer splits that prefix off, which ours does not yet).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from transformer_tf.data.special_tokens import BOS_ID, EOS, PAD, SPECIAL_TOKENS, UNK
from transformer_tf.data.tokenizers import SentencePieceVocabTokenizer
from transformer_tf.errors import DataError, UserError
from transformer_tf.importing import ImportedModel

__all__ = ["BOS_BIAS", "LAYER_NORM_EPSILON", "read_marian"]

#: PyTorch's LayerNorm epsilon, which Marian models are trained with in Hugging Face's port.
LAYER_NORM_EPSILON = 1e-5
#: Added to our ``<s>`` logit: it shares Marian's pad row, which must count once in a softmax.
BOS_BIAS = -1e4
_ACTIVATIONS = {"swish": "swish", "silu": "swish", "relu": "relu", "gelu": "gelu"}
_REQUIRED_FILES = ("config.json", "model.safetensors", "source.spm", "target.spm", "vocab.json")
#: Config keys whose other value is a model ours cannot express: (key, value we need, what).
_FIXED = (
    ("share_encoder_decoder_embeddings", True, "separate source and target vocabularies"),
    ("static_position_embeddings", True, "learned positions"),
    ("normalize_embedding", False, "a layer norm on the embeddings"),
    ("add_final_layer_norm", False, "final layer norms"),
    ("normalize_before", False, "pre-norm blocks"),
    ("scale_embedding", True, "unscaled embeddings"),
)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path}: {error}") from None


def _load_tensors(path: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise UserError(
            "importing a Marian model reads its safetensors weights: pip install "
            "'transformer-tf[marian]' (or pip install 'safetensors>=0.4,<1')"
        ) from None
    try:
        return {name: np.asarray(value, np.float32) for name, value in load_file(path).items()}
    except Exception as error:  # safetensors raises its own error types for a bad file
        raise UserError(f"cannot read {path}: {error}") from None


def _check_config(config: dict, directory: Path) -> None:
    if config.get("model_type") != "marian":
        raise UserError(
            f"{directory / 'config.json'}: model_type is {config.get('model_type')!r}; "
            "expected 'marian' (a MarianMTModel)"
        )
    unsupported = [what for key, needed, what in _FIXED if key in config and config[key] != needed]
    if config.get("activation_function") not in _ACTIVATIONS:
        unsupported.append(f"the activation {config.get('activation_function')!r}")
    for side in ("encoder", "decoder"):
        if (
            config[f"{side}_layers"]
            and config[f"{side}_attention_heads"] != config["encoder_attention_heads"]
        ):
            unsupported.append("different head counts in encoder and decoder")
        if config[f"{side}_ffn_dim"] != config["encoder_ffn_dim"]:
            unsupported.append("different feed-forward sizes in encoder and decoder")
    if unsupported:
        raise UserError(
            f"{directory}: this Marian model has what transformer_tf's Transformer cannot "
            "express: " + "; ".join(dict.fromkeys(unsupported))
        )


def _our_vocabulary(vocab: dict[str, int], config: dict, directory: Path):
    """Our pieces by id and, for each, Marian's row."""
    pad, eos = config["pad_token_id"], config["eos_token_id"]
    start = config.get("decoder_start_token_id", pad)
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise UserError(f"{directory / 'vocab.json'}: the ids are not 0..N-1")
    names = {i: piece for piece, i in vocab.items()}
    unk = vocab.get(UNK)
    if unk is None or names.get(pad) != PAD or names.get(eos) != EOS:
        raise UserError(
            f"{directory / 'vocab.json'}: expected <unk>, and <pad> and </s> at the config's "
            f"pad_token_id {pad} and eos_token_id {eos}"
        )
    languages = [piece for piece in vocab if re.fullmatch(r">>\w+<<", piece)]
    if languages:
        raise UserError(
            f"{directory}: a multilingual model (target-language tokens such as "
            f"{languages[0]}): its tokenizer splits the language prefix off the text, which "
            "transformer_tf's does not yet; import a model with one target language"
        )
    specials = {pad, unk, eos}
    pieces = [piece for piece, i in by_id if i not in specials]
    clash = [piece for piece in pieces if piece in SPECIAL_TOKENS]
    if clash:
        raise UserError(f"{directory / 'vocab.json'}: {clash} would clash with our special tokens")
    tokens = [*SPECIAL_TOKENS, *pieces]
    rows = np.array([pad, unk, start, eos, *(vocab[p] for p in pieces)], dtype=np.int64)
    return tokens, rows


def read_marian(path: str | Path) -> ImportedModel:
    """Read a Hugging Face ``MarianMTModel`` directory (an OPUS-MT model).

    Raises:
        UserError: a missing file, a config or vocabulary ours cannot express, or weights that
            are not all there.
    """
    directory = Path(path)
    missing = [name for name in _REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise UserError(
            f"{directory}: not a MarianMTModel directory (missing {', '.join(missing)}; "
            f"expected {', '.join(_REQUIRED_FILES)})"
        )
    config = _read_json(directory / "config.json")
    _check_config(config, directory)
    tensors = _load_tensors(directory / "model.safetensors")
    vocab = _read_json(directory / "vocab.json")
    tokens, rows = _our_vocabulary(vocab, config, directory)

    def tensor(name: str) -> np.ndarray:
        for candidate in (name, f"model.{name}"):  # older exports nest every tensor in model.
            if candidate in tensors:
                return tensors[candidate]
        raise UserError(
            f"{directory / 'model.safetensors'}: no tensor {name} (a partial or other model)"
        )

    shared = tensor("model.shared.weight")  # (vocab, d_model)
    if shared.shape[0] != len(vocab):
        raise UserError(
            f"{directory}: vocab.json has {len(vocab)} entries but the embedding has "
            f"{shared.shape[0]} rows: a vocabulary that does not belong to these weights"
        )
    bias = tensor("final_logits_bias").reshape(-1)[rows].copy()
    bias[BOS_ID] += BOS_BIAS
    tied = config.get("tie_word_embeddings", True)
    ours: dict[str, np.ndarray] = {"source_embedding/token_embedding/embeddings": shared[rows]}
    if tied:
        ours["logits_bias"] = bias
    else:
        ours["output_projection/kernel"] = tensor("lm_head.weight")[rows].T  # (d_model, vocab)
        ours["output_projection/bias"] = bias

    def linear(theirs: str, mine: str) -> None:
        ours[f"{mine}/kernel"] = tensor(f"{theirs}.weight").T  # torch (out, in) -> (in, out)
        ours[f"{mine}/bias"] = tensor(f"{theirs}.bias")

    def norm(theirs: str, mine: str) -> None:
        ours[f"{mine}/gamma"] = tensor(f"{theirs}.weight")
        ours[f"{mine}/beta"] = tensor(f"{theirs}.bias")

    for stack in ("encoder", "decoder"):
        attentions = {"self_attn": "self_attention"}
        if stack == "decoder":
            attentions["encoder_attn"] = "cross_attention"
        for i in range(config[f"{stack}_layers"]):
            theirs, mine = f"model.{stack}.layers.{i}", f"{stack}/layer_{i}"
            for their_attention, my_attention in attentions.items():
                for projection, dense in (("q", "query"), ("k", "key"), ("v", "value")):
                    linear(f"{theirs}.{their_attention}.{projection}_proj", f"{mine}/{my_attention}/{dense}")  # fmt: skip
                linear(f"{theirs}.{their_attention}.out_proj", f"{mine}/{my_attention}/output")
                norm(f"{theirs}.{their_attention}_layer_norm", f"{mine}/{my_attention}_norm")
            linear(f"{theirs}.fc1", f"{mine}/feed_forward/inner")
            linear(f"{theirs}.fc2", f"{mine}/feed_forward/output")
            norm(f"{theirs}.final_layer_norm", f"{mine}/feed_forward_norm")

    try:
        source_tokenizer = SentencePieceVocabTokenizer(
            (directory / "source.spm").read_bytes(), tokens, add_eos=True
        )
        target_tokenizer = SentencePieceVocabTokenizer(
            (directory / "target.spm").read_bytes(), tokens
        )
    except DataError as error:
        raise UserError(f"{directory}: {error}") from None
    except RuntimeError as error:  # sentencepiece's error for a corrupt model
        raise UserError(f"{directory}: cannot read a SentencePiece model: {error}") from None
    generation = {}
    if (directory / "generation_config.json").is_file():
        generation = _read_json(directory / "generation_config.json")
    max_positions = int(config.get("max_position_embeddings", 512))
    model = {
        "num_layers": config["encoder_layers"],
        "num_encoder_layers": config["encoder_layers"],
        "num_decoder_layers": config["decoder_layers"],
        "d_model": config["d_model"],
        "num_heads": config["encoder_attention_heads"],
        "d_ff": config["encoder_ffn_dim"],
        "dropout": float(config.get("dropout", 0.1)),
        "attention_dropout": float(config.get("attention_dropout", 0.0)),
        "ffn_dropout": float(config.get("activation_dropout", 0.0)),
        "activation": _ACTIVATIONS[config["activation_function"]],
        "normalize_first": False,
        "layer_norm_epsilon": LAYER_NORM_EPSILON,
        "positional_encoding": "marian_sinusoidal",
        "share_embeddings": True,
        "tie_embeddings": bool(tied),
        "output_bias": bool(tied),
    }
    beams = generation.get("num_beams", config.get("num_beams", 4))
    # Marian's max_length counts the decoder start token; ours counts generated tokens.
    length = generation.get("max_length", config.get("max_length", max_positions)) - 1
    return ImportedModel(
        toolkit="marian",
        origin=str(directory),
        model=model,
        source_tokenizer=source_tokenizer,
        target_tokenizer=target_tokenizer,
        weights=ours,
        decoding={"beam_size": int(beams), "length_penalty": 1.0, "max_length": int(length)},
        max_length=max_positions - 1,
        details={"transformers_version": config.get("transformers_version")},
    )
