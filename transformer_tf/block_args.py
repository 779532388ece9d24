"""The fourteen arguments of every encoder and decoder block, defined once.

:data:`BLOCK_ARG_SPECS` is the one definition (name, type, default, allowed values, meaning)
from which the rest is derived:

- the ``model:`` config section (:class:`transformer_tf.config.ModelConfig`) turns each spec
  into a validated field with the same default and bounds;
- the block base class (:class:`transformer_tf.layers.TransformerBlockBase`) stores them as
  attributes and returns them from ``get_config``; the stacks pass them to every block;
- the models (``Seq2SeqTransformer``, ``TransformerClassifier``) accept them as keyword
  arguments (:func:`with_block_args`), keep them as attributes and return them from
  ``get_config``.

The defaults are those of the config and of the models. The blocks and the stacks take the three
sizes (``d_model``, ``num_heads``, ``d_ff``, :data:`SIZE_ARGS`) as required positional arguments
and the other eleven as keywords with these defaults.

This module imports neither Keras nor pydantic, so both the config (no TensorFlow) and the layers
can use it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BLOCK_ARGS",
    "DEFAULT_MAXIMUM_RELATIVE_POSITION",
    "RELATIVE_POSITIONS",
    "ROTARY_POSITIONS",
    "BLOCK_ARG_SPECS",
    "SIZE_ARGS",
    "BlockArg",
    "block_arg_values",
    "keep_arguments",
    "pop_block_args",
    "with_block_args",
]


#: The ``positional_encoding`` name whose self-attention uses relative positions (Shaw et al.
#: 2018): the only one that takes ``maximum_relative_position``.
RELATIVE_POSITIONS = "relative"
#: The ``positional_encoding`` name whose self-attention rotates queries and keys (RoFormer).
ROTARY_POSITIONS = "rotary"
#: ``maximum_relative_position`` when ``positional_encoding`` is ``relative`` and it is not set.
DEFAULT_MAXIMUM_RELATIVE_POSITION = 20


@dataclass(frozen=True)
class BlockArg:
    """One block argument.

    Attributes:
        name: str, the keyword argument, attribute, ``get_config`` key and ``model.<name>`` key.
        type: type, ``int``, ``float``, ``bool`` or ``str``.
        default: the default value (of the config and of the models); None makes the argument
            optional (the config accepts ``null``).
        doc: str, what it means (for docstrings).
        gt, ge, lt: numbers or None, bounds that the config enforces (``> gt``, ``>= ge``,
            ``< lt``).
        choices: tuple of str, the allowed values (empty: any value of ``type``).
    """

    name: str
    type: type
    default: Any
    doc: str
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()


BLOCK_ARG_SPECS: tuple[BlockArg, ...] = (
    BlockArg("d_model", int, 128, "model size", gt=0),
    BlockArg("num_heads", int, 4, "attention heads; must divide ``d_model``", gt=0),
    BlockArg("d_ff", int, 512, "feed-forward inner size", gt=0),
    BlockArg(
        "dropout", float, 0.1, "dropout on each sublayer output before the residual", ge=0, lt=1
    ),
    BlockArg("attention_dropout", float, 0.0, "dropout on the attention weights", ge=0, lt=1),
    BlockArg(
        "ffn_dropout", float, 0.0, "dropout on the feed-forward inner activations", ge=0, lt=1
    ),
    BlockArg(
        "activation",
        str,
        "relu",
        "feed-forward activation (``swish``: ``x * sigmoid(x)``, Marian's)",
        choices=("relu", "gelu", "swish"),
    ),
    BlockArg("normalize_first", bool, False, "pre-norm instead of post-norm"),
    BlockArg("layer_norm_epsilon", float, 1e-6, "epsilon of the normalization layers", gt=0),
    BlockArg("attention", str, "multi_head", "registered name in the ``attention`` slot"),
    BlockArg("feed_forward", str, "position_wise", "registered name in the ``feed_forward`` slot"),
    BlockArg("normalization", str, "layer_norm", "registered name in the ``normalization`` slot"),
    BlockArg(
        "positional_encoding",
        str,
        "sinusoidal",
        "registered name in the ``positional_encoding`` slot; the blocks read from its class "
        "whether self-attention applies the positions (``relative``, ``rotary``)",
    ),
    BlockArg(
        "maximum_relative_position",
        int,
        None,
        "with ``positional_encoding: relative``, the largest relative distance ``K`` that has "
        "its own embedding (distances are clipped to ``[-K, K]``); None: "
        f"{DEFAULT_MAXIMUM_RELATIVE_POSITION}. Only with ``relative``",
        ge=1,
    ),
)

#: The names of the block arguments, in definition order.
BLOCK_ARGS: tuple[str, ...] = tuple(spec.name for spec in BLOCK_ARG_SPECS)

#: The block arguments that the block and stack constructors take positionally (and require).
SIZE_ARGS: tuple[str, ...] = ("d_model", "num_heads", "d_ff")


def pop_block_args(kwargs: MutableMapping[str, Any]) -> dict[str, Any]:
    """Remove the block arguments from ``kwargs``; returns name -> value, defaults filled in."""
    return {spec.name: kwargs.pop(spec.name, spec.default) for spec in BLOCK_ARG_SPECS}


def keep_arguments(obj: Any, **arguments: Any) -> None:
    """Set each argument as an attribute of ``obj`` of the same name: a model keeps every
    constructor argument (its block arguments included) for ``get_config`` and its parts."""
    for name, value in arguments.items():
        setattr(obj, name, value)


def block_arg_values(obj: Any) -> dict[str, Any]:
    """name -> ``getattr(obj, name)`` for every block argument (for ``get_config`` and stacks)."""
    return {name: getattr(obj, name) for name in BLOCK_ARGS}


def with_block_args(init: Callable) -> Callable:
    """Decorator for an ``__init__(self, ..., **kwargs)`` that takes the block arguments from
    ``kwargs`` (with :func:`pop_block_args`): adds them to its signature, keyword-only with
    their defaults, unless the signature already names them.

    The signature is what ``inspect.signature`` reports (and ``build_model`` uses to choose which
    ``model:`` keys to pass); the function itself is unchanged.
    """
    signature = inspect.signature(init)
    parameters = list(signature.parameters.values())
    variadic = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    if not variadic:
        raise TypeError(f"{init.__qualname__} must accept **kwargs to take the block arguments")
    added = [
        inspect.Parameter(
            spec.name, inspect.Parameter.KEYWORD_ONLY, default=spec.default, annotation=spec.type
        )
        for spec in BLOCK_ARG_SPECS
        if spec.name not in signature.parameters
    ]
    init.__signature__ = signature.replace(
        parameters=[p for p in parameters if p not in variadic] + added + variadic
    )
    return init
