"""Export a trained translation run to CTranslate2 (``transformer-tf export --format ctranslate2``).

CTranslate2 is a C++ inference engine for Transformers (CPU and GPU, with int8/int16/float16
weights). This module fills a ``ctranslate2.specs.TransformerSpec`` from the weights of a run's
:class:`~transformer_tf.models.seq2seq.Seq2SeqTransformer` and saves it with the run's
vocabularies, so that ``ctranslate2.Translator(EXPORT_DIR)`` translates like the engine:

- embeddings scaled by sqrt(d_model), plus the positions. Our sinusoidal encoding interleaves sin
  and cos channels, which CTranslate2's built-in one does not, so both sinusoidal and learned
  positions are written as an explicit table (``position_encodings``); a sinusoidal export holds
  ``max(model positions, SINUSOIDAL_POSITIONS)`` rows.
- post- or pre-norm blocks (pre-norm with the stacks' final normalization), relu or gelu (erf),
  the model's ``layer_norm_epsilon``; self-attention with a fused query/key/value projection,
  cross-attention with a query and a fused key/value projection (Keras kernels are ``(in,
  out)``, CTranslate2 weights ``(out, in)``: every kernel is transposed).
- shared or separate embeddings; the output projection is the target embedding (tied) or the
  run's own ``output_projection``. Its bias gets ``PAD_BIAS`` at ``PAD_ID``: our searches never
  generate padding, and neither does the export.
- vocabularies in our id order, with our special tokens (``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2,
  ``</s>`` 3) as CTranslate2's unk/bos/eos; decoding starts from ``<s>``; sources get neither
  BOS nor EOS (as in training and in :func:`~transformer_tf.inference.translate.translate_ids`).

Beside ``model.bin``/``config.json``/the vocabularies, the export holds the run's SentencePiece
model(s) (``source.model`` and ``target.model``, or one ``sentencepiece.model`` for a shared
vocabulary), or for word tokenizers their vocabulary and options (``source.vocab`` ...), a
``README.md`` with the lines that translate with it and ``transformer_tf_export.json``
(provenance and the decoding settings that reproduce the engine).

Like the SavedModel export, it is written to a temporary sibling directory and renamed into place:
a refused or failed export leaves nothing, and an existing non-empty directory is never touched.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import keras
import numpy as np
import sentencepiece as spm

import transformer_tf
from transformer_tf.assembly import load_run
from transformer_tf.data.special_tokens import BOS, EOS, PAD_ID, UNK
from transformer_tf.data.tokenizers import (
    SentencePieceTokenizer,
    SentencePieceVocabTokenizer,
    WordTokenizer,
)
from transformer_tf.errors import UserError
from transformer_tf.files import new_directory
from transformer_tf.inference.export import check_export_dir
from transformer_tf.inference.options import DecodingOptions
from transformer_tf.layers import TransformerDecoder, TransformerEmbedding, TransformerEncoder
from transformer_tf.layers.attention import MultiHeadAttention
from transformer_tf.layers.decoder_layer import TransformerDecoderLayer
from transformer_tf.layers.encoder_layer import TransformerEncoderLayer
from transformer_tf.layers.feed_forward import PositionwiseFeedForward
from transformer_tf.layers.positional_encoding import (
    AttentionPositions,
    LearnedPositionalEmbedding,
    MarianSinusoidalPositionalEncoding,
    OpenNMTSinusoidalPositionalEncoding,
    SinusoidalPositionalEncoding,
)
from transformer_tf.models.seq2seq import Seq2SeqTransformer

__all__ = [
    "INSTALL_HINT",
    "PAD_BIAS",
    "QUANTIZATIONS",
    "SINUSOIDAL_POSITIONS",
    "build_spec",
    "export_ctranslate2",
    "sinusoidal_table",
    "unsupported_features",
]

#: Weight types accepted by ``--quantization`` (None keeps float32).
QUANTIZATIONS = ("int8", "int8_float32", "int16", "float16")

#: Rows of the position table written for sinusoidal runs (which have no length limit).
SINUSOIDAL_POSITIONS = 1024

#: Added to the PAD logit. Finite and within float16's range; far below any real logit.
PAD_BIAS = -1e4

INSTALL_HINT = (
    "the CTranslate2 export needs the ctranslate2 package: "
    "pip install 'transformer_tf[ctranslate2]' (or pip install 'ctranslate2>=4.8,<5')"
)

EXPORT_INFO_FILE = "transformer_tf_export.json"


def _ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ctranslate2


#: The sinusoidal position classes that convert (exact classes: a plugin subclass may compute
#: something else): each becomes a table of its own encodings.
SINUSOIDAL_CLASSES = (
    SinusoidalPositionalEncoding,
    OpenNMTSinusoidalPositionalEncoding,
    MarianSinusoidalPositionalEncoding,
)
#: Our feed-forward activations -> CTranslate2's ``specs.Activation`` names.
ACTIVATIONS = {"relu": "RELU", "gelu": "GELU", "swish": "SWISH"}


def unsupported_features(model) -> list[str]:
    """What in ``model`` a CTranslate2 ``TransformerSpec`` cannot express (empty: convertible).

    Exact classes are checked, not registry names, so that a plugin registered under a built-in
    name, or a subclass, is refused rather than converted as if it were the built-in.

    Args:
        model: keras.Model, the run's built model.

    Returns:
        list[str], one line per feature that cannot be converted.
    """
    if type(model) is not Seq2SeqTransformer:
        return [f"model class {type(model).__qualname__} (only seq2seq_transformer converts)"]
    problems = []
    embeddings = [model.source_embedding, model.target_embedding]
    for embedding in embeddings:
        if type(embedding) is not TransformerEmbedding or not embedding.scale:
            problems.append(f"embedding {embedding.name}: not a scaled TransformerEmbedding")
        elif isinstance(embedding.position_encoding, AttentionPositions):
            problems.append(_attention_positions_problem(model, embedding.position_encoding))
        elif type(embedding.position_encoding) not in (
            *SINUSOIDAL_CLASSES,
            LearnedPositionalEmbedding,
        ):
            problems.append(
                f"model.positional_encoding `{model.positional_encoding}` "
                f"({type(embedding.position_encoding).__qualname__}; sinusoidal and learned "
                "convert)"
            )
    for stack, stack_class, block_class in (
        (model.encoder, TransformerEncoder, TransformerEncoderLayer),
        (model.decoder, TransformerDecoder, TransformerDecoderLayer),
    ):
        if type(stack) is not stack_class:
            problems.append(f"{stack.name} class {type(stack).__qualname__}")
            continue
        for block in stack.blocks:
            if type(block) is not block_class:
                problems.append(
                    f"{stack.name} block `{stack.block}` ({type(block).__qualname__}; only "
                    "`transformer` converts)"
                )
                break
            attentions = [block.self_attention] + (
                [block.cross_attention] if block_class is TransformerDecoderLayer else []
            )
            for attention in attentions:
                if type(attention) is MultiHeadAttention and attention.position_mode is not None:
                    problems.append(_attention_positions_problem(model, attention))
                    break
                if type(attention) is not MultiHeadAttention or not attention.use_bias:
                    problems.append(
                        f"model.attention `{stack.attention}` ({type(attention).__qualname__}; "
                        "only multi_head converts)"
                    )
                    break
            ffn = block.feed_forward_layer
            if type(ffn) is not PositionwiseFeedForward or ffn.activation not in ACTIVATIONS:
                problems.append(
                    f"model.feed_forward `{stack.feed_forward}` ({type(ffn).__qualname__}; only "
                    "position_wise with relu, gelu or swish converts)"
                )
            norms = [layer for name, layer in vars(block).items() if name.endswith("_norm")]
            if any(not _is_layer_norm(norm) for norm in norms):
                problems.append(
                    f"model.normalization `{stack.normalization}` (only layer_norm converts)"
                )
        if stack.final_norm is not None and not _is_layer_norm(stack.final_norm):
            problems.append(f"{stack.name} final normalization {type(stack.final_norm).__name__}")
    # One line per distinct problem: every block of a stack would repeat it.
    return list(dict.fromkeys(problems))


def _attention_positions_problem(model, layer) -> str:
    """Relative and rotary positions are refused: CTranslate2's ``TransformerSpec`` has
    options for both (``relative_position``, ``rotary_dim`` with ``rotary_interleave=False``),
    but this export has not been checked against them, so it does not write them."""
    return (
        f"model.positional_encoding `{model.positional_encoding}` ({layer.position_mode} "
        "positions in self-attention are not converted; sinusoidal and learned convert)"
    )


def _is_layer_norm(layer) -> bool:
    return (
        type(layer) is keras.layers.LayerNormalization
        and layer.axis in ([-1], -1, (-1,))
        and layer.center
        and layer.scale
        and not getattr(layer, "rms_scaling", False)
    )


def sinusoidal_table(
    length: int, d_model: int, kind: type = SinusoidalPositionalEncoding
) -> np.ndarray:
    """A sinusoidal encoding as a table: ``(length, d_model)`` float32, row ``k`` the encoding
    of the ``k``-th token (CTranslate2 adds row ``k`` at step ``k``). ``kind`` is the layer class
    (:data:`SINUSOIDAL_CLASSES`); by default ours, channel ``2i`` ``sin(pos / 10000^(2i/d))``
    and ``2i+1`` the cosine."""
    layer = kind(length, d_model, dtype="float32")
    zeros = np.zeros((1, length, d_model), "float32")
    return keras.ops.convert_to_numpy(layer(zeros))[0]


def _numpy(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


def _linear(spec, *denses) -> None:
    """Fill a LinearSpec from one or more Keras Dense layers (fused along the output axis)."""
    spec.weight = np.concatenate([_numpy(d.kernel).T for d in denses], axis=0)  # (out, in)
    spec.bias = np.concatenate([_numpy(d.bias) for d in denses], axis=0)


def _layer_norm(spec, layer) -> None:
    spec.gamma = _numpy(layer.gamma)
    spec.beta = _numpy(layer.beta)


def _self_attention(spec, block) -> None:
    """A block's self-attention: its norm, the fused query/key/value projection, the output."""
    attention = block.self_attention
    _layer_norm(spec.layer_norm, block.self_attention_norm)
    _linear(spec.linear[0], attention.query_dense, attention.key_dense, attention.value_dense)
    _linear(spec.linear[1], attention.output_dense)


def _ffn(spec, block) -> None:
    _layer_norm(spec.layer_norm, block.feed_forward_norm)
    _linear(spec.linear_0, block.feed_forward_layer.inner_dense)
    _linear(spec.linear_1, block.feed_forward_layer.output_dense)


def _positions(embedding, rows: int) -> np.ndarray:
    encoding = embedding.position_encoding
    if isinstance(encoding, LearnedPositionalEmbedding):
        return _numpy(encoding.position_embeddings)
    return sinusoidal_table(rows, embedding.d_model, type(encoding))


def build_spec(model, source_vocab: list[str], target_vocab: list[str]):
    """A ``ctranslate2.specs.TransformerSpec`` with the weights of ``model``.

    Args:
        model: Seq2SeqTransformer, built and restored; must have no :func:`unsupported_features`.
        source_vocab, target_vocab: list[str], the tokens by id (our special tokens at 0..3).

    Returns:
        TransformerSpec, validated (not yet optimized or quantized).

    Raises:
        UserError: the model cannot be converted (see :func:`unsupported_features`).
    """
    problems = unsupported_features(model)
    if problems:
        raise UserError(
            "cannot convert this run to CTranslate2: " + "; ".join(problems) + ". Use the "
            "SavedModel export (--format savedmodel) instead"
        )
    ctranslate2 = _ctranslate2()
    specs = ctranslate2.specs
    activation = getattr(specs.Activation, ACTIVATIONS[model.activation])
    pre_norm = bool(model.normalize_first)
    encoder_spec = specs.TransformerEncoderSpec(
        len(model.encoder.blocks), model.num_heads, pre_norm=pre_norm, activation=activation
    )
    decoder_spec = specs.TransformerDecoderSpec(
        len(model.decoder.blocks), model.num_heads, pre_norm=pre_norm, activation=activation
    )
    spec = specs.TransformerSpec(encoder_spec, decoder_spec)
    rows = max(int(model.max_length), SINUSOIDAL_POSITIONS)

    source_embedding = _numpy(model.source_embedding.token_embedding.embeddings)
    encoder_spec.embeddings[0].weight = source_embedding
    encoder_spec.scale_embeddings = True
    encoder_spec.position_encodings.encodings = _positions(model.source_embedding, rows)
    for layer_spec, block in zip(encoder_spec.layer, model.encoder.blocks, strict=True):
        _self_attention(layer_spec.self_attention, block)
        _ffn(layer_spec.ffn, block)
    if pre_norm:
        _layer_norm(encoder_spec.layer_norm, model.encoder.final_norm)

    target_embedding = (
        source_embedding
        if model.target_embedding is model.source_embedding
        else _numpy(model.target_embedding.token_embedding.embeddings)
    )
    decoder_spec.embeddings.weight = target_embedding
    decoder_spec.scale_embeddings = True
    decoder_spec.position_encodings.encodings = _positions(model.target_embedding, rows)
    for layer_spec, block in zip(decoder_spec.layer, model.decoder.blocks, strict=True):
        cross = block.cross_attention
        _self_attention(layer_spec.self_attention, block)
        _layer_norm(layer_spec.attention.layer_norm, block.cross_attention_norm)
        _linear(layer_spec.attention.linear[0], cross.query_dense)
        _linear(layer_spec.attention.linear[1], cross.key_dense, cross.value_dense)
        _linear(layer_spec.attention.linear[2], cross.output_dense)
        _ffn(layer_spec.ffn, block)
    if pre_norm:
        _layer_norm(decoder_spec.layer_norm, model.decoder.final_norm)

    if model.output_projection is None:
        decoder_spec.projection.weight = target_embedding  # (vocab, d_model): already (out, in)
        bias = (
            _numpy(model.logits_bias).copy()
            if model.output_bias
            else np.zeros(target_embedding.shape[0], np.float32)
        )
    else:
        decoder_spec.projection.weight = _numpy(model.output_projection.kernel).T
        bias = _numpy(model.output_projection.bias).copy()
    bias[PAD_ID] += PAD_BIAS
    decoder_spec.projection.bias = bias

    config = spec.config
    config.unk_token, config.bos_token, config.eos_token = UNK, BOS, EOS
    config.decoder_start_token = BOS
    config.add_source_bos = False
    config.add_source_eos = False
    config.layer_norm_epsilon = float(model.layer_norm_epsilon)
    spec.register_source_vocabulary(list(source_vocab))
    spec.register_target_vocabulary(list(target_vocab))
    spec.validate()
    return spec


def _tokens(tokenizer) -> list[str]:
    """The tokens of a tokenizer by id, for CTranslate2's vocabulary."""
    if isinstance(tokenizer, WordTokenizer | SentencePieceVocabTokenizer):
        return list(tokenizer.vocab)
    if isinstance(tokenizer, SentencePieceTokenizer):
        processor = spm.SentencePieceProcessor(model_proto=tokenizer.model_proto)
        return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    raise UserError(
        f"cannot convert this run to CTranslate2: tokenizer `{tokenizer.kind}` "
        "(word, sentencepiece and sentencepiece_vocab convert)"
    )


def export_ctranslate2(
    run_dir: str | os.PathLike,
    export_dir: str | os.PathLike,
    *,
    checkpoint: str = "latest",
    average_last: int | None = None,
    quantization: str | None = None,
    raw_weights: bool = False,
) -> Path:
    """Convert a checkpoint of a translation run to a CTranslate2 model directory.

    Args:
        run_dir: a directory written by ``transformer-tf train`` (a translation run).
        export_dir: where to write; must not exist or be an empty directory. Missing parents
            are created.
        checkpoint: str, ``"latest"``, ``"best"`` or a step number. Defaults to ``"latest"``.
        average_last: int or None, convert the average of the last K checkpoints instead.
        quantization: None (float32) or one of :data:`QUANTIZATIONS`.
        raw_weights: bool, convert the raw weights of a run that keeps moving averages
            (``training.ema_decay``) rather than the averages.

    Returns:
        Path, ``export_dir``.

    Raises:
        UserError: ctranslate2 is not installed, ``export_dir`` is a file or a non-empty
            directory, an unknown quantization, a classification run, or a model or tokenizer
            that CTranslate2 cannot express (nothing is written then).
    """
    run_dir, export_dir = Path(run_dir), Path(export_dir)
    _ctranslate2()
    check_export_dir(export_dir)
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise UserError(
            f"--quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization}"
        )
    run = load_run(
        run_dir, checkpoint=checkpoint, average_last=average_last, raw_weights=raw_weights
    )
    config = run.config
    run.task.require_command("export --format ctranslate2", str(run_dir))
    source, target = run.task.source_tokenizer, run.task.target_tokenizer
    spec = build_spec(run.model, _tokens(source), _tokens(target))
    spec.optimize(quantization=quantization)

    shared = source is target
    options = DecodingOptions.from_config(config)  # the settings that reproduce the engine
    info = {
        "format": "ctranslate2",
        "run_dir": str(run_dir.resolve()),
        "checkpoint": str(run.checkpoint),
        "step": run.step,
        "quantization": quantization or "float32",
        "tokenizer": {"source": source.kind, "target": target.kind, "shared": shared},
        "max_input_length": options.max_input_length - 1,
        "max_decoding_length": options.max_output_length,
        "beam_size": options.beam_size,
        "length_penalty_gnmt": options.length_penalty,
        "versions": {
            "transformer_tf": transformer_tf.__version__,
            "ctranslate2": _ctranslate2().__version__,
        },
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }

    with new_directory(export_dir, check_export_dir, error=UserError) as tmp:
        spec.save(str(tmp))
        tokenizer_files = _save_tokenizers(tmp, source, target, shared)
        info["tokenizer"]["files"] = tokenizer_files
        (tmp / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(_readme(info, source, tokenizer_files), encoding="utf-8")
    return export_dir


def _save_tokenizers(directory: Path, source, target, shared: bool) -> dict[str, list[str]]:
    """Write the tokenizers beside the model; returns side -> file names."""
    if shared:
        prefix = "sentencepiece" if isinstance(source, SentencePieceTokenizer) else "vocab"
        names = [p.name for p in source.save(directory, prefix)]
        return {"source": names, "target": names}
    return {
        "source": [p.name for p in source.save(directory, "source")],
        "target": [p.name for p in target.save(directory, "target")],
    }


def _readme(info: dict, source, files: dict[str, list[str]]) -> str:
    max_in, max_out = info["max_input_length"], info["max_decoding_length"]
    options = (
        f"beam_size={info['beam_size']}, max_input_length={max_in}, "
        f"max_decoding_length={max_out}, min_decoding_length=0"
    )
    if isinstance(source, SentencePieceTokenizer | SentencePieceVocabTokenizer):
        src, tgt = files["source"][0], files["target"][0]
        if src == tgt:
            processors = f'sp_src = sp_tgt = spm.SentencePieceProcessor("{src}")'
        else:
            processors = (
                f'sp_src, sp_tgt = spm.SentencePieceProcessor("{src}"), '
                f'spm.SentencePieceProcessor("{tgt}")'
            )
        code = (
            "import ctranslate2, sentencepiece as spm\n"
            f'translator = ctranslate2.Translator("."); {processors}\n'
            "result = translator.translate_batch([sp_src.encode(text, out_type=str)"
            + (' + ["</s>"]' if getattr(source, "add_eos", False) else "")
            + f"], {options})\n"
            "print(sp_tgt.decode(result[0].hypotheses[0]))\n"
        )
        tokens = "SentencePiece pieces" + (
            " (looked up by string in the vocabulary; unknown pieces are <unk>)"
            if isinstance(source, SentencePieceVocabTokenizer)
            else ""
        )
    else:
        code = (
            "import ctranslate2\n"
            'translator = ctranslate2.Translator(".")\n'
            f"result = translator.translate_batch([text.split()], {options})\n"
            'print(" ".join(result[0].hypotheses[0]))\n'
        )
        tokens = (
            "words (split on whitespace"
            + ("; lowercase the text" if source.lowercase else "")
            + ('; put spaces around .,!?;:"()' if source.split_punctuation else "")
            + ")"
        )
    return (
        "# CTranslate2 export\n\n"
        f"Exported by transformer_tf from `{info['run_dir']}` ({info['checkpoint']}, step "
        f"{info['step']}), weights {info['quantization']}. The model reads {tokens}; sources get "
        + ("</s> at the end" if getattr(source, "add_eos", False) else "no BOS/EOS")
        + ". Translate (in this directory, `pip install ctranslate2 sentencepiece`):\n\n"
        f"```python\n{code}```\n\n"
        "`length_penalty` (CTranslate2's default is 1) differs from transformer_tf's "
        f"(`decoding.length_penalty: {info['length_penalty_gnmt']}`): CTranslate2 divides a "
        "score by length^alpha, transformer_tf by ((5 + length) / 6)^alpha (GNMT); with "
        "`length_penalty=0` both give the same translations. Provenance: "
        "`transformer_tf_export.json`.\n"
    )
