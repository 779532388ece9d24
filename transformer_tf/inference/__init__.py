"""Decoding: greedy and beam search over a trained encoder-decoder model.

Only the search functions are exported here; ``translate`` and ``export`` (which pull in
tokenizers and metrics) are imported from their modules when needed.
"""

from transformer_tf.inference.search import beam_search, greedy_search, make_decoder

__all__ = ["beam_search", "greedy_search", "make_decoder"]
