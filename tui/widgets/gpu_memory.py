"""GPU memory per GPU, from the step events (the trainer measures it; the UI never touches CUDA)."""

from __future__ import annotations

from typing import Any

from textual.reactive import reactive
from textual.widgets import Static


class GpuMemory(Static):
    """One line per GPU: a bar of the card's used memory, and the training process's peak reservation."""

    DEFAULT_CSS = """
    GpuMemory {
        height: auto;
        padding: 0 1;
    }
    """

    gpus: reactive[list[dict[str, Any]] | None] = reactive(None)

    def render(self) -> str:
        if self.gpus is None:
            return "GPU memory: waiting for the first step"
        if not self.gpus:
            return "Device: CPU"
        lines = []
        for gpu in self.gpus:
            total = gpu.get("total_gib") or 0
            used = gpu.get("used_gib", 0)
            figures = f" {used:.1f}/{total:.0f} GiB"
            if gpu.get("max_reserved_gib") is not None:
                figures += f", peak {gpu['max_reserved_gib']:.1f}"
            label = f"GPU {gpu.get('index', len(lines))} "
            width = max(4, min(24, self.size.width - len(label) - len(figures) - 2))
            filled = min(width, round(width * used / total)) if total else 0
            lines.append(label + "█" * filled + "░" * (width - filled) + figures)
        return "\n".join(lines)
