"""What this device can do, as far as the node needs it today: its tier and battery state.

Tiers follow DESIGN §6 (light < 1, standard 1–10, heavy > 10 TOPS). Until the routing work adds a
measured calibration, the tier is configured or estimated from the hardware psutil reports.
"""

from __future__ import annotations

import psutil

TIERS = ("light", "standard", "heavy")
LIGHT_MAX_CORES = 2  # up to this many logical cores (or under 2 GiB) is a light device
HEAVY_MIN_CORES = 16  # this many cores (or an accelerator provider) is a heavy device
LIGHT_MAX_MEMORY = 2 * 2**30


def estimate_tier(cpu_count: int | None, memory_bytes: int, accelerated: bool) -> str:
    """A device's tier from its core count, memory and whether a GPU/NPU provider is present."""
    if accelerated or (cpu_count or 1) >= HEAVY_MIN_CORES:
        return "heavy"
    if (cpu_count or 1) <= LIGHT_MAX_CORES or memory_bytes < LIGHT_MAX_MEMORY:
        return "light"
    return "standard"


ACCELERATOR_PROVIDERS = frozenset({
    "CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider",
    "MIGraphXExecutionProvider", "OpenVINOExecutionProvider", "CoreMLExecutionProvider",
    "DmlExecutionProvider", "QNNExecutionProvider", "NnapiExecutionProvider",
    "CANNExecutionProvider", "VitisAIExecutionProvider",
})  # fmt: skip
"""onnxruntime providers that run on a GPU or NPU (CPU and Azure, a remote endpoint, do not)."""


def local_tier(providers: list[str]) -> str:
    """The tier of the machine this runs on."""
    accelerated = any(p in ACCELERATOR_PROVIDERS for p in providers)
    return estimate_tier(usable_cores(), psutil.virtual_memory().total, accelerated)


def usable_cores() -> int:
    """Cores this process may run on (its affinity: a container's share, not the host's)."""
    try:
        return len(psutil.Process().cpu_affinity() or []) or (psutil.cpu_count() or 1)
    except (AttributeError, psutil.Error):
        return psutil.cpu_count() or 1


def on_battery() -> bool:
    """True when the device runs from a battery that is discharging."""
    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    return battery is not None and not battery.power_plugged
