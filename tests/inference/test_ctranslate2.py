"""CTranslate2 export: CTranslate2 translates with the same tokens as our greedy and beam search.

Runs are trained in process through the CLI (the toy run with word tokenizers of
tests/shared_runs.py, 60 steps; the variant for 2 steps: equality of the two engines' outputs is what is tested, not quality), then
exported with ``transformer-tf export --format ctranslate2`` and decoded by
``ctranslate2.Translator`` in float32 with the same maximum length. Beams are compared with
length penalty 0 on both sides (CTranslate2 divides by length^alpha, we by GNMT's
((5 + length) / 6)^alpha: only alpha = 0 ranks alike).
"""

from __future__ import annotations

import json
import random
import sys

import keras
import numpy as np
import pytest

from tests.fixtures import translation_config, write_config
from transformer_tf.assembly import load_run
from transformer_tf.cli import main
from transformer_tf.data.special_tokens import PAD_ID
from transformer_tf.inference.options import DecodingOptions
from transformer_tf.inference.search import make_decoder
from transformer_tf.inference.translate import translate_ids
from transformer_tf.registry import REGISTRIES, Registry

ctranslate2 = pytest.importorskip("ctranslate2")

MAX_LENGTH = 12  # generated tokens, EOS included: short enough that some rows hit the limit


def _train(root, name, steps, data=None, **sections):
    # Validation without decoding: what is tested is the export, not the runs' validation.
    training = {"steps": steps, "checkpoint_every": steps, "validation": {"decode": False}}
    config = translation_config(training=training, **sections)
    if data is not None:
        config["data"] = data
    path = write_config(root / f"{name}.yaml", config)
    run_dir = root / name
    assert main(["train", str(path), "--run-dir", str(run_dir), "--no-progress"]) == 0
    return run_dir


def _export(run_dir, export_dir, *extra):
    return main(["export", str(run_dir), str(export_dir), "--format", "ctranslate2", *extra])


def _engine_ids(run, sources, beam_size):
    options = DecodingOptions(max_output_length=MAX_LENGTH, beam_size=beam_size, length_penalty=0)
    decoder = make_decoder(run.model, options)
    return translate_ids(sources, batch_size=8, decoder=decoder)


def _ctranslate2_ids(export_dir, sources, beam_size):
    vocab = json.loads(
        next(p for p in export_dir.glob("*vocabulary.json") if "source" not in p.name).read_text()
    )
    source_vocab_file = export_dir / "source_vocabulary.json"
    source_vocab = (
        json.loads(source_vocab_file.read_text()) if source_vocab_file.exists() else vocab
    )
    index = {token: i for i, token in enumerate(vocab)}
    translator = ctranslate2.Translator(str(export_dir), device="cpu", compute_type="float32")
    results = translator.translate_batch(
        [[source_vocab[i] for i in ids] for ids in sources],
        beam_size=beam_size,
        length_penalty=0,
        max_decoding_length=MAX_LENGTH,
        min_decoding_length=0,
        max_input_length=0,
    )
    return [[index[token] for token in result.hypotheses[0]] for result in results]


def _sources(run, count=24):
    source_ids, _ = run.task.encoded("test", training=False)
    return [list(ids) for ids in source_ids[:count]]


def _mask_pad_in_engine(run):
    """Give PAD a logit of about -1e4 in our model too (untied output projections only).

    Both searches exclude PAD, but CTranslate2 (like the export's PAD bias) renormalizes the
    other tokens' probabilities while our search masks PAD's log-probability after the softmax:
    scores then differ by log(1 - p(PAD)). That is ~0 for a trained model (PAD is never a label)
    but not for the 2-step variants, whose nearly uniform beams it can reorder; with PAD's
    probability ~0 on both sides the two searches must agree exactly.
    """
    bias = run.model.output_projection.bias
    values = keras.ops.convert_to_numpy(bias).copy()
    values[PAD_ID] -= 1e4
    bias.assign(values)


def _assert_same_translations(run_dir, export_dir, sources=None):
    run = load_run(run_dir)
    if run.model.output_projection is not None:
        _mask_pad_in_engine(run)
    sources = sources or _sources(run)
    for beam_size in (1, 3):
        ours = _engine_ids(run, sources, beam_size)
        theirs = _ctranslate2_ids(export_dir, sources, beam_size)
        assert theirs == ours, f"beam_size={beam_size}"
    return ours


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("ct2")


@pytest.fixture(scope="module")
def toy_run(request):
    """The toy run shared with other files (tests/shared_runs.py): word tokenizers, 60 steps."""
    return request.getfixturevalue("toy_translation_run")


@pytest.fixture(scope="module")
def toy_export(toy_run, root):
    export_dir = root / "toy_ct2"
    assert _export(toy_run, export_dir) == 0
    return export_dir


def test_toy_run_translates_like_greedy_and_beam_search(toy_run, toy_export, capsys):
    export_dir = toy_export
    ours = _assert_same_translations(toy_run, export_dir)
    # Not a degenerate model: translations differ, some end before the limit, some reach it.
    assert len({tuple(ids) for ids in ours}) > 5
    lengths = {len(ids) for ids in ours}
    assert min(lengths) < MAX_LENGTH - 1
    config = json.loads((export_dir / "config.json").read_text())
    assert (config["bos_token"], config["eos_token"], config["unk_token"]) == (
        "<s>",
        "</s>",
        "<unk>",
    )
    assert config["add_source_eos"] is False and config["layer_norm_epsilon"] == 1e-6
    assert (export_dir / "source.vocab").exists() and (export_dir / "target.vocab").exists()
    assert "translate_batch" in (export_dir / "README.md").read_text()
    # An existing non-empty directory is refused and left alone.
    before = sorted(p.name for p in export_dir.iterdir())
    assert _export(toy_run, export_dir) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in export_dir.iterdir()) == before


def test_text_round_trip_and_int8(toy_run, toy_export, root, capsys):
    """The README's word-level recipe gives our detokenized text; int8 loads and translates."""
    export_dir = root / "toy_int8"
    assert _export(toy_run, export_dir, "--quantization", "int8", "--checkpoint", "60") == 0
    assert f"exported CTranslate2 model to {export_dir}" in capsys.readouterr().out
    run = load_run(toy_run)
    texts = ["the big dog sees a cat", "we love the old tree"]
    sources = [run.task.source_tokenizer.encode(t) for t in texts]
    ours = [run.task.target_tokenizer.decode(ids) for ids in _engine_ids(run, sources, 1)]
    translator = ctranslate2.Translator(str(toy_export), compute_type="float32")
    results = translator.translate_batch(
        [t.split() for t in texts], beam_size=1, max_decoding_length=MAX_LENGTH,
        min_decoding_length=0,
    )  # fmt: skip
    assert [" ".join(r.hypotheses[0]) for r in results] == ours
    quantized = ctranslate2.Translator(str(export_dir), compute_type="int8")
    assert len(quantized.translate_batch([t.split() for t in texts], beam_size=2)) == 2
    # int8: one byte instead of four for every matrix (the position tables stay float32).
    matrices = sum(
        int(np.prod(w.shape))
        for w in run.model.weights
        if len(w.shape) == 2 and "position" not in w.path
    )
    saved = (toy_export / "model.bin").stat().st_size - (export_dir / "model.bin").stat().st_size
    assert saved >= 2.5 * matrices  # less one float32 scale per row


def _parallel_files(root):
    rng = random.Random(0)
    words = ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op"]
    lines = [" ".join(rng.choices(words, k=rng.randint(2, 7))) for _ in range(120)]
    for split, chunk in (("train", lines[:100]), ("valid", lines[100:])):
        (root / f"{split}.src").write_text("\n".join(chunk) + "\n", encoding="utf-8")
        # A deterministic "translation": reversed word order, upper case.
        reversed_lines = [" ".join(reversed(line.split())).upper() for line in chunk]
        (root / f"{split}.tgt").write_text("\n".join(reversed_lines) + "\n", encoding="utf-8")
    splits = {
        split: {"source": str(root / f"{name}.src"), "target": str(root / f"{name}.tgt")}
        for split, name in (("train", "train"), ("validation", "valid"), ("test", "valid"))
    }
    return {
        "source": "parallel_text",
        "splits": splits,
        "tokenizer": "sentencepiece",
        "vocab_size": 64,
        "shared_vocab": True,
        "max_length": 24,
    }


def test_sentencepiece_pre_norm_learned_positions_gelu_shared_untied(root):
    """The other side of every option the toy run (post-norm, sinusoidal, relu, separate
    embeddings tied to the output, word tokenizers) takes."""
    run_dir = _train(
        root,
        "spm",
        2,
        data=_parallel_files(root),
        model={
            "normalize_first": True,
            "positional_encoding": "learned",
            "activation": "gelu",
            "layer_norm_epsilon": 1e-5,
            "share_embeddings": True,
            "tie_embeddings": False,
            "num_decoder_layers": 2,
        },
    )
    export_dir = root / "spm_ct2"
    assert _export(run_dir, export_dir) == 0
    assert json.loads((export_dir / "config.json").read_text())["layer_norm_epsilon"] == 1e-5
    assert (export_dir / "sentencepiece.model").exists()
    assert (export_dir / "shared_vocabulary.json").exists()
    assert (
        'sp_src = sp_tgt = spm.SentencePieceProcessor("sentencepiece.model")'
        in (export_dir / "README.md").read_text()
    )
    _assert_same_translations(run_dir, export_dir)


class _ScaledNorm(keras.layers.LayerNormalization):
    """A normalization that is not CTranslate2's layer norm (a plugin, as far as export knows)."""


def test_unconvertible_run_is_refused_and_writes_nothing(root, capsys):
    with pytest.MonkeyPatch.context() as patch:
        # A copy of the registry for this test only: the name never reaches other tests.
        copy = Registry("normalization")
        for name in REGISTRIES["normalization"].names():
            copy.add(name, REGISTRIES["normalization"].get(name))
        copy.add("ct2_test.scaled_norm", _ScaledNorm)
        patch.setitem(REGISTRIES, "normalization", copy)
        run_dir = _train(root, "plugin", 1, model={"normalization": "ct2_test.scaled_norm"})
        capsys.readouterr()
        export_dir = root / "plugin_ct2"
        assert _export(run_dir, export_dir) == 2
    err = capsys.readouterr().err
    assert "cannot convert this run to CTranslate2" in err
    assert "model.normalization `ct2_test.scaled_norm`" in err
    assert not export_dir.exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".plugin_ct2")]


def test_without_ctranslate2_the_command_says_how_to_install_it(toy_run, root, capsys):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "ctranslate2", None)  # `import ctranslate2` raises ImportError
        assert _export(toy_run, root / "no_ct2") == 2
    assert "pip install 'transformer_tf[ctranslate2]'" in capsys.readouterr().err
    assert not (root / "no_ct2").exists()
