"""The one wizard-state object: what the user chose so far and what the wizard found out.

The App owns a single WizardState and hands it to every screen. The run config in it is the
wizard's only product; everything else is context for the screens (the account, the GPUs, the
model's facts). Fields left at None mean "not found out yet": the screens fill them from
workers, and tests fill them up front so snapshots do not depend on the machine they run on.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import RunConfig

STEPS = ("login", "model", "method", "dataset", "settings", "review")
STEP_TITLES = {
    "login": "Token",
    "model": "Model",
    "method": "Method",
    "dataset": "Dataset",
    "settings": "Settings",
    "review": "Review",
}


@dataclass
class ModelInfo:
    """What the Model step shows about a model, from the Hub or from a local folder."""

    id: str
    source: str  # "hub" | "local"
    architecture: str | None = None
    model_type: str | None = None
    parameters: int | None = None
    license: str | None = None
    size_bytes: int | None = None
    gated: bool = False
    can_access: bool = True
    access_url: str | None = None


@dataclass
class WizardState:
    config: RunConfig = field(default_factory=RunConfig)
    demo: bool = False
    runs_root: Path = Path("runs")
    # The token: source is "env" | "session" | "keyring" | "hf-cli" | None; token_checked says we looked.
    token: str | None = None
    token_source: str | None = None
    token_checked: bool = False
    account: str | None = None
    # (available, reason) from core.hub.keyring_available(); None until asked.
    keyring: tuple[bool, str] | None = None
    # GpuInfo objects (index, name, total_gib, free_gib, ...); None until detected, [] for none.
    gpus: list[Any] | None = None
    memory_gib: float | None = None
    model_info: ModelInfo | None = None
    # The output_dir the wizard suggested, so a later change of model or method can re-suggest it.
    suggested_output: str | None = None
    method_chosen: bool = False  # the user picked a method, so the recommendation no longer moves the choice
    # Token counts of the dataset's examples (Dataset step), for the fastest-settings search.
    token_lengths: list[int] | None = None
    demo_model: str | None = None  # the built-in demo model's folder, once the demo is chosen

    @property
    def in_demo(self) -> bool:
        """Walking the demo: chosen on the Welcome screen, its model not replaced since."""
        return self.demo and bool(self.demo_model) and self.config.model == self.demo_model

    @property
    def hardware_known(self) -> bool:
        return self.gpus is not None

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    @property
    def suggests_demo(self) -> bool:
        """The demo is the sensible first choice with no GPU to train on or no token for the Hub."""
        no_gpu = self.gpus is not None and not self.gpus
        no_token = self.token_checked and self.token is None
        return self.demo or no_gpu or no_token

    def memory_summary(self) -> str:
        if self.gpus:
            names = {gpu.name for gpu in self.gpus}
            name = names.pop() if len(names) == 1 else "GPUs"
            smallest = min(gpu.total_gib for gpu in self.gpus)
            count = f"{len(self.gpus)} × " if len(self.gpus) > 1 else ""
            return f"{count}{name}, {smallest:.0f} GiB each" if count else f"{name}, {smallest:.0f} GiB"
        if self.gpus is not None:
            memory = f"{self.memory_gib:.0f} GiB of CPU memory" if self.memory_gib else "CPU memory"
            return f"no GPU found: training runs on the CPU ({memory})"
        return "looking for GPUs…"

    def suggested_output_dir(self) -> str:
        """runs/<model name>-<method>, numbered when that folder already holds something."""
        name = "demo" if self.demo else Path(self.config.model.rstrip("/")).name or "run"
        base = f"{_slug(name)}-{self.config.method}"
        candidate = self.runs_root / base
        number = 2
        while candidate.exists():
            candidate = self.runs_root / f"{base}-{number}"
            number += 1
        return str(candidate)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower() or "run"


def system_memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):
        return None
