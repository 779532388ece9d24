"""OpenNMT-tf model of configs/multi30k_de_en.yaml, for the peer benchmark (benchmarks/peer.py).

3+3 layers, d_model 256, 4 heads, d_ff 1024, post-norm (the engine's default), dropout 0.2,
attention dropout 0.1, no feed-forward dropout, one embedding matrix for the source, the target
and the output projection (``EmbeddingsSharingLevel.ALL``: the engine's ``share_embeddings`` +
``tie_embeddings``). Loaded by ``onmt-main --model benchmarks/opennmt/model.py``.
"""

import opennmt


def model():
    """The Transformer of the peer benchmark."""
    return opennmt.models.Transformer(
        num_layers=3,
        num_units=256,
        num_heads=4,
        ffn_inner_dim=1024,
        dropout=0.2,
        attention_dropout=0.1,
        ffn_dropout=0.0,
        pre_norm=False,
        share_embeddings=opennmt.models.EmbeddingsSharingLevel.ALL,
    )
