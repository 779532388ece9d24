"""Which precision a run computes in: ``training.mixed_precision: auto`` resolved on the hardware.

Mixed precision is only a gain where the hardware multiplies in the narrow type natively: a
CPU without bfloat16 instructions emulates it, and the Multi30k model then trains 2-4x slower
than in float32. So ``auto`` (the default) looks at what the run will compute on:

================================================  ==================
hardware                                          policy
================================================  ==================
TPU                                               ``mixed_bfloat16``
GPUs, all of compute capability 8.0 or later      ``mixed_bfloat16``
GPUs, all of compute capability 7.x or later      ``mixed_float16`` (dynamic loss scaling)
older GPUs                                        ``float32``
CPU with AMX (``amx_bf16``)                       ``mixed_bfloat16``
CPU with ``avx512_bf16`` and no AMX               ``mixed_bfloat16``
any other CPU                                     ``float32``
================================================  ==================

:func:`choose_precision` is a pure function of a :class:`Hardware` description, so the table is
tested with made-up machines; :func:`detect_hardware` describes the machine at hand. An explicit
``none``, ``mixed_float16`` or ``mixed_bfloat16`` is always obeyed. The environment variable
``TRANSFORMER_TF_AUTO_PRECISION`` (one of those three) pins what ``auto`` means on a machine:
for a cluster of unlike hosts, or a test suite whose numbers must not depend on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from transformer_tf.errors import UserError

#: ``training.mixed_precision`` values -> Keras dtype policies (``auto`` resolves to one).
POLICIES = {"none": "float32", "mixed_float16": "mixed_float16", "mixed_bfloat16": "mixed_bfloat16"}

#: The environment variable that pins what ``auto`` resolves to.
AUTO_ENV = "TRANSFORMER_TF_AUTO_PRECISION"

#: CPU flags (as Linux's /proc/cpuinfo names them) of native bfloat16 arithmetic.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Hardware:
    """What a run computes on.

    Attributes:
        kind: str, ``"cpu"``, ``"gpu"`` or ``"tpu"``.
        cpu_model: str, the CPU's model name ("" when unknown).
        cpu_flags: frozenset of str, the CPU's feature flags (lower case).
        gpu_compute_capabilities: tuple of ``(major, minor)``, one per GPU the run uses.
    """

    kind: str
    cpu_model: str = ""
    cpu_flags: frozenset = field(default_factory=frozenset)
    gpu_compute_capabilities: tuple = ()

    def describe(self) -> str:
        if self.kind == "tpu":
            return "TPU"
        if self.kind == "gpu":
            caps = ", ".join(f"{major}.{minor}" for major, minor in self.gpu_compute_capabilities)
            return f"{len(self.gpu_compute_capabilities)} GPU(s), compute capability {caps}"
        flags = " ".join(f for f in BF16_CPU_FLAGS if f in self.cpu_flags) or "none"
        return f"CPU {self.cpu_model or '(model unknown)'}, bfloat16 flags: {flags}"


@dataclass(frozen=True)
class PrecisionChoice:
    """A resolved ``training.mixed_precision``.

    Attributes:
        requested: str, the config's value (``auto``, ``none``, ...).
        policy: str, the Keras dtype policy: ``float32``, ``mixed_float16`` or ``mixed_bfloat16``.
        reason: str, why, in words (logged and recorded in the run directory).
        hardware: str, what it was decided on (:meth:`Hardware.describe`).
    """

    requested: str
    policy: str
    reason: str
    hardware: str = ""

    def describe(self) -> str:
        """One line for logs: ``mixed_bfloat16 (auto: the CPU executes ...; CPU ...)``."""
        on = f"; {self.hardware}" if self.hardware else ""
        return f"{self.policy} ({self.requested}: {self.reason}{on})"

    def record(self) -> dict:
        """What ``RUN/precision.json`` holds."""
        return {
            "requested": self.requested,
            "policy": self.policy,
            "reason": self.reason,
            "hardware": self.hardware,
        }


def choose_precision(
    requested: str, hardware: Hardware, pinned: str | None = None
) -> PrecisionChoice:
    """Resolve ``requested`` (a ``training.mixed_precision`` value) on ``hardware``.

    Args:
        requested: str, ``auto``, ``none``, ``mixed_float16`` or ``mixed_bfloat16``.
        hardware: Hardware, what the run computes on.
        pinned: str | None, what ``auto`` means regardless of the hardware (the value of
            :data:`AUTO_ENV`); None decides from the table above.
    """
    on = hardware.describe()
    if requested != "auto":
        return PrecisionChoice(
            requested, POLICIES[requested], f"training.mixed_precision is `{requested}`", on
        )
    if pinned:
        if pinned not in POLICIES:
            raise UserError(
                f"environment variable {AUTO_ENV}={pinned!r} is not one of "
                f"{', '.join(POLICIES)}; unset it to choose from the hardware"
            )
        return PrecisionChoice(
            "auto", POLICIES[pinned], f"{AUTO_ENV}={pinned} in the environment", on
        )

    def auto(policy: str, reason: str) -> PrecisionChoice:
        return PrecisionChoice("auto", policy, reason, on)

    if hardware.kind == "tpu":
        return auto("mixed_bfloat16", "TPUs compute in bfloat16 natively")
    if hardware.kind == "gpu":
        caps = hardware.gpu_compute_capabilities
        oldest = min(caps) if caps else (0, 0)
        text = ".".join(map(str, oldest)) if caps else "unknown"
        if caps and oldest >= (8, 0):
            return auto(
                "mixed_bfloat16",
                f"GPU compute capability {text} (>= 8.0) has bfloat16 tensor cores",
            )
        if caps and oldest >= (7, 0):
            return auto(
                "mixed_float16",
                f"GPU compute capability {text} has float16 tensor cores but no bfloat16 "
                "(dynamic loss scaling on)",
            )
        return auto("float32", f"GPU compute capability {text}: no tensor cores known to be faster")
    present = [flag for flag in BF16_CPU_FLAGS if flag in hardware.cpu_flags]
    if present:
        return auto("mixed_bfloat16", f"the CPU executes bfloat16 natively ({', '.join(present)})")
    return auto(
        "float32",
        "the CPU has no bfloat16 instructions (no amx_bf16 or avx512_bf16): bfloat16 would be "
        "emulated, 2-4x slower than float32",
    )


def resolve_precision(requested: str, hardware: Hardware) -> PrecisionChoice:
    """:func:`choose_precision` with ``auto`` pinned by :data:`AUTO_ENV` when it is set."""
    return choose_precision(requested, hardware, os.environ.get(AUTO_ENV) or None)


def read_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, frozenset]:
    """(model name, feature flags) of the first CPU in a Linux ``cpuinfo`` file; ("", {}) when
    there is none (other systems: no bfloat16 is assumed)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", frozenset()
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.lower().split())
        if model and flags:
            break
    return model, flags


def detect_hardware(placement_kind: str) -> Hardware:
    """Describe the machine a run of ``placement_kind`` (``cpu``, ``gpu``, ``mirrored``,
    ``multi_worker`` or ``tpu``, see :mod:`transformer_tf.distribute`) computes on."""
    import tensorflow as tf

    model, flags = read_cpu()
    if placement_kind == "tpu":
        return Hardware("tpu", model, flags)
    gpus = tf.config.list_physical_devices("GPU") if placement_kind != "cpu" else []
    if not gpus:
        return Hardware("cpu", model, flags)
    caps = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        caps.append(tuple(details.get("compute_capability") or (0, 0)))
    return Hardware("gpu", model, flags, tuple(caps))
