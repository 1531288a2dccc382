"""More than one process through accelerate: the plan, the files it writes, and real runs.

The runs are real: `accelerate launch` (torchrun underneath) starts two trainer processes that
train the tiny model on the CPU and talk over gloo, exactly as two GPUs would over NCCL; the
two-machine test starts each "machine" with the launch-node.sh the engine wrote, on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core.config import config_from_dict
from core.distributed import accelerate_config, cluster_plan, plan_launch, write_cluster_files
from core.errors import ConfigError
from core.events import read_events
from core.hardware import GpuInfo
from core.runs import run_state
from core.train import latest_complete_checkpoint
from tests.helpers import cli as _cli, toy_config, wait_for

REPO = Path(__file__).resolve().parents[2]


def gpus(count: int, total: float = 80.0, free: float | None = None, capability=(9, 0)) -> list[GpuInfo]:
    return [GpuInfo(i, "NVIDIA H100", total, total if free is None else free, capability) for i in range(count)]


def config(**distributed):
    return config_from_dict({"model": "m", "method": "qlora", "data": {"path": "d.jsonl"}, "output_dir": "runs/x",
                             "distributed": distributed})


# --- the plan -----------------------------------------------------------------------------------


@pytest.mark.parametrize("found, settings, estimates, mode, processes, reason", [
    (gpus(0), {}, {}, "single", 1, "no GPU: one process on the CPU"),
    (gpus(1), {}, {}, "single", 1, "one GPU"),
    (gpus(4), {}, {"ddp": 30.0, "fsdp": 12.0}, "ddp", 4, "data parallel over 4 GPUs: a full copy fits on each"),
    (gpus(2), {}, {"ddp": 95.0, "fsdp": 60.0}, "fsdp", 2, "FSDP over 2 GPUs: the model fits only sharded"),
    (gpus(2), {}, {"ddp": 300.0, "fsdp": 150.0}, "ddp", 2, "does not fit even sharded"),
    (gpus(4), {"gpus": [1, 3]}, {}, "ddp", 2, "data parallel over 2 GPUs"),
    (gpus(4), {"mode": "single"}, {}, "single", 1, "single asked for"),
    (gpus(2), {"mode": "fsdp"}, {}, "fsdp", 2, "fsdp asked for, over 2 GPUs"),
    (gpus(0), {"num_processes": 2}, {}, "ddp", 2, "data parallel over 2 processes"),
    (gpus(8), {"num_processes": 2}, {}, "ddp", 2, "over 2 GPUs"),
])
def test_plans(found, settings, estimates, mode, processes, reason):
    plan = plan_launch(config(**settings), found, estimates)
    assert (plan.mode, plan.processes_per_machine) == (mode, processes)
    assert reason in plan.reason
    if mode != "single" and found:
        chosen = settings.get("gpus", list(range(processes)))
        assert plan.gpu_ids == chosen and plan.mixed_precision == "bf16"


@pytest.mark.parametrize("found, settings, message", [
    (gpus(2), {"gpus": [0, 5]}, "asks for GPU 5, but this machine has GPUs 0, 1"),
    (gpus(2), {"num_processes": 3}, r"num_processes is 3 but 2 GPU\(s\) are chosen"),
    (gpus(0), {"mode": "fsdp", "num_processes": 2}, "fsdp needs CUDA GPUs"),
])
def test_impossible_plans_are_one_line(found, settings, message):
    with pytest.raises(ConfigError, match=message):
        plan_launch(config(**settings), found)


def test_fsdp_refuses_an_int8_base():
    settings = config(mode="fsdp")
    settings.method = "lora-8bit"
    with pytest.raises(ConfigError, match="FSDP cannot shard an 8-bit"):
        plan_launch(settings, gpus(2))


@pytest.mark.parametrize("values, message", [
    ({"mode": "dpp"}, "did you mean 'ddp'"),
    ({"gpus": "0,1"}, "a list of GPU indices"),
    ({"num_processes": 0}, "positive integer or 'auto'"),
    ({"main_port": 70000}, "TCP port"),
    ({"nproc_per_node": 2}, "did you mean 'distributed.num_processes'"),
])
def test_distributed_settings_are_checked(values, message):
    with pytest.raises(ConfigError, match=message):
        config(**values)


def test_accelerate_configs_load_in_accelerate(tmp_path):
    """What the engine writes is a config accelerate itself accepts, with the settings asked for."""
    from accelerate.commands.config.config_args import load_config_from_file

    cases = {
        "ddp": (plan_launch(config(), gpus(2), {"ddp": 10.0, "fsdp": 6.0}), "MULTI_GPU"),
        "fsdp": (plan_launch(config(mode="fsdp"), gpus(4)), "FSDP"),
        "cluster": (cluster_plan(config(num_machines=2, main_address="10.0.0.1"), 2, 8, cpu=False), "MULTI_GPU"),
    }
    for name, (plan, kind) in cases.items():
        settings = config(num_machines=plan.num_machines, main_address="10.0.0.1", mode=plan.mode)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(accelerate_config(plan, settings)))
        loaded = load_config_from_file(str(path))
        assert loaded.distributed_type.value == kind
        assert loaded.num_processes == plan.num_processes and loaded.num_machines == plan.num_machines
        if name == "fsdp":
            assert loaded.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
            assert loaded.mixed_precision == "bf16"
        if name == "cluster":
            assert loaded.num_processes == 16 and loaded.main_process_ip == "10.0.0.1"
            assert loaded.main_process_port == 29500


def test_cluster_files(tmp_path):
    settings = toy_config(Path("model"), Path("data.jsonl"), tmp_path / "run")
    settings.distributed.num_machines, settings.distributed.main_address = 4, "node0"
    (tmp_path / "run").mkdir()
    plan = cluster_plan(settings, 4, 8, cpu=False)
    write_cluster_files(tmp_path / "run", plan, settings)
    node = (tmp_path / "run" / "launch-node.sh").read_text()
    assert '--machine_rank "$MACHINE_RANK"' in node and "-m core.train" in node
    slurm = (tmp_path / "run" / "slurm.sbatch").read_text()
    assert "#SBATCH --nodes=4" in slurm and "#SBATCH --gpus-per-node=8" in slurm and "$SLURM_NODEID" in slurm
    checked = subprocess.run(["sh", "-n", str(tmp_path / "run" / "slurm.sbatch")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    usage = subprocess.run(["sh", str(tmp_path / "run" / "launch-node.sh")], capture_output=True, text=True)
    assert usage.returncode == 64 and "usage:" in usage.stderr


def test_per_gpu_estimates_ddp_adds_buckets_fsdp_shards():
    from core.catalog import lookup
    from core.vram import facts_from_fields, parallel_estimates

    facts = facts_from_fields(*lookup("Llama-3.1-8B"))
    rows = parallel_estimates(facts, "lora", 2, batch_size=4, seq_len=1024, rank=16, gradient_checkpointing=True)
    single, ddp, fsdp = rows["single"], rows["ddp"], rows["fsdp"]
    assert ddp.peak_gib > single.peak_gib and ddp.breakdown["ddp_gradient_buckets"] == single.breakdown["lora_gradients"]
    assert fsdp.weights_gib == pytest.approx(single.weights_gib / 2, rel=1e-3)
    assert fsdp.peak_gib < single.peak_gib - single.weights_gib / 3
    four = parallel_estimates(facts, "lora", 4, batch_size=4, seq_len=1024)["fsdp"]
    assert four.peak_gib < fsdp.peak_gib
    assert "fsdp" not in parallel_estimates(facts, "lora-8bit", 2)


# --- real runs over two processes ---------------------------------------------------------------


def _wait_for(predicate, timeout=300):
    return wait_for(predicate, timeout)


def test_two_processes_train_cancel_resume_and_save_one_adapter(tiny_model, toy_alpaca, tmp_path):
    run_dir = tmp_path / "run"
    settings = toy_config(tiny_model("llama"), toy_alpaca, run_dir, max_steps=16, save_steps=100, batch_size=2,
                          logging_steps=1)
    settings.distributed.num_processes = 2
    config_path = tmp_path / "config.yaml"
    settings.save(config_path)
    process = subprocess.Popen([sys.executable, "-m", "core.cli", "train", str(config_path)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert _wait_for(lambda: any(e["type"] == "step" and e["step"] >= 3 for e in read_events(run_dir))), \
        (run_dir / "trainer.log").read_text()[-3000:]
    # A cancel goes to the pid in status.json (rank 0); both ranks stop at the same step.
    pid = json.loads((run_dir / "status.json").read_text())["pid"]
    os.kill(pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 130, output
    events = read_events(run_dir)
    started, cancelled = events[0], events[-1]
    assert started["world_size"] == 2 and "on 2 processes on cpu" in output
    assert cancelled["type"] == "cancelled" and cancelled["step"] < 16
    checkpoint = latest_complete_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.name == f"checkpoint-{cancelled['step']}"
    # Both ranks saved their RNG state into the checkpoint: it was a two-process save.
    assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert run_state(run_dir) == "cancelled"
    # A clean cancel is not a worker failure: no torchrun traceback in the log the wizard shows.
    assert "ChildFailedError" not in (run_dir / "trainer.log").read_text()

    # The run can be repeated by hand: accelerate.yaml and launch.sh are in the run directory.
    accelerate_yaml = yaml.safe_load((run_dir / "accelerate.yaml").read_text())
    assert accelerate_yaml["num_processes"] == 2 and accelerate_yaml["distributed_type"] == "MULTI_GPU"
    resumed = subprocess.run(["sh", str(run_dir / "launch.sh"), "--resume"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    events = read_events(run_dir)
    assert events[-1]["type"] == "done" and run_state(run_dir) == "done"
    steps = [e["step"] for e in events if e["type"] == "step"]
    # One writer (rank 0): each step once per life of the run, then the resumed steps from the checkpoint on.
    before, after = steps[:steps.index(cancelled["step"]) + 1], steps[steps.index(cancelled["step"]) + 1:]
    assert before == list(range(1, cancelled["step"] + 1))
    assert after == list(range(cancelled["step"] + 1, 17))
    # The loss went down over the run, and one adapter was saved, whole.
    losses = [e["loss"] for e in events if e["type"] == "step"]
    assert sum(losses[-4:]) < sum(losses[:4])
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not list(run_dir.glob("adapter.*"))
    chat = _cli("chat", str(run_dir), "--prompt", "Reverse the word dog.", "--max-new-tokens", "4", cwd=tmp_path)
    assert chat.returncode == 0, chat.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_machines_on_loopback_with_the_written_node_scripts(tiny_model, toy_alpaca, tmp_path):
    run_dir = tmp_path / "run"
    settings = toy_config(tiny_model("llama"), toy_alpaca, run_dir, max_steps=4, save_steps=2, batch_size=2,
                          logging_steps=1)
    config_path = tmp_path / "config.yaml"
    settings.save(config_path)
    port = _free_port()
    written = _cli("cluster", str(config_path), "--machines", "2", "--processes-per-machine", "1", "--cpu",
                   "--main-address", "127.0.0.1", "--main-port", str(port), cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert "sh " + str(run_dir / "launch-node.sh") + " 0" in written.stdout and "sbatch" in written.stdout
    machines = [subprocess.Popen(["sh", str(run_dir / "launch-node.sh"), str(rank)], cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [machine.communicate(timeout=600)[0] for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    events = read_events(run_dir)
    assert events[0]["world_size"] == 2 and events[-1]["type"] == "done"
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_cluster_needs_the_process_count_off_a_gpu_machine(tiny_model, toy_alpaca, tmp_path):
    settings = toy_config(tiny_model("llama"), toy_alpaca, tmp_path / "run")
    settings.save(tmp_path / "config.yaml")
    result = _cli("cluster", str(tmp_path / "config.yaml"), "--machines", "1", cwd=tmp_path)
    assert result.returncode == 2 and "--machines must be at least 2" in result.stderr


@pytest.mark.parametrize("age_s, final, expected", [(60, None, "running"), (7200, None, "crashed"),
                                                     (60, "done", "done")])
def test_a_run_trained_on_another_machine_is_judged_by_its_latest_event(tmp_path, age_s, final, expected):
    """On shared storage, machine 1 sees machine 0's run: the pid can't be checked, the events can."""
    from core.events import EventWriter

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "status.json").write_text(json.dumps({"pid": 1, "state": "running", "host": "machine-0-elsewhere",
                                                     "updated": time.time() - age_s}))
    events = EventWriter(run_dir)
    events.write("started", model="m", method="lora")
    if final:
        events.write(final, step=4)
    lines = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (run_dir / "events.jsonl").write_text("".join(json.dumps({**e, "time": time.time() - age_s}) + "\n" for e in lines))
    assert run_state(run_dir) == expected
