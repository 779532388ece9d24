"""``transformer-tf train|evaluate|translate|export``.

Exit codes: 0 success, 2 bad user input (config, paths, data; a one-paragraph message and no
traceback), 1 anything unexpected (or a run that diverged), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _add_set(parser):
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.batch_size=32 (repeatable)",
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
    evaluate.add_argument("--beam-size", type=int, help="beam size for decoding (translation)")
    evaluate.add_argument("--output-json", type=Path, help="also write the scores here")
    evaluate.add_argument(
        "--distributed", action="store_true", help="evaluate under the config's strategy"
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
    _add_set(translate)

    export = commands.add_parser("export", help="export a run as a TensorFlow SavedModel")
    export.add_argument("run_dir", type=Path)
    export.add_argument("export_dir", type=Path)
    export.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    export.add_argument("--average-last", type=int, metavar="K")
    export.add_argument("--beam-size", type=int, help="beam size baked into the export")
    return parser


def cmd_train(args) -> int:
    from transformer_tf.config import load_config

    config = load_config(args.config, args.overrides)  # validated before any TensorFlow work
    run_dir = args.run_dir or Path("runs") / args.config.stem
    from transformer_tf.training.trainer import train

    result = train(config, run_dir, show_progress=not args.no_progress)
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
    from transformer_tf.evaluation.evaluator import evaluate_run, format_table, write_json

    result = evaluate_run(
        args.run_dir,
        split=args.split,
        checkpoint=args.checkpoint,
        average_last=args.average_last,
        overrides=args.overrides,
        beam_size=args.beam_size,
        distributed=args.distributed,
    )
    print(format_table(result))
    write_json(result, args.output_json or args.run_dir / f"eval_{args.split}.json")
    return 0


def cmd_translate(args) -> int:
    from transformer_tf.assembly import load_run
    from transformer_tf.errors import UserError
    from transformer_tf.inference.translate import translate_with_task

    if args.text:
        texts = args.text
    elif args.input:
        try:
            texts = args.input.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise UserError(f"cannot read --input {args.input}: {error.strerror}") from error
        except UnicodeDecodeError as error:
            raise UserError(f"--input {args.input} is not UTF-8 ({error.reason})") from error
    else:
        texts = sys.stdin.read().splitlines()
    run = load_run(
        args.run_dir,
        checkpoint=args.checkpoint,
        average_last=args.average_last,
        overrides=args.overrides,
    )
    if run.config.task != "translation":
        raise UserError(
            f"{args.run_dir} is a {run.config.task} run; translate needs a translation run"
        )
    translations = translate_with_task(run.task, run.model, texts, beam_size=args.beam_size)
    output = "\n".join(translations) + ("\n" if translations else "")
    if args.output:
        args.output.write_text(output, encoding="utf-8")
    else:
        sys.stdout.write(output)
    return 0


def cmd_export(args) -> int:
    from transformer_tf.inference.export import export_run

    path = export_run(
        args.run_dir,
        args.export_dir,
        checkpoint=args.checkpoint,
        average_last=args.average_last,
        beam_size=args.beam_size,
    )
    print(f"exported SavedModel to {path}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "translate": cmd_translate,
    "export": cmd_export,
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
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from transformer_tf.errors import UserError

    try:
        return COMMANDS[args.command](args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; rerun the same command to resume from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    except Exception as error:
        from transformer_tf.training.trainer import TrainingDivergedError, WorkerLostError

        if isinstance(error, TrainingDivergedError | WorkerLostError):
            print(f"error: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
