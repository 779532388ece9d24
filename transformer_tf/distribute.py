"""tf.distribute around the model: the strategy named by ``distribute.strategy``, input split.

``choose_strategy`` is a pure function of what is visible (GPU count, whether a TPU resolves), so
tests can fake the device lists; ``build_strategy`` creates the real strategy object.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from transformer_tf.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Placement:
    """The strategy and this process's role in it."""

    strategy: tf.distribute.Strategy
    kind: str  # the resolved kind: cpu, gpu, mirrored, multi_worker or tpu
    is_chief: bool = True
    task_type: str | None = None
    task_id: int = 0

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


def choose_strategy(requested: str, num_gpus: int, tpu_available: bool) -> str:
    """Resolve ``auto`` (and check the others) against what is visible.

    ``auto``: ``tpu`` when a TPU resolves, ``mirrored`` with more than one GPU, ``gpu`` with one,
    else ``cpu``. Explicit kinds are returned unchanged, but ``gpu`` with no GPU and ``tpu``
    with no TPU are errors.
    """
    if requested == "auto":
        if tpu_available:
            return "tpu"
        if num_gpus > 1:
            return "mirrored"
        return "gpu" if num_gpus == 1 else "cpu"
    if requested == "gpu" and num_gpus == 0:
        raise UserError(
            "distribute.strategy is `gpu` but TensorFlow sees no GPU "
            "(check CUDA drivers, or use `auto` or `cpu`)"
        )
    if requested == "tpu" and not tpu_available:
        raise UserError(
            "distribute.strategy is `tpu` but no TPU resolved: set `distribute.tpu` to the TPU "
            "name or grpc:// address (or TPU_NAME in the environment)"
        )
    return requested


def _tpu_resolver(tpu: str | None, factory: Callable | None = None):
    """A TPUClusterResolver when a TPU is named or local, else None (never probes the network
    when nothing points at a TPU: the metadata lookup can hang off Google Cloud)."""
    factory = factory or tf.distribute.cluster_resolver.TPUClusterResolver
    name = tpu or os.environ.get("TPU_NAME")
    local = bool(tf.config.list_physical_devices("TPU"))
    if not name and not local:
        return None
    try:
        return factory(tpu=name or "local")
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        if tpu:
            raise UserError(f"distribute.tpu `{tpu}` did not resolve: {error}") from error
        return None


def _multi_worker_role() -> tuple[str, int, bool]:
    """(task type, task id, is chief) from TF_CONFIG; the chief is `chief` or worker 0."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UserError(
            "distribute.strategy is `multi_worker` but TF_CONFIG is not set: every process needs "
            'TF_CONFIG=\'{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}\' (see docs/distributed.md)'
        )
    try:
        tf_config = json.loads(raw)
        task = tf_config["task"]
        cluster = tf_config["cluster"]
        task_type, task_id = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"TF_CONFIG is not valid ({error}): {raw}") from error
    has_chief = "chief" in cluster
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return task_type, task_id, is_chief


def build_strategy(
    distribute,
    *,
    list_devices: Callable[[str], list] | None = None,
    tpu_resolver_factory: Callable | None = None,
) -> Placement:
    """Create the strategy for a ``DistributeConfig``.

    Args:
        distribute: the config's ``distribute`` section (``strategy``, ``tpu``, ``devices``,
            ``communication``).
        list_devices: ``device_type -> devices``; tests pass fakes. Defaults to the physical
            devices, which (unlike logical ones) can be listed without initialising TensorFlow:
            MultiWorkerMirroredStrategy must configure collectives before that happens.
        tpu_resolver_factory: replaces ``TPUClusterResolver`` in tests.
    """
    list_devices = list_devices or tf.config.list_physical_devices
    requested = distribute.strategy
    resolver = None
    if requested in ("auto", "tpu"):
        resolver = _tpu_resolver(distribute.tpu, tpu_resolver_factory)
    num_gpus = len(list_devices("GPU"))
    kind = choose_strategy(requested, num_gpus, resolver is not None)

    if kind == "cpu":
        return Placement(tf.distribute.OneDeviceStrategy("/cpu:0"), kind)
    if kind == "gpu":
        return Placement(tf.distribute.OneDeviceStrategy("/gpu:0"), kind)
    if kind == "mirrored":
        devices = distribute.devices
        if devices is None:
            # All GPUs, or else all (logical) CPUs: several CPU devices only exist when the user
            # configured them, which is how tests exercise MirroredStrategy without GPUs.
            gpus = list_devices("GPU")
            devices = [_device_name(d) for d in gpus] or [
                d.name for d in tf.config.list_logical_devices("CPU")
            ]
        cross_device_ops = None
        if distribute.communication == "nccl":
            cross_device_ops = tf.distribute.NcclAllReduce()
        elif not any("GPU" in d.upper() for d in devices):
            # NCCL (the GPU default) cannot reduce CPU tensors.
            cross_device_ops = tf.distribute.ReductionToOneDevice()
        return Placement(tf.distribute.MirroredStrategy(devices, cross_device_ops), kind)
    if kind == "multi_worker":
        task_type, task_id, is_chief = _multi_worker_role()
        implementation = {
            "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
            "ring": tf.distribute.experimental.CommunicationImplementation.RING,
            "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
        }[distribute.communication]
        options = tf.distribute.experimental.CommunicationOptions(implementation=implementation)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        return Placement(strategy, kind, is_chief, task_type, task_id)
    if kind == "tpu":
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return Placement(tf.distribute.TPUStrategy(resolver), kind)
    raise UserError(f"unknown distribute.strategy `{kind}`")


def _device_name(device) -> str:
    # Physical devices are named "/physical_device:GPU:0"; strategies want "/gpu:0".
    return device.name.replace("physical_device:", "")


def distribute_dataset(strategy, dataset):
    """Split each global batch across the replicas of ``strategy``."""
    options = tf.data.Options()
    # Batches are already global: every worker reads all files and takes its share of each
    # batch, which keeps workers in lock step whatever the number of files.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def distribute_training_data(placement: Placement, make_dataset, skip: int = 0, shards=False):
    """The distributed training input of one epoch, ``skip`` global batches in.

    Multi-worker (with ``shards``, a task whose datasets take an input context): each worker
    builds only its own part with ``make_dataset(input_context=...)``
    (``strategy.distribute_datasets_from_function``), in per-replica batches; one batch per
    replica is one global batch, and skipping ``skip`` global batches skips ``skip`` batches of
    each replica. Otherwise the dataset of global batches ``make_dataset()`` is split across
    the replicas (:func:`distribute_dataset`), which keeps a single process exactly equal to
    one device on the same global batches.

    Args:
        placement: Placement, the strategy and its kind.
        make_dataset: callable, ``make_dataset()`` gives the dataset of global batches and
            (with ``shards``) ``make_dataset(input_context=context)`` one pipeline's part.
        skip: int, global batches already consumed this epoch (exact resume). Defaults to 0.
        shards: bool, whether ``make_dataset`` honours an input context. Defaults to False.

    Returns:
        A distributed dataset; on the ``cpu`` placement (one host device) the dataset itself.
    """
    strategy = placement.strategy
    if placement.kind == "cpu":
        # One host device: nothing to split or to copy, and a plain tf.data iterator honours
        # `experimental_warm_start` (its pipeline fills at creation), which the distributed
        # iterator does not (its first batch waited 1.5-4 s for the shuffle buffers).
        return make_dataset().skip(skip)
    if placement.kind != "multi_worker" or not shards:
        return distribute_dataset(strategy, make_dataset().skip(skip))

    def dataset_fn(input_context):
        local_replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
        dataset = make_dataset(input_context=input_context)
        return dataset.skip(skip * max(1, local_replicas))

    return strategy.distribute_datasets_from_function(dataset_fn)
