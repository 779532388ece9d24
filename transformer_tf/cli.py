"""``transformer-tf train|evaluate|translate|score|export``.

Exit codes: 0 success, 2 bad user input (config, paths, data, a run directory in use by another
trainer, a damaged checkpoint asked for by name; a one-paragraph message and no traceback), 1 a
failed write (full disk, read-only or forbidden path: one line, no traceback unless ``-v``), a
run that diverged or anything unexpected, 143 / 130 training stopped by SIGTERM / SIGINT after
checkpointing its last step (128 + the signal, as if it had killed the process, so schedulers
retry; rerunning the same command resumes there), 130 interrupted elsewhere.

The command is quiet and quick to answer: ``--help`` and config errors come before TensorFlow is
imported (the package defers its built-ins in this process; see ``transformer_tf``), and without
``-v`` TensorFlow's C++ start-up lines (oneDNN and CUDA probes, ``absl::InitializeLog``) are not
shown: TensorFlow's log level is raised to 3 and the few lines it prints before its logging
starts, which no level silences, are dropped from stderr while it is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import re
import shlex
import sys
import tempfile
import traceback
from pathlib import Path

#: Lines TensorFlow's native code writes to stderr while it starts, dropped unless ``-v``. They
#: come before its logging is initialised (so TF_CPP_MIN_LOG_LEVEL cannot silence them), once per
#: native library that bundles absl, in glog's format: ``I0000 00:00:... port.cc:153] ...``.
_STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "  # glog's INFO lines, whatever they say
    r"|[WE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] (?:failed call to cuInit"
    r"|Unable to register cu(?:DNN|FFT|BLAS) factory|TF-TRT Warning: Could not find TensorRT)"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler"
)


def _quiet_tensorflow(verbose: bool) -> None:
    """Raise TensorFlow's native log level to 3 (fatal only) for this process, unless ``verbose``.

    Must run before TensorFlow is imported (it reads the level once); a no-op after. Level 3 also
    hides the ``failed call to cuInit`` error of a machine without a GPU, which level 2 shows.
    """
    if not verbose and "tensorflow" not in sys.modules:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


@contextlib.contextmanager
def _startup_lines_dropped(verbose: bool):
    """Run the block with stderr captured, then write it back less TensorFlow's start-up lines.

    The capture is of file descriptor 2, because native code writes there directly, past
    ``sys.stderr``. Everything else written meanwhile (Python warnings, a plugin's own output) is
    written back, in order, also when the block raises. Nothing is captured when ``verbose``.

    Args:
        verbose: bool, ``-v``: leave stderr alone.
    """
    try:
        saved = None if verbose else os.dup(2)
    except OSError:  # No stderr at all (closed): nothing to filter.
        saved = None
    if saved is None:
        yield
        return
    sys.stderr.flush()
    try:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                capture.seek(0)
                kept = [
                    line
                    for line in capture.read().splitlines(keepends=True)
                    if not _STARTUP_NOISE.match(line.decode("utf-8", "replace"))
                ]
                if kept:
                    os.write(2, b"".join(kept))
    finally:
        os.close(saved)


def _load_builtins(args) -> None:
    """Import TensorFlow and the built-in layers and models, quietly unless ``-v``."""
    import transformer_tf

    with _startup_lines_dropped(args.verbose):
        transformer_tf.load_builtins()


def _add_set(parser):
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.batch_size=32 (repeatable)",
    )


def _add_raw_weights(parser):
    parser.add_argument(
        "--raw-weights",
        action="store_true",
        help="use the trained weights themselves, not their moving averages (a run with "
        "training.ema_decay; without it, a no-op)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transformer-tf",
        description="Train, evaluate, translate with and export encoder-decoder Transformers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train (or resume) a config")
    train.add_argument("config", type=Path, help="YAML config file")
    train.add_argument("--run-dir", type=Path, help="run directory (default: runs/<config name>)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--init-from", metavar="RUN_DIR|CHECKPOINT",
        help="start a new run from the weights of this run (its latest checkpoint) or "
        "checkpoint (RUN/checkpoints/ckpt-N): fresh optimizer, step 0; adopts the source's "
        "vocabulary unless --update-vocab or data.vocabulary (docs/fine_tuning.md)",
    )  # fmt: skip
    train.add_argument(
        "--update-vocab", action="store_true",
        help="with --init-from: build this config's vocabulary and map the embeddings by token "
        "(kept tokens keep their rows, new ones start as initialised)",
    )  # fmt: skip
    _add_set(train)

    evaluate = commands.add_parser("evaluate", help="score a checkpoint of a run")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument(
        "--split", default="validation", help="split to score (default: validation)"
    )
    evaluate.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    evaluate.add_argument(
        "--average-last", type=int, metavar="K", help="average the last K checkpoints"
    )
    _add_raw_weights(evaluate)
    evaluate.add_argument("--beam-size", type=int, help="beam size for decoding (translation)")
    evaluate.add_argument("--output-json", type=Path, help="also write the scores here")
    evaluate.add_argument(
        "--distributed", action="store_true", help="evaluate under the config's strategy"
    )
    evaluate.add_argument(
        "--ensemble",
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="average this run's probabilities with these runs or checkpoints (translation or "
        "classification runs with the same vocabularies)",
    )
    _add_set(evaluate)

    translate = commands.add_parser("translate", help="translate sentences with a run")
    translate.add_argument("run_dir", type=Path)
    translate.add_argument("text", nargs="*", help="sentences (default: read --input or stdin)")
    translate.add_argument("--input", type=Path, help="file with one sentence per line")
    translate.add_argument("--output", type=Path, help="write translations here (default: stdout)")
    translate.add_argument("--beam-size", type=int, help="beam size (default: decoding.beam_size)")
    translate.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    translate.add_argument("--average-last", type=int, metavar="K")
    _add_raw_weights(translate)
    translate.add_argument(
        "--n-best", type=int, default=1, metavar="N",
        help="print the N best hypotheses per input, best first (N <= beam size; default 1)",
    )  # fmt: skip
    translate.add_argument(
        "--with-scores", action="store_true", help="prefix each hypothesis with `SCORE ||| `"
    )
    translate.add_argument(
        "--format", choices=("text", "jsonl"), default="text",
        help="text: one hypothesis a line; jsonl: one JSON object per input with every "
        "hypothesis' text, tokens and score",
    )  # fmt: skip
    translate.add_argument(
        "--no-truncate", action="store_true",
        help="refuse inputs longer than data.max_length - 1 tokens instead of cutting them",
    )  # fmt: skip
    translate.add_argument(
        "--ensemble",
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="average the probabilities of these runs or checkpoints with this run's at every "
        "step (the same vocabularies); sentences go before this option, or use --input",
    )
    translate.add_argument(
        "--alignment", action="store_true",
        help="append ` ||| ` and the Pharaoh alignment (SOURCE-TARGET token indices, from the "
        "last decoder layer's cross-attention averaged over heads); jsonl: an \"alignment\" key",
    )  # fmt: skip
    translate.add_argument(
        "--attention-plot", type=Path, metavar="FILE.png",
        help="draw the cross-attention heatmap of the best translation of the one SENTENCE given "
        "on the command line (needs matplotlib: pip install 'transformer-tf[plot]')",
    )  # fmt: skip
    _add_set(translate)

    score = commands.add_parser(
        "score", help="score given translations: log-probability of each target under a run"
    )
    score.add_argument("run_dir", type=Path)
    score.add_argument("--source", type=Path, required=True, help="source sentences, one a line")
    score.add_argument("--target", type=Path, required=True, help="their translations, one a line")
    score.add_argument("--output", type=Path, help="write `SCORE ||| TARGET` lines here")
    score.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    score.add_argument("--average-last", type=int, metavar="K")
    _add_raw_weights(score)
    _add_set(score)

    export = commands.add_parser(
        "export", help="export a run as a TensorFlow SavedModel or a CTranslate2 model"
    )
    export.add_argument("run_dir", type=Path)
    export.add_argument("export_dir", type=Path)
    export.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    export.add_argument("--average-last", type=int, metavar="K")
    _add_raw_weights(export)
    export.add_argument(
        "--format",
        choices=("savedmodel", "ctranslate2"),
        default="savedmodel",
        help="savedmodel (TensorFlow Serving; default) or ctranslate2 (fast CPU/GPU inference)",
    )
    export.add_argument(
        "--beam-size", type=int, help="beam size baked into the export (savedmodel only)"
    )
    export.add_argument(
        "--n-best", type=int, metavar="N",
        help="savedmodel: also return the N best translations and their scores (N <= beam size)",
    )  # fmt: skip
    export.add_argument(
        "--quantization",
        choices=("int8", "int8_float32", "int16", "float16"),
        help="weight type of a ctranslate2 export (default: float32)",
    )
    imported = commands.add_parser(
        "import",
        help="make a run directory of a model trained with OpenNMT-tf or Marian (OPUS-MT)",
        description="Read another toolkit's Transformer into a run directory that evaluate, "
        "translate, score, export and train --init-from accept (docs/fine_tuning.md).",
    )
    imported.add_argument("toolkit", choices=("opennmt-tf", "marian"))
    imported.add_argument(
        "path", type=Path,
        help="opennmt-tf: the model directory (its `checkpoint` file names the latest) or a "
        "checkpoint prefix (ckpt-N); marian: a Hugging Face MarianMTModel directory "
        "(config.json, model.safetensors, source.spm, target.spm, vocab.json)",
    )  # fmt: skip
    imported.add_argument("--run-dir", type=Path, required=True, help="the new run directory")
    imported.add_argument(
        "--config", type=Path,
        help="a translation config whose data, decoding and training sections the run takes "
        "(its model section becomes the imported model's); default: no data (data.source: none)",
    )  # fmt: skip
    onmt = imported.add_argument_group("opennmt-tf")
    onmt.add_argument("--source-vocab", type=Path, help="the source vocabulary file")
    onmt.add_argument("--target-vocab", type=Path, help="the target vocabulary file")
    onmt.add_argument(
        "--source-sp-model", type=Path,
        help="the SentencePiece model the source text was segmented with (default: split on "
        "spaces, OpenNMT-tf's default)",
    )  # fmt: skip
    onmt.add_argument("--target-sp-model", type=Path, help="the target side's, likewise")
    onmt.add_argument(
        "--num-heads", type=int,
        help="attention heads (a checkpoint does not record them; default: 8, or 16 with "
        "--model-type TransformerBig)",
    )  # fmt: skip
    onmt.add_argument(
        "--model-type", default="Transformer",
        choices=("Transformer", "TransformerBase", "TransformerBig"),
        help="the OpenNMT-tf model class the checkpoint was trained with (default: Transformer)",
    )  # fmt: skip
    _add_set(imported)
    return parser


def cmd_import(args) -> int:
    from transformer_tf.errors import UserError

    if args.toolkit == "marian" and (
        args.source_vocab or args.target_vocab or args.source_sp_model or args.target_sp_model
        or args.num_heads or args.model_type != "Transformer"
    ):  # fmt: skip
        raise UserError(
            "--source-vocab, --target-vocab, --source-sp-model, --target-sp-model, --num-heads "
            "and --model-type are opennmt-tf options: a Marian model directory has them all"
        )
    _load_builtins(args)
    from transformer_tf.importing import write_run

    if args.toolkit == "opennmt-tf":
        from transformer_tf.importing.opennmt_tf import read_opennmt_tf

        model = read_opennmt_tf(
            args.path,
            source_vocab=args.source_vocab,
            target_vocab=args.target_vocab,
            source_sp_model=args.source_sp_model,
            target_sp_model=args.target_sp_model,
            num_heads=args.num_heads,
            model_type=args.model_type,
        )
    else:
        from transformer_tf.importing.marian import read_marian

        model = read_marian(args.path)
    path = write_run(model, args.run_dir, config_path=args.config, overrides=args.overrides)
    print(f"imported {args.toolkit} model {args.path} into {path}")
    return 0


def cmd_train(args) -> int:
    from transformer_tf.config import check_registered_names, load_config

    # Validated before any TensorFlow work. A plugin may import TensorFlow (to register a class).
    with _startup_lines_dropped(args.verbose):
        config = load_config(args.config, args.overrides)
    _load_builtins(args)
    # load_config could not check the registered names without the built-ins: check them now.
    check_registered_names(config, args.config, overrides=args.overrides)
    run_dir = args.run_dir or Path("runs") / args.config.stem
    from transformer_tf.errors import RunWriteError
    from transformer_tf.training.trainer import build_trainer

    try:
        trainer = build_trainer(
            config,
            run_dir,
            show_progress=not args.no_progress,
            init_from=args.init_from,
            update_vocab=args.update_vocab,
        )
        if trainer.is_chief:
            # What `training.mixed_precision` (default `auto`) came to on this hardware, and why.
            print(f"precision: {trainer.precision.describe()}", flush=True)
            batch = trainer.batch
            if batch.requested == "auto" or batch.effective is not None:
                # What `training.batch_size: auto` or effective_batch_size came to, and why.
                print(f"batch size: {batch.describe()}", flush=True)
            if trainer.initialized_from is not None:
                from transformer_tf.init_from import describe

                print(f"init from: {describe(trainer.initialized_from)}", flush=True)
        result = trainer.train()
    except RunWriteError as error:
        command = ["transformer-tf", "train", str(args.config), "--run-dir", str(run_dir)]
        if args.init_from:
            command += ["--init-from", args.init_from]
        for override in args.overrides:
            command += ["--set", override]
        resume = f"Free space or fix permissions, then resume with: {shlex.join(command)}"
        error.hint = f"{error.hint}. {resume}" if error.hint else resume
        raise
    # Epochs are counted when the loop sees the end of the data; a step budget that ends on an
    # epoch's last batch stops before that, so report steps, which are exact.
    print(f"{result.stop_reason} at step {result.step}; run directory: {run_dir}")
    if result.validation:
        last = result.validation[-1]
        print(
            "last validation: " + ", ".join(f"{k}={v:.4f}" for k, v in last.items() if k != "step")
        )
    return 0


def cmd_evaluate(args) -> int:
    _load_builtins(args)
    from transformer_tf.evaluation.evaluator import evaluate_run, format_table, write_json

    result = evaluate_run(
        args.run_dir,
        split=args.split,
        checkpoint=args.checkpoint,
        average_last=args.average_last,
        overrides=args.overrides,
        beam_size=args.beam_size,
        distributed=args.distributed,
        ensemble=args.ensemble,
        raw_weights=args.raw_weights,
    )
    print(format_table(result))
    write_json(result, args.output_json or args.run_dir / f"eval_{args.split}.json")
    return 0


def _read_lines(path: Path, option: str) -> list[str]:
    """The sentences of a file given as ``option``, one per line, split as training and
    evaluation data are (:func:`~transformer_tf.data.parallel.read_lines`), empty lines kept:
    each line gets its output line. A UserError naming both if unreadable."""
    from transformer_tf.data.parallel import read_lines
    from transformer_tf.errors import DataError, UserError

    try:
        return read_lines(path, keep_empty_tail=True)
    except DataError as error:
        raise UserError(f"{option}: {error}") from None


def _load_run_for(args, command: str):
    """The run of ``args.run_dir`` at ``args.checkpoint``, if its task supports ``command``."""
    from transformer_tf.assembly import load_run

    run = load_run(
        args.run_dir,
        checkpoint=args.checkpoint,
        average_last=args.average_last,
        overrides=args.overrides,
        raw_weights=args.raw_weights,
    )
    run.task.require_command(command, str(args.run_dir))
    return run


def _write_output(text: str, path: Path | None) -> None:
    if path:
        path.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def cmd_translate(args) -> int:
    from transformer_tf.inference.options import DecodingOptions  # no TensorFlow

    DecodingOptions.check_flags(n_best=args.n_best)
    if args.attention_plot is not None:
        _check_attention_plot(args)
    if args.text:
        texts = args.text
    elif args.input:
        texts = _read_lines(args.input, "--input")
    else:
        from transformer_tf.data.parallel import split_lines

        texts = split_lines(sys.stdin.read(), keep_empty_tail=True)
    _load_builtins(args)
    from transformer_tf.inference.translate import translate

    if args.beam_size is not None:
        # As an override, so that the config is validated with it (sampling needs beam 1:
        # `--beam-size 1 --set decoding.sampling_topk=0` on a beam-search run is consistent).
        args.overrides = [*args.overrides, f"decoding.beam_size={args.beam_size}"]
    run = _load_run_for(args, "translate")
    model = run.model
    if args.ensemble:
        from transformer_tf.inference.ensemble import Ensemble, load_members

        members = load_members(run, args.ensemble, args.overrides, args.raw_weights)
        model = Ensemble([run.model, *(m.model for m in members)])
    options = DecodingOptions.from_config(run.config, beam_size=args.beam_size, n_best=args.n_best)
    align = args.alignment or args.attention_plot is not None
    nbest = translate(
        model,
        run.task.source_tokenizer,
        run.task.target_tokenizer,
        texts,
        options,
        truncate=not args.no_truncate,
        alignment=align,
    )
    if args.n_best == 1 and not args.with_scores and args.format == "text" and not align:
        lines = nbest.texts
    else:
        if args.attention_plot is not None:
            from transformer_tf.inference.translate import plot_attention

            best = nbest[0][0]
            plot_attention(args.attention_plot, best.attention, best.source_tokens, best.tokens)
        if not args.alignment:
            for hypotheses in nbest:
                for h in hypotheses:
                    h.alignment = None  # computed for the plot only: not printed
        if args.format == "jsonl":
            lines = [
                json.dumps(
                    {"source": text, "hypotheses": [h.as_dict() for h in hypotheses]},
                    ensure_ascii=False,
                )
                for text, hypotheses in zip(texts, nbest, strict=True)
            ]
        else:
            lines = [
                (f"{h.score:.6f} ||| {h.text}" if args.with_scores else h.text)
                + (f" ||| {h.alignment}" if args.alignment else "")
                for hypotheses in nbest
                for h in hypotheses
            ]
    _write_output("\n".join(lines) + ("\n" if lines else ""), args.output)
    return 0


def _check_attention_plot(args) -> None:
    """Refuse a bad ``--attention-plot`` before any model is loaded: it needs exactly one
    sentence on the command line, a writable ``.png`` path and matplotlib."""
    from transformer_tf.errors import UserError

    path = args.attention_plot
    if len(args.text) != 1 or args.input is not None:
        raise UserError(
            f"--attention-plot draws one translation: give exactly one SENTENCE on the command "
            f"line (got {len(args.text)} sentences{' and --input' if args.input else ''})"
        )
    if path.suffix.lower() != ".png":
        raise UserError(f"--attention-plot {path}: expected a .png file name")
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(
            f"--attention-plot {path}: cannot write there (the folder {parent} does not exist "
            "or is not writable, or the path is a folder)"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"--attention-plot {path}: the file exists and is not writable")
    from transformer_tf.inference.translate import require_matplotlib

    require_matplotlib()


def cmd_score(args) -> int:
    from transformer_tf.errors import UserError

    # Checked before TensorFlow starts: a bad file should be refused at once.
    sources = _read_lines(args.source, "--source")
    targets = _read_lines(args.target, "--target")
    if len(sources) != len(targets):
        raise UserError(
            f"--source {args.source} has {len(sources)} lines but --target {args.target} has "
            f"{len(targets)}; each target line must translate the source line at the same place"
        )
    _load_builtins(args)
    from transformer_tf.inference.options import examples_per_batch
    from transformer_tf.inference.scoring import score_texts

    run = _load_run_for(args, "score")
    result = score_texts(
        run.model,
        run.task.source_tokenizer,
        run.task.target_tokenizer,
        sources,
        targets,
        max_input_length=run.config.data.max_length,
        batch_size=examples_per_batch(run.config),
    )
    lines = [f"{s:.6f} ||| {t}" for s, t in zip(result.scores, targets, strict=True)]
    _write_output("\n".join(lines) + ("\n" if lines else ""), args.output)
    print(
        f"scored {len(targets)} pairs, {result.total_tokens} tokens (EOS included): "
        f"mean negative log-likelihood {result.mean_nll:.4f} nats/token, "
        f"perplexity {result.perplexity:.4f}",
        file=sys.stderr,
    )
    return 0


def cmd_export(args) -> int:
    from transformer_tf.errors import UserError

    if args.format == "ctranslate2":
        # A CTranslate2 model takes its decoding settings when it translates.
        for flag, value, setting in (
            ("--n-best", args.n_best, "num_hypotheses=N, return_scores=True"),
            ("--beam-size", args.beam_size, "beam_size=K"),
        ):
            if value is not None:
                raise UserError(
                    f"{flag} is a savedmodel option: a CTranslate2 model takes it when it "
                    f"translates (translate_batch(..., {setting}))"
                )
        _load_builtins(args)
        from transformer_tf.inference.ctranslate2_export import export_ctranslate2 as exporter

        kind, options = "CTranslate2 model", {"quantization": args.quantization}
    else:
        if args.quantization is not None:
            raise UserError("--quantization is a ctranslate2 option (--format ctranslate2)")
        _load_builtins(args)
        from transformer_tf.inference.export import export_run as exporter

        kind, options = "SavedModel", {"beam_size": args.beam_size, "n_best": args.n_best}
    path = exporter(
        args.run_dir,
        args.export_dir,
        checkpoint=args.checkpoint,
        average_last=args.average_last,
        raw_weights=args.raw_weights,
        **options,
    )
    print(f"exported {kind} to {path}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "translate": cmd_translate,
    "score": cmd_score,
    "export": cmd_export,
    "import": cmd_import,
}


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse cannot put a `nargs="*"` positional after options (`translate RUN --beam-size 4
    # "a sentence"`): the sentences arrive as leftovers.
    if extra and args.command == "translate" and not any(a.startswith("-") for a in extra):
        args.text = [*args.text, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _quiet_tensorflow(args.verbose)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from transformer_tf.errors import (
        RunWriteError,
        TrainingDivergedError,
        TrainingPreempted,
        UserError,
        WorkerLostError,
    )

    try:
        return COMMANDS[args.command](args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RunWriteError as error:
        return _write_failure(args, str(error))
    except OSError as error:
        if error.errno not in _WRITE_ERRNOS:
            raise
        # A write the run directory's own guards do not cover (a vocabulary, --output).
        where = f" {error.filename}" if error.filename else ""
        return _write_failure(args, f"cannot write{where}: {error.strerror}")
    except KeyboardInterrupt:
        print(
            "interrupted; rerun the same command to resume from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    except (TrainingDivergedError, WorkerLostError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except TrainingPreempted as error:
        print(error, file=sys.stderr)
        return 128 + error.signum


#: errno values of a failed write: no space or quota, a read-only file system, no permission.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _write_failure(args, message: str) -> int:
    """Exit 1 with one line; the traceback too with ``-v``."""
    if args.verbose:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
