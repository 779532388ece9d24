"""Strategy resolution with faked device lists and TPU resolvers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import tensorflow as tf

from transformer_tf import distribute as strategy_module
from transformer_tf.config import DistributeConfig
from transformer_tf.distribute import build_strategy, choose_strategy
from transformer_tf.errors import UserError


@pytest.mark.parametrize(
    "requested,gpus,tpu,expected",
    [
        ("auto", 0, False, "cpu"),
        ("auto", 1, False, "gpu"),
        ("auto", 4, False, "mirrored"),
        ("auto", 4, True, "tpu"),
        ("cpu", 2, False, "cpu"),
        ("mirrored", 0, False, "mirrored"),
        ("multi_worker", 0, False, "multi_worker"),
    ],
)
def test_choose_strategy(requested, gpus, tpu, expected):
    assert choose_strategy(requested, gpus, tpu) == expected


def test_gpu_and_tpu_without_devices_are_clear_errors():
    with pytest.raises(UserError, match="sees no GPU"):
        choose_strategy("gpu", 0, False)
    with pytest.raises(UserError, match="no TPU resolved"):
        choose_strategy("tpu", 0, False)


def _fake_devices(gpus):
    def list_devices(kind):
        count = gpus if kind == "GPU" else 1
        return [SimpleNamespace(name=f"/device:{kind}:{i}") for i in range(count)]

    return list_devices


def test_auto_builds_one_device_strategies_from_the_device_list():
    placement = build_strategy(DistributeConfig(strategy="auto"), list_devices=_fake_devices(0))
    assert placement.kind == "cpu"
    assert isinstance(placement.strategy, tf.distribute.OneDeviceStrategy)
    assert placement.num_replicas == 1 and placement.is_chief
    placement = build_strategy(DistributeConfig(strategy="auto"), list_devices=_fake_devices(1))
    assert placement.kind == "gpu"
    assert placement.strategy.extended.worker_devices[0].upper().endswith("GPU:0")


def test_tpu_resolution_uses_the_named_tpu(monkeypatch):
    seen = {}

    def factory(tpu):
        seen["tpu"] = tpu
        return "resolver"

    calls = []
    monkeypatch.setattr(
        tf.config, "experimental_connect_to_cluster", lambda r: calls.append(("connect", r))
    )
    monkeypatch.setattr(
        tf.tpu.experimental, "initialize_tpu_system", lambda r: calls.append(("init", r))
    )
    monkeypatch.setattr(
        tf.distribute, "TPUStrategy", lambda r: SimpleNamespace(resolver=r, num_replicas_in_sync=8)
    )
    placement = build_strategy(
        DistributeConfig(strategy="auto", tpu="my-tpu"),
        list_devices=_fake_devices(2),
        tpu_resolver_factory=factory,
    )
    assert seen["tpu"] == "my-tpu"
    assert placement.kind == "tpu" and placement.num_replicas == 8
    assert calls == [("connect", "resolver"), ("init", "resolver")]


def test_named_tpu_that_does_not_resolve_is_a_user_error():
    def factory(tpu):
        raise ValueError("Could not lookup TPU")

    with pytest.raises(UserError, match="distribute.tpu `nope` did not resolve"):
        build_strategy(DistributeConfig(strategy="tpu", tpu="nope"), tpu_resolver_factory=factory)


def test_auto_never_probes_for_a_tpu_when_none_is_named(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)

    def factory(tpu):
        raise AssertionError("probed for a TPU")

    placement = build_strategy(
        DistributeConfig(strategy="auto"),
        list_devices=_fake_devices(0),
        tpu_resolver_factory=factory,
    )
    assert placement.kind == "cpu"


@pytest.mark.parametrize(
    "tf_config,role",
    [
        (
            {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}},
            ("worker", 0, True),
        ),
        (
            {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}},
            ("worker", 1, False),
        ),
        (
            {
                "cluster": {"chief": ["c:0"], "worker": ["a:1"]},
                "task": {"type": "worker", "index": 0},
            },
            ("worker", 0, False),
        ),
        (
            {
                "cluster": {"chief": ["c:0"], "worker": ["a:1"]},
                "task": {"type": "chief", "index": 0},
            },
            ("chief", 0, True),
        ),
    ],
)
def test_multi_worker_chief_from_tf_config(monkeypatch, tf_config, role):
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert strategy_module._multi_worker_role() == role


def test_multi_worker_without_tf_config_is_a_user_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="TF_CONFIG is not set"):
        strategy_module._multi_worker_role()
