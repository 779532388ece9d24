"""Decoding: greedy and beam search over a trained encoder-decoder model.

Only the search functions and :class:`~transformer_tf.inference.options.DecodingOptions` are
exported here, and loaded on first use: importing the package (for ``DecodingOptions``, as the
CLI does before TensorFlow starts) does not import TensorFlow. ``translate`` and ``export``
(which pull in tokenizers and metrics) are imported from their modules when needed.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "beam_search": "search",
    "greedy_search": "search",
    "make_decoder": "search",
    "DecodingOptions": "options",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
