"""Hand-made models with known outputs, behind the decoding interface that search and scoring
use (``encode``, ``init_cache``, ``decode_step``, ``decode``): a Markov chain where greedy is
provably suboptimal, and a model that copies its source. They pin down exact tokens and scores
in the search, n-best and scoring tests."""

import numpy as np
import tensorflow as tf

from transformer_tf.data.special_tokens import BOS_ID, EOS_ID, PAD_ID


class FakeModel:
    """The decoding interface over hand-made logits; counts decoder calls (``self.calls``).

    Subclasses define ``_logits(source_one_hot, tokens, positions)``: ``(batch, source_length,
    vocab)``, ``(batch, length)`` tokens at ``positions`` ``(length,)`` -> ``(batch, length,
    vocab)`` logits of the next tokens.
    """

    vocab = 10

    def __init__(self):
        self.calls = tf.Variable(0)

    def encode(self, source_ids, training=False):
        return tf.one_hot(source_ids, self.vocab), tf.not_equal(source_ids, PAD_ID)

    def init_cache(self, encoder_output, max_length):
        batch = tf.shape(encoder_output)[0]
        return [{"self": {"tokens": tf.zeros([batch, max_length], tf.int32)},
                 "cross": {"source": encoder_output}}]  # fmt: skip

    def decode_step(self, token_ids, cache, index, source_mask):
        # Writes the token history, as a real decoder writes its keys and values.
        history = cache[0]["self"]["tokens"]
        at_index = tf.equal(tf.range(tf.shape(history)[1]), index)[None, :]
        history = tf.where(at_index, token_ids, history)
        with tf.control_dependencies([self.calls.assign_add(1)]):
            logits = self._logits(cache[0]["cross"]["source"], token_ids, index[None])
        return logits[:, 0], [{"self": {"tokens": history}, "cross": cache[0]["cross"]}]

    def decode(self, target_ids, encoder_output, source_mask, training=False):
        with tf.control_dependencies([self.calls.assign_add(1)]):
            positions = tf.range(tf.shape(target_ids)[1])
            return self._logits(encoder_output, target_ids, positions)


class MarkovModel(FakeModel):
    """A Markov chain: the next token depends on the current one only.

    ``transitions``: ``{token: {next_token: probability}}``; every other transition has a
    small probability (1e-3 before normalizing each row).
    """

    def __init__(self, transitions):
        super().__init__()
        table = np.full((self.vocab, self.vocab), 1e-3)
        for token, row in transitions.items():
            table[token, list(row)] = list(row.values())
        self.log_probs = np.log(table / table.sum(axis=1, keepdims=True))

    def _logits(self, source_one_hot, tokens, positions):
        return tf.gather(tf.constant(self.log_probs, tf.float32), tokens)

    def log_prob(self, ids):
        """Summed log-probability of ``ids`` after BOS."""
        return sum(self.log_probs[t, n] for t, n in zip([BOS_ID, *ids[:-1]], ids, strict=True))


class CopyModel(FakeModel):
    """Copies the source (probability ~0.997 per token), then EOS."""

    def _logits(self, source_one_hot, tokens, positions):
        source_length = tf.shape(source_one_hot)[1]
        # The source token at each position, PAD past the end: (batch, length, vocab).
        one_hot = tf.gather(source_one_hot, tf.minimum(positions, source_length - 1), axis=1)
        inside = (positions < source_length)[None, :, None]
        one_hot = tf.where(inside, one_hot, tf.one_hot(PAD_ID, self.vocab))
        # Predict EOS where the source has PAD.
        pad = one_hot[..., PAD_ID : PAD_ID + 1]  # (batch, length, 1)
        one_hot = one_hot * (1.0 - tf.one_hot(PAD_ID, self.vocab)) + pad * tf.one_hot(
            EOS_ID, self.vocab
        )
        return 8.0 * one_hot

    @staticmethod
    def token_log_prob():
        """The log-probability of the predicted token (logit 8 against vocab - 1 logits 0)."""
        return 8.0 - np.log(np.exp(8.0) + CopyModel.vocab - 1)
