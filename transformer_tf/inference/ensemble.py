"""Ensembles: several trained models scoring as one (fairseq's ``--path a:b``).

Translation (:class:`Ensemble`): at every step each model scores the next token with its own
decoder cache, and the ensemble's log-probability is the log of the models' mean probability.
The ensemble offers the interface that greedy and beam search use (``encode``, ``init_cache``,
``cache_reorder_flags``, ``decode_step``, ``decode``) and the call that teacher-forced
evaluation uses, so it decodes, scores and evaluates like one model. Classification (:class:`ClassifierEnsemble`): the
members' class probabilities are averaged.
"""

from __future__ import annotations

import math

import tensorflow as tf

from transformer_tf.assembly import LoadedRun, load_run
from transformer_tf.errors import UserError
from transformer_tf.run import RunDir, locate_checkpoint

__all__ = [
    "ClassifierEnsemble",
    "Ensemble",
    "check_same_vocabularies",
    "load_members",
    "make_ensemble",
    "member_checkpoint",
]


def _log_mean_exp(log_probs: list) -> tf.Tensor:
    """``log(mean_i(exp(x_i)))`` over a list of equally shaped tensors, computed stably."""
    stacked = tf.stack(log_probs, axis=0)  # (models, ...)
    return tf.reduce_logsumexp(stacked, axis=0) - math.log(len(log_probs))


class Ensemble:
    """Average the next-token probabilities of ``models`` at every decoding step.

    Args:
        models: list of encoder-decoder models with the same source and target vocabularies
            (see :func:`check_same_vocabularies`); each keeps its own cache.

    The outputs that a model returns as logits are the ensemble's log-probabilities here
    ``(..., target_vocab)`` float32: a softmax over them gives back the mean probabilities, so
    searches and losses written for logits work unchanged.
    """

    def __init__(self, models: list):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = list(models)
        positions = [getattr(m, "max_length", None) for m in self.models]
        self.max_length = min((p for p in positions if isinstance(p, int)), default=None)

    def encode(self, source, training=None):
        """Each model's final encoder output, and the (shared) source padding mask."""
        outputs = []
        for model in self.models:
            encoder_output, source_mask = model.encode(source, training=training)
            outputs.append(encoder_output)
        return outputs, source_mask

    def decode(self, target, encoder_outputs, source_mask, training=None):
        """Teacher-forced log-probabilities ``(batch, target_length, vocab)``."""
        return _log_mean_exp(
            [
                tf.nn.log_softmax(model.decode(target, out, source_mask, training=training))
                for model, out in zip(self.models, encoder_outputs, strict=True)
            ]
        )

    def __call__(self, inputs, training=False):
        encoder_outputs, source_mask = self.encode(inputs["source"], training=training)
        return self.decode(inputs["target"], encoder_outputs, source_mask, training=training)

    def init_cache(self, encoder_outputs, max_length):
        return [
            model.init_cache(out, max_length)
            for model, out in zip(self.models, encoder_outputs, strict=True)
        ]

    def cache_reorder_flags(self, cache):
        return [
            model.cache_reorder_flags(c)
            if hasattr(model, "cache_reorder_flags")
            else tf.nest.map_structure(lambda _: True, c)
            for model, c in zip(self.models, cache, strict=True)
        ]

    def cross_attention(self, source, target):
        """The first member's cross-attention weights (``translate --alignment`` with an
        ensemble aligns with the first model: averaging attention across models that learned
        different heads would mean nothing). See ``Seq2SeqTransformer.cross_attention``."""
        return self.models[0].cross_attention(source, target)

    def decode_step(self, token_ids, cache, index, source_mask):
        """One step of every model: the ensemble's log-probabilities and the new caches."""
        log_probs, new_cache = [], []
        for model, model_cache in zip(self.models, cache, strict=True):
            logits, updated = model.decode_step(token_ids, model_cache, index, source_mask)
            log_probs.append(tf.nn.log_softmax(tf.cast(logits, tf.float32)))
            new_cache.append(updated)
        return _log_mean_exp(log_probs), new_cache


class ClassifierEnsemble:
    """Average the class probabilities of ``models`` (classifiers with the same vocabulary).

    Args:
        models: list of classifiers, each ``model(token_ids)`` -> logits ``(batch, classes)``.

    Call: ``(batch, length)`` int ids -> float32 ``(batch, num_classes)`` log mean
    probabilities; a softmax over them gives back the mean probabilities, so losses and
    metrics written for logits work unchanged.
    """

    def __init__(self, models: list):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = list(models)

    def __call__(self, token_ids, training=False):
        return _log_mean_exp(
            [tf.nn.log_softmax(model(token_ids, training=training)) for model in self.models]
        )


def make_ensemble(task: str, models: list):
    """The ensemble of ``models`` for a run of ``task`` (``"translation"`` or
    ``"classification"``)."""
    return (ClassifierEnsemble if task == "classification" else Ensemble)(models)


def _tokenizers(task) -> dict:
    """A task's tokenizers by side: translation's source and target, classification's one."""
    if hasattr(task, "source_tokenizer"):
        return {"source": task.source_tokenizer, "target": task.target_tokenizer}
    return {"review": task.tokenizer}


def _vocabulary_key(tokenizer) -> tuple:
    """What makes two tokenizers produce the same ids for the same text."""
    if hasattr(tokenizer, "model_proto"):  # SentencePiece: the model itself.
        return (tokenizer.kind, tokenizer.model_proto)
    if hasattr(tokenizer, "vocab"):  # Word vocabularies and their splitting rules.
        return (
            tokenizer.kind,
            tuple(tokenizer.vocab),
            getattr(tokenizer, "lowercase", None),
            getattr(tokenizer, "split_punctuation", None),
            getattr(tokenizer, "ngrams", None),
        )
    return (tokenizer.kind, tokenizer.vocab_size)


def check_same_vocabularies(members: list) -> None:
    """Refuse an ensemble whose members tokenize differently.

    Args:
        members: list of ``(name, task)`` pairs, the first being the reference; translation
            tasks have ``source_tokenizer`` and ``target_tokenizer``, classification tasks a
            ``tokenizer``.

    Raises:
        UserError: naming the first member whose (source, target or review) vocabulary differs.
    """
    (first_name, first), *others = members
    references = _tokenizers(first)
    for name, task in others:
        for side, mine in _tokenizers(task).items():
            reference = references[side]
            if _vocabulary_key(mine) != _vocabulary_key(reference):
                raise UserError(
                    f"--ensemble {name}: its {side} vocabulary ({mine.kind}, {mine.vocab_size} "
                    f"entries) differs from that of {first_name} ({reference.kind}, "
                    f"{reference.vocab_size} entries); an ensemble averages the probabilities of "
                    "the same tokens, so every member must use the same vocabularies"
                )


def member_checkpoint(spec: str) -> tuple[RunDir, str]:
    """An ``--ensemble`` member: a run directory (its latest checkpoint), a run's
    ``checkpoints/best`` directory, or a checkpoint of a run (``RUN/checkpoints/ckpt-500``);
    see :func:`~transformer_tf.run.locate_checkpoint`."""
    try:
        return locate_checkpoint(spec)
    except UserError as error:
        raise UserError(f"--ensemble {spec}: {error}") from None


def load_members(first: LoadedRun, specs: list[str], overrides=()) -> list[LoadedRun]:
    """Load the other members of an ensemble with ``first`` and check their vocabularies.

    Each member keeps its own config and model; ``overrides`` (data, decoding) apply to all.
    All are runs of one task, translation or classification; the ids they score are made by
    ``first``'s data settings (for classification ``data.max_length`` and ``data.truncation``).
    """
    members = []
    for spec in specs:
        run, checkpoint = member_checkpoint(spec)
        members.append((spec, load_run(run, checkpoint=checkpoint, overrides=overrides)))
    task = first.config.task
    for spec, member in members:
        if member.config.task != task:
            raise UserError(
                f"--ensemble {spec}: a {member.config.task} run, but {first.run} is a {task} "
                "run; an ensemble's members are runs of one task"
            )
    check_same_vocabularies([(str(first.run), first.task)] + [(s, m.task) for s, m in members])
    return [m for _, m in members]
