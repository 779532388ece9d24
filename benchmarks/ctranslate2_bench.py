"""The engine vs its CTranslate2 export: speed, agreement and BLEU on a parallel file.

    .venv/bin/python benchmarks/ctranslate2_bench.py RUN_DIR SOURCE REFERENCE \\
        [--beam-size 4] [--length-penalty 0] [--limit N] [--threads T] [--output FILE.json]

Translates every sentence of SOURCE (one per line) with the engine
(:func:`~transformer_tf.inference.translate.translate`, the run's latest checkpoint) and
with CTranslate2 exports of the same checkpoint in float32 and int8 (written to a temporary
directory), with the same beam size, maximum lengths and length penalty 0 by default (the only
value that ranks hypotheses alike: CTranslate2 divides by length^alpha, the engine by GNMT's
((5 + length) / 6)^alpha). Reports sentences per second (tokenization included; each side warmed
up first on a few sentences, so tracing and model loading are not timed), the share of sentences
whose translation is identical to the engine's, and sacreBLEU against REFERENCE. Markdown to
stdout.

Multi30k: ``benchmarks/ctranslate2_bench.py runs/multi30k ../shared/data/multi30k/val.de
../shared/data/multi30k/val.en`` (1,014 sentences).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import ctranslate2

from transformer_tf import load_builtins
from transformer_tf.assembly import load_run
from transformer_tf.evaluation.scorers import bleu
from transformer_tf.inference.ctranslate2_export import export_ctranslate2
from transformer_tf.inference.options import DecodingOptions, examples_per_batch
from transformer_tf.inference.translate import translate as engine_translate


def read_pairs(source: Path, reference: Path, limit: int | None) -> tuple[list[str], list[str]]:
    sources = source.read_text(encoding="utf-8").split("\n")
    references = reference.read_text(encoding="utf-8").split("\n")
    # Files may end with a newline or an extra empty line (Multi30k): drop empty trailing pairs.
    while sources and references and not sources[-1].strip() and not references[-1].strip():
        sources.pop()
        references.pop()
    if len(sources) != len(references):
        sys.exit(f"{source} has {len(sources)} lines, {reference} {len(references)}")
    return sources[:limit], references[:limit]


def _vocab(tokenizer) -> list[str]:
    if hasattr(tokenizer, "vocab"):
        return list(tokenizer.vocab)
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=tokenizer.model_proto)
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("source", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=0.0)
    parser.add_argument("--limit", type=int, help="first N sentences only")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CTranslate2 threads")
    parser.add_argument("--checkpoint", default="latest")
    parser.add_argument("--output", type=Path, help="write the results as JSON too")
    args = parser.parse_args(argv)

    load_builtins()
    sources, references = read_pairs(args.source, args.reference, args.limit)
    run = load_run(args.run_dir, checkpoint=args.checkpoint)
    config, task = run.config, run.task
    options = DecodingOptions(  # beam search, as the CTranslate2 side: no sampling
        beam_size=args.beam_size,
        length_penalty=args.length_penalty,
        max_input_length=config.data.max_length,
        max_output_length=config.decoding.max_length,
        batch_size=examples_per_batch(config),
    )
    max_in, max_out = options.max_input_length, options.max_output_length
    batch_size = options.batch_size
    source_tok, target_tok = task.source_tokenizer, task.target_tokenizer

    def engine(texts):
        return engine_translate(run.model, source_tok, target_tok, texts, options).texts

    source_vocab, target_vocab = _vocab(source_tok), _vocab(target_tok)
    target_index = {token: i for i, token in enumerate(target_vocab)}

    def exported(translator):
        def translate(texts):
            # Our tokenizer's ids as tokens: exactly the engine's input (truncated alike).
            batch = [[source_vocab[i] for i in source_tok.encode(t)[: max_in - 1]] for t in texts]
            results = translator.translate_batch(
                batch, max_batch_size=batch_size, beam_size=args.beam_size,
                length_penalty=args.length_penalty, max_decoding_length=max_out,
                min_decoding_length=0, max_input_length=0,
            )  # fmt: skip
            return [target_tok.decode([target_index[t] for t in r.hypotheses[0]]) for r in results]

        return translate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        systems = [("engine (TensorFlow)", engine)]
        for quantization in ("float32", "int8"):
            path = Path(tmp) / quantization
            export_ctranslate2(
                args.run_dir,
                path,
                checkpoint=args.checkpoint,
                quantization=None if quantization == "float32" else quantization,
            )
            translator = ctranslate2.Translator(
                str(path), device="cpu", compute_type=quantization, intra_threads=args.threads
            )
            systems.append((f"CTranslate2 {quantization}", exported(translator)))
        baseline = None
        for name, translate in systems:
            translate(sources[:8])  # warm-up: tracing, caches
            start = time.perf_counter()
            outputs = translate(sources)
            seconds = time.perf_counter() - start
            baseline = outputs if baseline is None else baseline
            same = sum(a == b for a, b in zip(outputs, baseline, strict=True))
            rows.append(
                {
                    "system": name,
                    "sentences": len(sources),
                    "seconds": round(seconds, 2),
                    "sentences_per_second": round(len(sources) / seconds, 1),
                    "agreement": round(same / len(sources), 4),
                    "bleu": round(bleu(outputs, references), 2),
                }
            )  # fmt: skip
    engine_speed = rows[0]["sentences_per_second"]
    print(
        f"{args.run_dir} (step {run.step}), {len(sources)} sentences of {args.source}, "
        f"beam {args.beam_size}, length penalty {args.length_penalty}, "
        f"CTranslate2 {ctranslate2.__version__} on {args.threads} threads\n"
    )
    print("| system | sentences/s | speed-up | same as engine | BLEU |\n|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['system']} | {row['sentences_per_second']} | "
            f"{row['sentences_per_second'] / engine_speed:.2f}x | {row['agreement']:.1%} | "
            f"{row['bleu']:.2f} |"
        )
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
