"""Thin wrapper: ``python scripts/translate.py RUN_DIR [TEXT ...]``
(the same function as ``transformer-tf translate``)."""

import sys

from transformer_tf.cli import main

if __name__ == "__main__":
    sys.exit(main(["translate", *sys.argv[1:]]))
