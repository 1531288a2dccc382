"""Helpers for the tests: a learnable toy task and configs over it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path


TOY_WORDS = ["cat", "dog", "bird", "fish", "tree", "house", "river", "stone", "cloud", "apple",
             "lemon", "grape", "train", "plane", "chair", "table", "green", "blue", "light", "night"]


def toy_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(f"Reverse the word {word}.", word[::-1]) for word in (rng.choice(TOY_WORDS) for _ in range(count))]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def toy_config(model: Path, data: Path, output_dir: Path, method: str = "lora", **train):
    from core.config import config_from_dict

    settings = {"max_steps": 12, "batch_size": 8, "grad_accum": 1, "lr": 5e-3, "save_steps": 6,
                "warmup_ratio": 0.0, "lr_scheduler": "constant"}
    settings.update(train)
    return config_from_dict({"model": str(model), "method": method,
                             "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
                             "data": {"path": str(data), "max_length": 64, "eval_fraction": 0.0},
                             "train": settings, "output_dir": str(output_dir)})




def cli(*args, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`lora-wizard ARGS` in a subprocess (python -m core.cli), output captured."""
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def wait_for(predicate, timeout: float = 180, poll: float = 0.2) -> bool:
    """Polls `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False
