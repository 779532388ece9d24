"""The members of a run's ensemble (``--ensemble``, fairseq's ``--path a:b``): located, loaded
and checked to share the run's task and vocabularies.

How a task's models are combined is the task's choice, ``run.task.ensemble(models)``:
:class:`~transformer_tf.inference.ensemble_models.Ensemble` for translation,
:class:`~transformer_tf.inference.ensemble_models.ClassifierEnsemble` for classification.
"""

from __future__ import annotations

from transformer_tf.assembly import LoadedRun, load_run
from transformer_tf.errors import UserError
from transformer_tf.inference.ensemble_models import ClassifierEnsemble, Ensemble
from transformer_tf.run import RunDir, locate_checkpoint

__all__ = [
    "ClassifierEnsemble",
    "Ensemble",
    "check_same_vocabularies",
    "load_members",
    "member_checkpoint",
]


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
        members: list of ``(name, task)`` pairs, the first being the reference; each task's
            ``tokenizers()`` are compared side by side.

    Raises:
        UserError: naming the first member whose (source, target or review) vocabulary differs.
    """
    (first_name, first), *others = members
    references = first.tokenizers()
    for name, task in others:
        for side, mine in task.tokenizers().items():
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


def load_members(
    first: LoadedRun, specs: list[str], overrides=(), raw_weights: bool = False
) -> list[LoadedRun]:
    """Load the other members of an ensemble with ``first`` and check their vocabularies.

    Each member keeps its own config and model; ``overrides`` (data, decoding) apply to all.
    All are runs of one task, translation or classification; the ids they score are made by
    ``first``'s data settings (for classification ``data.max_length`` and ``data.truncation``).
    ``raw_weights``: each member's raw weights, not its moving averages (see
    :func:`~transformer_tf.assembly.load_run`).
    """
    members = []
    for spec in specs:
        run, checkpoint = member_checkpoint(spec)
        member = load_run(run, checkpoint=checkpoint, overrides=overrides, raw_weights=raw_weights)
        members.append((spec, member))
    task = first.config.task
    for spec, member in members:
        if member.config.task != task:
            raise UserError(
                f"--ensemble {spec}: a {member.config.task} run, but {first.run} is a {task} "
                "run; an ensemble's members are runs of one task"
            )
    check_same_vocabularies([(str(first.run), first.task)] + [(s, m.task) for s, m in members])
    return [m for _, m in members]
