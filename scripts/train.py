"""Thin wrapper: ``python scripts/train.py CONFIG [--run-dir DIR] [--set K=V]...``
(the same function as ``transformer-tf train``)."""

import sys

# Like the `transformer-tf` command, defer TensorFlow until a command needs it (--help and config
# errors answer at once); see transformer_tf/__init__.py.
TRANSFORMER_TF_DEFER_BUILTINS = True

from transformer_tf.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
