"""Fixtures for the run screens (training, chat, export): replayed event files and one real tiny run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import toy_config


@pytest.fixture
def anyio_backend():
    return "asyncio"  # Textual runs on asyncio


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_model, toy_alpaca) -> Path:
    """A finished run of the tiny Llama on the toy task: real training steps, a real saved adapter.

    Built once per session; tests read it and write only elsewhere (merges and copies go to tmp_path).
    """
    from core.train import run_training

    run_dir = tmp_path_factory.mktemp("tui-run") / "run"
    final = run_training(toy_config(tiny_model("llama"), toy_alpaca, run_dir, max_steps=8), run_dir)
    assert final["type"] == "done", final
    return run_dir


@pytest.fixture
def run_folder(tmp_path):
    """run_folder(name) -> a RunFolder under tmp_path."""
    from tests.tui.run_files import RunFolder

    return lambda name="run", **kwargs: RunFolder(tmp_path / name, **kwargs)
