"""GPU memory per GPU, from the step events (the trainer measures it; the UI never touches CUDA)."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static


class GpuMemory(Static):
    DEFAULT_CSS = """
    GpuMemory {
        height: auto;
    }
    """

    gpus: reactive[list[dict] | None] = reactive(None)

    def render(self) -> str:
        if self.gpus is None:
            return "GPU memory: waiting for the first step"
        if not self.gpus:
            return "Device: CPU (no GPU memory to show)"
        lines = []
        for gpu in self.gpus:
            total = gpu.get("total_gib") or 0
            used = gpu.get("max_reserved_gib", gpu.get("used_gib", 0))
            width = 16
            filled = min(width, round(width * used / total)) if total else 0
            bar = "█" * filled + "░" * (width - filled)
            lines.append(f"GPU {gpu['index']} {bar} {used:.1f}/{total:.0f} GiB peak")
        return "\n".join(lines)
