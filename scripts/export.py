"""Thin wrapper: ``python scripts/export.py RUN_DIR EXPORT_DIR``
(the same function as ``transformer-tf export``)."""

import sys

# Like the `transformer-tf` command, defer TensorFlow until a command needs it (--help and config
# errors answer at once); see transformer_tf/__init__.py.
TRANSFORMER_TF_DEFER_BUILTINS = True

from transformer_tf.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
