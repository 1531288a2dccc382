"""SVG snapshots of the setup screens (pytest-textual-snapshot): look at the SVGs before --snapshot-update.

Everything shown is fixed by the test: hardware facts and the token come from the wizard state,
paths are relative to a temporary working directory, models are the tiny seeded ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.widgets import Input
from textual.worker import WorkerCancelled, WorkerFailed

from core.config import config_from_dict
from tests.helpers import toy_pairs, write_jsonl
from tui.app import LoraWizardApp
from tui.state import ModelInfo, WizardState

SIZE = (100, 32)
NO_KEYRING = ("No usable OS keyring here (the keyring library found no backend: fail.Keyring); to store the token, "
              "install one (`sudo apt install gnome-keyring`) and start lora-wizard under dbus-run-session, or set "
              "HF_TOKEN in the environment, or keep the token for this session only.")


class Gpu:
    """A GPU as core.hardware describes one (index, name, total_gib, free_gib, ...), fixed for the picture."""

    def __init__(self, name: str, total_gib: float) -> None:
        self.index, self.name, self.total_gib, self.free_gib = 0, name, total_gib, total_gib
        self.compute_capability, self.bf16 = (9, 0), True


def fixed_state(**values) -> WizardState:
    facts = dict(gpus=[], memory_gib=16.0, token_checked=True, keyring=(True, "OS keyring: SecretService.Keyring"),
                 runs_root=Path("runs"))
    facts.update(values)
    return WizardState(**facts)


async def settle(pilot) -> None:
    for _ in range(3):
        for worker in list(pilot.app.workers):
            try:
                await worker.wait()
            except (WorkerFailed, WorkerCancelled):
                pass
        await pilot.pause()
    # A blinking cursor is drawn or not depending on the moment of the picture.
    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False
    await pilot.pause()


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_model) -> Path:
    """A working directory with ./tiny-model and ./data.jsonl, so the paths on screen are the same every run."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model("llama"), tmp_path / "tiny-model")
    write_jsonl(tmp_path / "data.jsonl", [{"instruction": q, "input": "", "output": a} for q, a in toy_pairs(40, seed=3)])
    return tmp_path


def local_config(**values):
    settings = {"model": "tiny-model", "method": "lora", "data": {"path": "data.jsonl", "max_length": 32}}
    settings.update(values)
    return config_from_dict(settings)


def test_welcome_without_gpu_or_token(snap_compare, workdir):
    app = LoraWizardApp(fixed_state())
    assert snap_compare(app, run_before=settle, terminal_size=SIZE)


def test_welcome_at_80x24_with_a_gpu_a_token_and_runs_on_disk(snap_compare, workdir):
    run = workdir / "runs" / "qwen-qlora"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("model: Qwen/Qwen2.5-0.5B-Instruct\nmethod: qlora\n")
    (run / "events.jsonl").write_text('{"type": "started", "time": 1}\n{"type": "step", "time": 2, "step": 40, '
                                      '"max_steps": 200, "loss": 1.2}\n{"type": "cancelled", "time": 3}\n')
    app = LoraWizardApp(fixed_state(gpus=[Gpu("NVIDIA H200", 139.8)], token="hf_x", token_source="keyring"))
    assert snap_compare(app, run_before=settle, terminal_size=(80, 24))


def test_login_without_a_keyring(snap_compare, workdir):
    app = LoraWizardApp(fixed_state(keyring=(False, NO_KEYRING)), step="login")
    assert snap_compare(app, run_before=settle, terminal_size=SIZE)


def test_login_with_hf_token_in_the_environment(snap_compare, workdir):
    app = LoraWizardApp(fixed_state(token="hf_x", token_source="env", account="alice"), step="login")
    assert snap_compare(app, run_before=settle, terminal_size=SIZE)


def test_model_from_the_hub(snap_compare, workdir):
    info = ModelInfo(id="Qwen/Qwen2.5-0.5B-Instruct", source="hub", architecture="Qwen2ForCausalLM",
                     model_type="qwen2", parameters=494_032_768, license="apache-2.0", size_bytes=988_097_824)
    state = fixed_state(config=config_from_dict({"model": info.id}), model_info=info)
    assert snap_compare(LoraWizardApp(state, step="model"), run_before=settle, terminal_size=SIZE)


def test_model_gated_without_access(snap_compare, workdir):
    info = ModelInfo(id="meta-llama/Llama-3.1-8B-Instruct", source="hub", architecture="LlamaForCausalLM",
                     model_type="llama", parameters=8_030_261_248, license="llama3.1", size_bytes=16_060_556_376,
                     gated=True, can_access=False, access_url="https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct")
    state = fixed_state(config=config_from_dict({"model": info.id}), model_info=info, token="hf_x", token_source="env")
    assert snap_compare(LoraWizardApp(state, step="model"), run_before=settle, terminal_size=SIZE)


def test_model_local_folder(snap_compare, workdir):
    async def look_up(pilot):
        pilot.app.screen.query_one("#model-id").value = "tiny-model"
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(LoraWizardApp(fixed_state(), step="model"), run_before=look_up, terminal_size=SIZE)


def test_model_empty_id(snap_compare, workdir):
    async def empty(pilot):
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(LoraWizardApp(fixed_state(), step="model"), run_before=empty, terminal_size=SIZE)


def test_method_on_a_cpu_only_machine(snap_compare, workdir):
    state = fixed_state(config=local_config())
    assert snap_compare(LoraWizardApp(state, step="method"), run_before=settle, terminal_size=SIZE)


def test_method_for_an_8b_model_on_a_16_gib_gpu(snap_compare, workdir):
    """Llama 3.1 8B's shape comes from the estimator's offline catalog: LoRA does not fit, QLoRA does."""
    config = config_from_dict({"model": "meta-llama/Llama-3.1-8B-Instruct", "data": {"max_length": 1024}})
    state = fixed_state(config=config, gpus=[Gpu("NVIDIA RTX A4000", 15.99)])
    assert snap_compare(LoraWizardApp(state, step="method"), run_before=settle, terminal_size=SIZE)


def test_dataset_preview(snap_compare, workdir):
    async def load(pilot):
        await pilot.pause()
        pilot.app.screen.query_one("#dataset-path").value = "data.jsonl"
        await pilot.press("enter")
        await settle(pilot)

    state = fixed_state(config=local_config())
    assert snap_compare(LoraWizardApp(state, step="dataset"), run_before=load, terminal_size=SIZE)


def test_settings_defaults(snap_compare, workdir):
    state = fixed_state(config=local_config())
    assert snap_compare(LoraWizardApp(state, step="settings"), run_before=settle, terminal_size=SIZE)


def test_settings_with_an_invalid_value(snap_compare, workdir):
    async def mistype(pilot):
        await settle(pilot)
        field = next(f for f in pilot.app.screen.query("SettingField") if f.key == "train.lr")
        field.query_one(".setting-input").value = "fast"
        await settle(pilot)

    state = fixed_state(config=local_config())
    assert snap_compare(LoraWizardApp(state, step="settings"), run_before=mistype, terminal_size=SIZE)


def test_review(snap_compare, workdir):
    state = fixed_state(config=local_config(output_dir="runs/tiny-model-lora"))
    assert snap_compare(LoraWizardApp(state, step="review"), run_before=settle, terminal_size=SIZE)
