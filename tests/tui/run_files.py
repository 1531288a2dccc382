"""Run directories written the way the trainer writes them, for the run screens' tests and pictures.

Events are the real contract (JSON lines with "type" and "time"), so a hand-written events.jsonl
drives the training screen exactly as a trainer would, with numbers fixed for snapshots.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

STARTED = {"type": "started", "model": "meta-llama/Llama-3.1-8B-Instruct", "method": "qlora", "device": "cuda",
           "dtype": "bfloat16", "train_examples": 950, "eval_examples": 50, "batch_size": 8, "grad_accum": 2,
           "gradient_checkpointing": False, "notes": ["Detected the alpaca format from the columns instruction, output."]}

OOM = {"type": "failed", "reason": "out of GPU memory; halve the micro-batch to 4 (accumulation doubled to keep the "
                                   "effective batch)",
       "advice": "halve the micro-batch to 4 (accumulation doubled to keep the effective batch)",
       "suggested_overrides": {"train.batch_size": 4, "train.grad_accum": 4}}


def step_events(first: int, last: int, max_steps: int = 20, gpus: int = 1) -> list[dict]:
    """Step events as the trainer writes them (fixed numbers: the pictures must not change)."""
    return [{"type": "step", "step": step, "max_steps": max_steps, "epoch": step / max_steps, "loss": 3.0 / step,
             "lr": 2e-4, "grad_norm": 1.0, "tokens_per_second": 12345.0, "elapsed_s": step * 2.0,
             "eta_s": (max_steps - step) * 2.0,
             "gpu_memory": [{"index": index, "used_gib": 30.0 + index, "total_gib": 80.0, "max_reserved_gib": 21.5}
                            for index in range(gpus)]}
            for step in range(first, last + 1)]


class RunFolder:
    """A run directory written the way the trainer writes one: events.jsonl, trainer.log, status.json."""

    def __init__(self, path: Path, config: str = "model: org/model\nmethod: qlora\n") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.yaml").write_text(config)

    def events(self, *events: dict) -> "RunFolder":
        with open(self.path / "events.jsonl", "a") as stream:
            for event in events:
                stream.write(json.dumps({"time": 1_800_000_000.0, **event}) + "\n")
        return self

    def log(self, *lines: str) -> "RunFolder":
        with open(self.path / "trainer.log", "a") as stream:
            stream.write("".join(line + "\n" for line in lines))
        return self

    def status(self, state: str, pid: int = 999_999_999) -> "RunFolder":
        (self.path / "status.json").write_text(json.dumps({"pid": pid, "state": state, "host": os.uname().nodename}))
        return self

    def live(self) -> "RunFolder":
        """A running trainer: this test process stands in for it (it is alive; nothing signals it)."""
        return self.status("running", pid=os.getpid())
