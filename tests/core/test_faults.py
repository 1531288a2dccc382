"""Nothing lost: kill -9 at a random moment, a full disk while saving."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from core.events import read_events
from core.runs import run_state
from core.train import latest_complete_checkpoint
from tests.helpers import toy_config, wait_for


def _wait_for(predicate, timeout=240):
    return wait_for(predicate, timeout, poll=0.1)


def _train(config_path, cwd, *extra):
    return subprocess.Popen([sys.executable, "-m", "core.cli", "train", str(config_path), *extra], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_9_shows_crashed_keeps_a_complete_checkpoint_and_resumes(tiny_model, toy_alpaca, tmp_path):
    run_dir = tmp_path / "run"
    config = toy_config(tiny_model("llama"), toy_alpaca, run_dir, max_steps=30, save_steps=2, batch_size=2)
    config.save(tmp_path / "config.yaml")
    process = _train(tmp_path / "config.yaml", tmp_path)
    assert _wait_for(lambda: any(e["type"] == "checkpoint" for e in read_events(run_dir)))
    time.sleep(random.uniform(0, 1.5))  # a random moment: mid-step or mid-save
    pid = json.loads((run_dir / "status.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "killed (SIGKILL)" in output and "--resume" in output
    assert run_state(run_dir) == "crashed"
    checkpoint = latest_complete_checkpoint(run_dir)
    assert checkpoint is not None and (checkpoint / "adapter_model.safetensors").exists()

    resumed = _train(tmp_path / "config.yaml", tmp_path, "--resume")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    assert f"resuming from {checkpoint}" in output
    assert run_state(run_dir) == "done"


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.decode().strip()}); needs root")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)])


def test_full_disk_while_saving_is_a_clear_error_and_keeps_the_previous_checkpoint(tiny_model, toy_alpaca, tmp_path,
                                                                                  small_disk):
    run_dir = small_disk / "run"
    config = toy_config(tiny_model("llama"), toy_alpaca, run_dir, max_steps=60, save_steps=3, batch_size=2,
                        save_total_limit=5)
    config.save(tmp_path / "config.yaml")
    process = _train(tmp_path / "config.yaml", tmp_path)
    assert _wait_for(lambda: any(e["type"] == "checkpoint" for e in read_events(run_dir)))
    filler = small_disk / "filler"
    with open(filler, "wb") as stream:  # fill what is left, as another program might
        try:
            while True:
                stream.write(b"\0" * 65536)
                stream.flush()
        except OSError:
            pass
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    last = output.strip().splitlines()[-1]
    assert "disk" in last and "full" in last and "--resume" in last, output
    assert "Traceback" not in output
    kept = latest_complete_checkpoint(run_dir)
    assert kept is not None and (kept / "adapter_model.safetensors").exists()

    filler.unlink()
    moved = tmp_path / "run-moved"  # free space the way a user would: the run moves to a bigger disk
    shutil.copytree(run_dir, moved)
    config.output_dir = str(moved)
    config.train.max_steps = kept and int(kept.name.split("-")[1]) + 3
    config.save(tmp_path / "config2.yaml")
    resumed = _train(tmp_path / "config2.yaml", tmp_path, "--resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output


def test_cancel_while_the_trainer_is_still_starting_ends_as_cancelled(tiny_model, toy_alpaca, tmp_path):
    run_dir = tmp_path / "run"
    config = toy_config(tiny_model("llama"), toy_alpaca, run_dir, max_steps=30)
    config.save(tmp_path / "config.yaml")
    process = _train(tmp_path / "config.yaml", tmp_path)
    assert _wait_for(lambda: (run_dir / "status.json").exists(), timeout=30)
    time.sleep(1.0)  # the trainer is importing torch / loading data: no step yet
    assert not any(e["type"] == "step" for e in read_events(run_dir))
    os.kill(json.loads((run_dir / "status.json").read_text())["pid"], signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert read_events(run_dir)[-1]["type"] == "cancelled"
    assert run_state(run_dir) == "cancelled"


SQUEEZE = """
import resource, sys
from transformers import TrainerCallback
from core.config import load_config
from core.train import run_training


class Squeeze(TrainerCallback):
    '''The fault: once the model is loaded, the process may grow by only 32 MiB more (RLIMIT_AS).'''

    def on_train_begin(self, args, state, control, **kwargs):
        with open("/proc/self/status") as status:
            in_use = next(int(line.split()[1]) for line in status if line.startswith("VmSize:")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (in_use + 32 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))


config = load_config(sys.argv[1])
final = run_training(config, config.output_dir, extra_callbacks=[Squeeze()])
print("FINAL", final["type"])
"""


def test_cpu_memory_exhaustion_fails_with_one_line_and_advice_the_wizard_can_apply(tiny_model, toy_alpaca, tmp_path):
    run_dir = tmp_path / "run"
    # 32 sequences x 64 tokens a micro-batch: logits, activations and their gradients need far more than 32 MiB.
    config = toy_config(tiny_model("llama"), toy_alpaca, run_dir, max_steps=4, batch_size=32, save_steps=2)
    config.save(tmp_path / "config.yaml")
    result = subprocess.run([sys.executable, "-c", SQUEEZE, str(tmp_path / "config.yaml")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "FINAL failed" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]
    failed = read_events(run_dir)[-1]
    assert failed["type"] == "failed"
    assert failed["reason"].startswith("out of CPU memory; halve the micro-batch to 16"), failed["reason"]
    assert "\n" not in failed["reason"] and "Traceback" not in failed["reason"]
    assert failed["suggested_overrides"] == {"train.batch_size": 16, "train.grad_accum": 2}
    assert run_state(run_dir) == "failed"


@pytest.mark.parametrize("capacity, expect_method, expect", [
    (12.0, "lora", "use micro-batch"),     # smaller micro-batch / checkpointing fit
    (3.0, "qlora", "use QLoRA (4-bit base)"),  # nothing in 16 bits fits: QLoRA does
    (None, "lora", "halve the micro-batch to 16"),  # memory unknown (the CPU): a step down
])
def test_out_of_memory_advice_comes_from_the_estimator_and_fits(capacity, expect_method, expect):
    """The advice after an OOM is the estimator's fastest settings for the memory the run had; its
    estimate fits that memory and is below the estimate of the settings that failed."""
    from core.config import config_from_dict
    from core.train import oom_advice
    from core.vram import estimate, model_facts

    config = config_from_dict({"model": "meta-llama/Llama-3.2-1B", "method": "lora",
                               "data": {"path": "rows.jsonl", "max_length": 512},
                               "train": {"batch_size": 32, "grad_accum": 1, "gradient_checkpointing": False},
                               "output_dir": "run"})
    failed = {"batch_size": 32, "grad_accum": 1, "gradient_checkpointing": False}
    lengths = [180] * 300 + [512] * 10
    advice, overrides = oom_advice(config, failed, capacity, lengths)
    assert advice.startswith(expect)
    assert overrides.get("method", "lora") == expect_method
    if capacity:
        facts = model_facts("meta-llama/Llama-3.2-1B")
        planned = estimate(facts, expect_method, overrides["train.batch_size"], overrides.get("data.max_length", 512),
                           gradient_checkpointing=overrides["train.gradient_checkpointing"])
        assert planned.peak_gib <= capacity
        assert planned.peak_gib < estimate(facts, "lora", 32, 512, gradient_checkpointing=False).peak_gib
        assert f"of the {capacity:.1f} GiB this GPU gave the run" in advice
