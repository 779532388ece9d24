"""Thin wrapper: ``python scripts/evaluate.py RUN_DIR [--split NAME] ...``
(the same function as ``transformer-tf evaluate``)."""

import sys

from transformer_tf.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
