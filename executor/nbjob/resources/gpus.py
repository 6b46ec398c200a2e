"""The GPUs the kernel sees, through NVML (``nvidia-ml-py``, module ``pynvml``).

Imported only when present, and used only when NVML starts and finds a device: a machine
without a GPU pays nothing. Inside a container NVML reports host process ids, so memory cannot
be attributed to the kernel's processes: whole devices are sampled, restricted to the ones the
kernel sees (``CUDA_VISIBLE_DEVICES``, else ``NVIDIA_VISIBLE_DEVICES``: indexes or UUIDs).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Gpu:
    """One device, one reading."""

    index: int  # NVML's index (the machine's numbering)
    name: str
    memory_used_bytes: int
    memory_total_bytes: int
    utilization: int | None  # percent of the last sample period the device was busy
    power_w: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "memory_used_bytes": self.memory_used_bytes,
            "utilization": self.utilization,
            "power_w": self.power_w,
        }


def visible(env: Mapping[str, str]) -> list[str] | None:
    """The devices ``env`` makes visible (indexes or UUIDs); None: all of them."""
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        value = env.get(name)
        if value is None:
            continue
        if value.strip().lower() in ("", "all"):
            return None
        if value.strip().lower() in ("none", "void", "-1"):
            return []
        return [v.strip() for v in value.split(",") if v.strip()]
    return None


class Nvml:
    """The visible devices' handles, read through ``pynvml`` (or a module like it)."""

    def __init__(self, nvml: Any, handles: list[tuple[int, Any]]) -> None:
        self.nvml, self.handles = nvml, handles

    @classmethod
    def open(cls, env: Mapping[str, str], module: Any = None) -> Nvml | None:
        """NVML started with the devices ``env`` shows, or None (no ``pynvml``, no driver, no
        device visible)."""
        if module is None:
            try:
                module = importlib.import_module("pynvml")
            except ImportError:
                return None
        try:
            module.nvmlInit()
            count = int(module.nvmlDeviceGetCount())
            handles = [(i, module.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
        except Exception:  # NVMLError (no driver, no device) or a broken install
            return None
        wanted = visible(env)
        if wanted is not None:
            handles = [(i, h) for i, h in handles if _matches(module, i, h, wanted)]
        return cls(module, handles) if handles else None

    def limits(self) -> list[dict[str, Any]]:
        """Each visible device's index, name and memory."""
        return [
            {"index": g.index, "name": g.name, "memory_total_bytes": g.memory_total_bytes}
            for g in self.read()
        ]

    def read(self) -> list[Gpu]:
        """Each visible device now (one that cannot be read is left out)."""
        found = []
        for index, handle in self.handles:
            with contextlib.suppress(Exception):
                found.append(self._one(index, handle))
        return found

    def _one(self, index: int, handle: Any) -> Gpu:
        n = self.nvml
        memory = n.nvmlDeviceGetMemoryInfo(handle)
        utilization: int | None = None
        power: float | None = None
        with contextlib.suppress(Exception):
            utilization = int(n.nvmlDeviceGetUtilizationRates(handle).gpu)
        with contextlib.suppress(Exception):
            power = round(n.nvmlDeviceGetPowerUsage(handle) / 1000, 1)  # milliwatts
        return Gpu(index, _text(n.nvmlDeviceGetName(handle)), int(memory.used),
                   int(memory.total), utilization, power)  # fmt: skip

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()


def _matches(module: Any, index: int, handle: Any, wanted: list[str]) -> bool:
    if str(index) in wanted:
        return True
    try:
        uuid = _text(module.nvmlDeviceGetUUID(handle))
    except Exception:
        return False
    return any(uuid.startswith(w) for w in wanted if not w.isdigit())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
