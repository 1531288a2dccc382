"""The GPUs on this machine, through NVML (nvidia-ml-py), without importing torch."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass

GIB = 1024**3


@dataclass
class GpuInfo:
    index: int  # position among the GPUs this process sees (what torch calls cuda:index)
    name: str
    total_gib: float
    free_gib: float
    compute_capability: tuple[int, int]

    @property
    def bf16(self) -> bool:
        return self.compute_capability[0] >= 8  # Ampere and newer

    def to_dict(self) -> dict:
        return {**asdict(self), "compute_capability": list(self.compute_capability), "bf16": self.bf16}


def detect_gpus() -> list[GpuInfo]:
    """GPUs visible to this process (CUDA_VISIBLE_DEVICES respected); [] on a machine without one.

    Never raises: no nvidia-ml-py, no driver or an NVML error all mean "no GPU we can plan for"."""
    try:
        import pynvml
    except ImportError:
        return _from_torch()
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: a machine without an NVIDIA GPU
        return _from_torch()
    try:
        count = pynvml.nvmlDeviceGetCount()
        uuids = [_text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
        gpus = []
        for position, index in enumerate(visible_indices(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids)):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(GpuInfo(position, _text(pynvml.nvmlDeviceGetName(handle)), round(memory.total / GIB, 2),
                                round(memory.free / GIB, 2), (int(major), int(minor))))
        return gpus
    except Exception:  # an NVML call failing mid-way (a GPU fallen off the bus, MIG quirks)
        return _from_torch()
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def visible_indices(cuda_visible_devices: str | None, uuids: list[str]) -> list[int]:
    """NVML indices of the GPUs CUDA_VISIBLE_DEVICES exposes, in its order.

    Entries are indices or (prefixes of) UUIDs; as in CUDA, the list ends at the first entry that names
    no GPU, and an empty value hides every GPU."""
    if cuda_visible_devices is None:
        return list(range(len(uuids)))
    chosen: list[int] = []
    for entry in cuda_visible_devices.split(","):
        entry = entry.strip()
        if entry.isdigit() and int(entry) < len(uuids):
            index = int(entry)
        else:
            matches = [i for i, uuid in enumerate(uuids) if entry and uuid.startswith(entry)]
            if len(matches) != 1:
                break
            index = matches[0]
        if index in chosen:
            break
        chosen.append(index)
    return chosen


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _from_torch() -> list[GpuInfo]:
    if "torch" not in sys.modules:  # importing torch costs seconds: only ask it when it is loaded anyway
        return []
    torch = sys.modules["torch"]
    try:
        if not torch.cuda.is_available():
            return []
        gpus = []
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            gpus.append(GpuInfo(index, torch.cuda.get_device_name(index), round(total / GIB, 2), round(free / GIB, 2),
                                tuple(torch.cuda.get_device_capability(index))))
        return gpus
    except Exception:
        return []


def system_memory_gib() -> tuple[float, float]:
    """(total, available) CPU memory in GiB, from /proc/meminfo; (0, 0) where there is none."""
    values = {}
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        return 0.0, 0.0
    return round(values.get("MemTotal", 0) / GIB, 2), round(values.get("MemAvailable", 0) / GIB, 2)


def describe(gpus: list[GpuInfo]) -> str:
    """One line: the GPUs by model with memory, or that there is none and training runs on the CPU."""
    if not gpus:
        total, available = system_memory_gib()
        return f"no NVIDIA GPU found: training runs on the CPU ({available:.0f} of {total:.0f} GiB memory free), slowly"
    names: dict[str, list[GpuInfo]] = {}
    for gpu in gpus:
        names.setdefault(gpu.name, []).append(gpu)
    parts = [f"{len(group)} x {name} ({group[0].total_gib:.0f} GiB, {min(g.free_gib for g in group):.0f} GiB free)"
             for name, group in names.items()]
    return "; ".join(parts)
