"""The GPUs on this machine, through NVML (nvidia-ml-py), without importing torch."""

from __future__ import annotations

import os
from dataclasses import dataclass

GIB = 1024**3


@dataclass
class GpuInfo:
    index: int
    name: str
    total_gib: float
    free_gib: float
    compute_capability: tuple[int, int]

    @property
    def bf16(self) -> bool:
        return self.compute_capability[0] >= 8


def detect_gpus() -> list[GpuInfo]:
    """GPUs visible to this process (CUDA_VISIBLE_DEVICES respected); [] on a machine without one."""
    try:
        import pynvml
    except ImportError:
        return _from_torch()
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: a machine without an NVIDIA GPU
        return []
    try:
        indices = list(range(pynvml.nvmlDeviceGetCount()))
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            indices = [int(i) for i in visible.split(",") if i.strip().isdigit() and int(i) < len(indices)]
        gpus = []
        for position, index in enumerate(indices):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(GpuInfo(position, name.decode() if isinstance(name, bytes) else name,
                                round(memory.total / GIB, 2), round(memory.free / GIB, 2), (major, minor)))
        return gpus
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _from_torch() -> list[GpuInfo]:
    import sys

    if "torch" not in sys.modules:  # importing torch costs seconds: only ask it when it is loaded anyway
        return []
    torch = sys.modules["torch"]
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        gpus.append(GpuInfo(index, torch.cuda.get_device_name(index), round(total / GIB, 2), round(free / GIB, 2),
                            torch.cuda.get_device_capability(index)))
    return gpus


def system_memory_gib() -> tuple[float, float]:
    """(total, available) CPU memory in GiB, from /proc/meminfo."""
    values = {}
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0]) * 1024
    except OSError:
        return 0.0, 0.0
    return round(values.get("MemTotal", 0) / GIB, 2), round(values.get("MemAvailable", 0) / GIB, 2)


def describe(gpus: list[GpuInfo]) -> str:
    if not gpus:
        total, available = system_memory_gib()
        return f"No NVIDIA GPU found: training runs on the CPU ({available:.0f} of {total:.0f} GiB memory free), slowly."
    names = {}
    for gpu in gpus:
        names.setdefault(gpu.name, []).append(gpu)
    parts = [f"{len(group)} x {name} ({group[0].total_gib:.0f} GiB, {min(g.free_gib for g in group):.0f} GiB free)"
             for name, group in names.items()]
    return "; ".join(parts)
