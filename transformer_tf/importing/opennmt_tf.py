"""Read an OpenNMT-tf 2.x Transformer checkpoint (``transformer-tf import opennmt-tf``).

OpenNMT-tf's ``Transformer`` family (``Transformer``, ``TransformerBase``, ``TransformerBig``)
maps onto :class:`~transformer_tf.models.seq2seq.Seq2SeqTransformer` exactly:

- pre-norm (OpenNMT-tf's default; its ``input_layer_norm`` per sublayer and a final
  ``layer_norm`` per stack) or post-norm (``output_layer_norm``), layer norm epsilon 1e-3
  (Keras' default, which OpenNMT-tf's ``LayerNorm`` keeps);
- embeddings scaled by sqrt(d_model) plus OpenNMT-tf's sinusoidal positions
  (``positional_encoding: opennmt_sinusoidal``: sines then cosines, frequencies
  ``10000^(-i/(d/2-1))``, the first token at position 1);
- attention with biased query, key, value and output projections, ReLU feed-forward;
- separate embeddings and output layer, or ``share_embeddings: ALL`` (one embedding for both
  sides and the output layer), or ``TARGET`` (the output layer tied to the target embedding);
  the output layer has a bias in every case (``output_bias``).

Vocabularies: an OpenNMT-tf vocabulary file lists ``<blank>``, ``<s>``, ``</s>`` and then the
tokens; OpenNMT-tf appends ``<unk>`` as the last id itself. Our ids put ``<pad>``, ``<unk>``,
``<s>``, ``</s>`` first, so the rows of the embeddings and of the output layer are reordered:
ours ``[<blank>, <unk>, <s>, </s>, tokens...]`` from theirs ``[0, N, 1, 2, 3...]``. Text is split
on spaces (OpenNMT-tf's default) or, with ``--source-sp-model``/``--target-sp-model``, segmented
by that SentencePiece model (pieces looked up in the vocabulary file).

Refused, naming what is unsupported: relative positions (``maximum_relative_position``), learned
positions (``position_encoder_class: PositionEmbedder``), several sources or attention layers per
block (multi-source models), and anything that is not a self-attention encoder-decoder.

The weights are read as arrays with ``tf.train.load_checkpoint`` (nothing is unpickled); the
optimizer's slots are not read.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from transformer_tf.data.special_tokens import SPECIAL_TOKENS
from transformer_tf.data.tokenizers import SentencePieceVocabTokenizer, WordTokenizer
from transformer_tf.errors import DataError, UserError
from transformer_tf.importing import ImportedModel

__all__ = ["LAYER_NORM_EPSILON", "read_opennmt_tf"]

#: OpenNMT-tf's ``LayerNorm`` is Keras' LayerNormalization with its default epsilon.
LAYER_NORM_EPSILON = 1e-3
#: The first entries of every OpenNMT-tf vocabulary file.
_THEIR_SPECIALS = ("<blank>", "<s>", "</s>")
#: Heads per model type when ``--num-heads`` is not given (the checkpoint does not say).
_HEADS = {"Transformer": 8, "TransformerBase": 8, "TransformerBig": 16}
_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
#: Our sublayer names for OpenNMT-tf's (``linear_queries`` -> ``query``, ...).
_LINEARS = {
    "linear_queries": "query",
    "linear_keys": "key",
    "linear_values": "value",
    "linear_output": "output",
}


def _checkpoint_prefix(path: Path) -> str:
    """The checkpoint prefix ``path`` names: a model directory (its ``checkpoint`` file names the
    latest) or a prefix such as ``run/ckpt-5000`` (with or without ``.index``)."""
    text = str(path)
    if text.endswith(".index"):
        text = text[: -len(".index")]
    if Path(text).is_dir():
        latest = tf.train.latest_checkpoint(text)
        if latest is None:
            raise UserError(
                f"{path}: no OpenNMT-tf checkpoint there (no `checkpoint` file naming one)"
            )
        return latest
    if not tf.io.gfile.exists(text + ".index"):
        raise UserError(
            f"{path}: not an OpenNMT-tf checkpoint (no {Path(text).name}.index) nor a model "
            "directory"
        )
    return text


def _read_weights(prefix: str) -> dict[str, np.ndarray]:
    """The model's variables (``model/...`` without the attribute suffix) as float32 arrays."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = [
            name
            for name in reader.get_variable_to_shape_map()
            if name.startswith("model/") and name.endswith(_SUFFIX)
        ]
        return {
            name[: -len(_SUFFIX)]: np.asarray(reader.get_tensor(name), np.float32) for name in names
        }
    except (tf.errors.OpError, ValueError) as error:
        raise UserError(
            f"{prefix}: cannot read the checkpoint (partial or damaged?): "
            f"{str(error).splitlines()[0]}"
        ) from None


def _read_vocabulary(path: Path | None, option: str) -> list[str]:
    if path is None:
        raise UserError(
            f"{option} is required: the vocabulary file the model was trained with (the "
            "`source_vocabulary`/`target_vocabulary` of its data configuration)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"{option} {path}: {error.strerror}") from None
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    if tuple(tokens[:3]) != _THEIR_SPECIALS:
        raise UserError(
            f"{option} {path}: an OpenNMT-tf vocabulary starts with {', '.join(_THEIR_SPECIALS)}"
            f"; this one starts with {', '.join(tokens[:3])}"
        )
    return tokens


def _our_order(tokens: list[str], rows: int, option: str, path: Path) -> tuple[list, np.ndarray]:
    """Our token list for an OpenNMT-tf vocabulary, and for each of our ids the row of their
    matrices (``<unk>`` is their last row)."""
    if rows != len(tokens) + 1:
        raise UserError(
            f"{option} {path} has {len(tokens)} entries, so the model's matrices would have "
            f"{len(tokens) + 1} rows (with <unk>), but the checkpoint's have {rows}: not the "
            "vocabulary this model was trained with"
        )
    clash = [t for t in tokens[3:] if t in SPECIAL_TOKENS]
    if clash:
        raise UserError(
            f"{option} {path} lists {', '.join(clash)} as an ordinary token; these names are "
            "reserved for the special tokens here"
        )
    ours = [*SPECIAL_TOKENS, *tokens[3:]]
    order = np.array([0, len(tokens), 1, 2, *range(3, len(tokens))], dtype=np.int64)
    return ours, order


def _tokenizer(tokens: list[str], sp_model: Path | None, option: str):
    try:
        if sp_model is None:
            return WordTokenizer(tokens)
        return SentencePieceVocabTokenizer(sp_model.read_bytes(), tokens)
    except OSError as error:
        raise UserError(f"{option} {sp_model}: {error.strerror}") from None
    except DataError as error:
        raise UserError(f"{option}: {error}") from None


def _count_layers(weights: dict, stack: str) -> int:
    found = {
        int(match.group(1))
        for name in weights
        if (match := re.match(rf"model/{stack}/layers/(\d+)/", name))
    }
    if not found:
        raise UserError(
            f"not an OpenNMT-tf Transformer checkpoint: no model/{stack}/layers/0 (a "
            "self-attention encoder and decoder are needed)"
        )
    if found != set(range(len(found))):
        raise UserError(f"model/{stack}/layers: layers {sorted(found)} are not 0..N-1")
    return len(found)


def _refuse_unsupported(weights: dict) -> None:
    problems = []
    if any("relative_position" in name for name in weights):
        problems.append("relative position representations (maximum_relative_position)")
    if any("position_encoder" in name for name in weights):
        problems.append("learned positions (position_encoder_class: PositionEmbedder)")
    if any(re.search(r"/attention/[1-9]", name) for name in weights):
        problems.append("several attention layers per decoder block (multi-source)")
    if any(re.search(r"inputter_\d|features_inputter/inputter", name) for name in weights):
        problems.append("several source inputters (multi-source or parallel inputs)")
    if problems:
        raise UserError(
            "this OpenNMT-tf model has what transformer_tf's Transformer cannot express: "
            + "; ".join(problems)
        )


def read_opennmt_tf(
    path: str | Path,
    *,
    source_vocab: str | Path | None,
    target_vocab: str | Path | None,
    source_sp_model: str | Path | None = None,
    target_sp_model: str | Path | None = None,
    num_heads: int | None = None,
    model_type: str = "Transformer",
) -> ImportedModel:
    """Read an OpenNMT-tf Transformer checkpoint and its vocabularies.

    Args:
        path: the model directory (its latest checkpoint) or a checkpoint prefix.
        source_vocab, target_vocab: the vocabulary files it was trained with.
        source_sp_model, target_sp_model: SentencePiece models the text was segmented with
            (None: words split on spaces).
        num_heads: attention heads (None: the default of ``model_type``).
        model_type: ``Transformer``, ``TransformerBase`` or ``TransformerBig``.

    Raises:
        UserError: a missing or damaged checkpoint, vocabularies that do not fit it, or a
            variant that cannot be expressed.
    """
    prefix = _checkpoint_prefix(Path(path))
    weights = _read_weights(prefix)
    _refuse_unsupported(weights)
    num_encoder_layers = _count_layers(weights, "encoder")
    num_decoder_layers = _count_layers(weights, "decoder")
    pre_norm = "model/encoder/layer_norm/gamma" in weights
    features = weights.get("model/examples_inputter/features_inputter/embedding")
    labels = weights.get("model/examples_inputter/labels_inputter/embedding")
    shared = features is not None and labels is None
    if features is None:
        raise UserError("not an OpenNMT-tf Transformer checkpoint: no source embedding found")
    labels = features if shared else labels
    untied = "model/decoder/output_layer/kernel" in weights
    d_model = features.shape[1]
    d_ff = weights["model/encoder/layers/0/ffn/layer/inner/kernel"].shape[1]
    heads = num_heads or _HEADS[model_type]
    if d_model % heads:
        raise UserError(f"--num-heads {heads} does not divide the model size {d_model}")

    source_path, target_path = Path(source_vocab or ""), Path(target_vocab or "")
    their_source = _read_vocabulary(source_vocab and source_path, "--source-vocab")
    their_target = _read_vocabulary(target_vocab and target_path, "--target-vocab")
    source_tokens, source_rows = _our_order(
        their_source, features.shape[0], "--source-vocab", source_path
    )
    target_tokens, target_rows = _our_order(
        their_target, labels.shape[0], "--target-vocab", target_path
    )
    if shared and source_tokens != target_tokens:
        raise UserError(
            "the checkpoint shares one embedding between source and target, but --source-vocab "
            "and --target-vocab differ; give the one vocabulary it was trained with for both"
        )

    ours: dict[str, np.ndarray] = {}
    ours["source_embedding/token_embedding/embeddings"] = features[source_rows]
    if not shared:
        ours["target_embedding/token_embedding/embeddings"] = labels[target_rows]
    bias = weights["model/decoder/output_layer/bias"][target_rows]
    if untied:
        kernel = weights["model/decoder/output_layer/kernel"]  # (d_model, vocab)
        ours["output_projection/kernel"] = kernel[:, target_rows]
        ours["output_projection/bias"] = bias
    else:
        ours["logits_bias"] = bias
    norm = "input_layer_norm" if pre_norm else "output_layer_norm"
    for stack, count in (("encoder", num_encoder_layers), ("decoder", num_decoder_layers)):
        sublayers = {"self_attention": "self_attention", "ffn": "feed_forward"}
        if stack == "decoder":
            sublayers["attention/0"] = "cross_attention"
        for i in range(count):
            theirs, mine = f"model/{stack}/layers/{i}", f"{stack}/layer_{i}"
            for their_sub, my_sub in sublayers.items():
                for weight in ("gamma", "beta"):
                    ours[f"{mine}/{my_sub}_norm/{weight}"] = weights[
                        f"{theirs}/{their_sub}/{norm}/{weight}"
                    ]
                if my_sub == "feed_forward":
                    pairs = {"inner": "inner", "outer": "output"}
                else:
                    pairs = _LINEARS
                for their_dense, my_dense in pairs.items():
                    for weight in ("kernel", "bias"):
                        ours[f"{mine}/{my_sub}/{my_dense}/{weight}"] = weights[
                            f"{theirs}/{their_sub}/layer/{their_dense}/{weight}"
                        ]
        if pre_norm:
            for weight in ("gamma", "beta"):
                ours[f"{stack}/final_norm/{weight}"] = weights[f"model/{stack}/layer_norm/{weight}"]

    source_tokenizer = _tokenizer(source_tokens, source_sp_model and Path(source_sp_model), "--source-sp-model")  # fmt: skip
    target_tokenizer = (
        source_tokenizer
        if shared and source_sp_model == target_sp_model
        else _tokenizer(target_tokens, target_sp_model and Path(target_sp_model), "--target-sp-model")
    )  # fmt: skip
    model = {
        "num_layers": num_encoder_layers,
        "num_encoder_layers": num_encoder_layers,
        "num_decoder_layers": num_decoder_layers,
        "d_model": int(d_model),
        "num_heads": int(heads),
        "d_ff": int(d_ff),
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "ffn_dropout": 0.1,
        "activation": "relu",
        "normalize_first": pre_norm,
        "layer_norm_epsilon": LAYER_NORM_EPSILON,
        "positional_encoding": "opennmt_sinusoidal",
        "share_embeddings": shared,
        "tie_embeddings": not untied,
        "output_bias": not untied,
    }
    return ImportedModel(
        toolkit="opennmt-tf",
        origin=str(path),
        model=model,
        source_tokenizer=source_tokenizer,
        target_tokenizer=target_tokenizer,
        weights=ours,
        # OpenNMT-tf's inference defaults: beam 4 as its auto_config, no length penalty,
        # at most 250 tokens.
        decoding={"beam_size": 4, "length_penalty": 0.0, "max_length": 250},
        details={
            "checkpoint": str(Path(prefix).resolve()),
            "model_type": model_type,
            "num_heads": int(heads),
            "vocabularies": [str(source_path.resolve()), str(target_path.resolve())],
        },
    )
