"""On a CUDA GPU: every method trains, saves, chats and merges through the project's own commands,
on a Llama-3.2-1B-shaped model with random bf16 weights. Skipped (with the reason) without a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")]

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "bench"))


@pytest.fixture(scope="module")
def shaped_model():
    from shapes import build_shaped_model

    return build_shaped_model("llama-3.2-1b", Path(os.environ.get("SHAPES_DIR", "/tmp/shapes")) / "llama-3.2-1b")


@pytest.fixture(scope="module")
def shaped_data(tmp_path_factory):
    from shapes import synthetic_rows, write_rows

    # A learnable task (a fixed answer) so a few steps show the loss falling even from random weights.
    rows = [dict(row, output=" ".join(f"w{i}" for i in range(10, 30))) for row in synthetic_rows(400, 128256, seed=3)]
    return write_rows(rows, tmp_path_factory.mktemp("data") / "rows.jsonl")


def _cli(*args, cwd, env=None):
    result = subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=900, env=env)
    print(f"$ lora-wizard {' '.join(args)}\n{result.stdout}{result.stderr[-2000:]}")
    return result


@pytest.mark.parametrize("method", ["lora", "lora-8bit", "qlora"])
def test_method_on_cuda_trains_chats_and_merges(method, shaped_model, shaped_data, tmp_path):
    import yaml

    config = {"model": str(shaped_model), "method": method,
              "data": {"path": str(shaped_data), "max_length": 512, "eval_fraction": 0.05},
              "train": {"max_steps": 12, "batch_size": 4, "grad_accum": 1, "save_steps": 6, "eval_steps": 6,
                        "lr": 1e-3},
              "output_dir": str(tmp_path / "run")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    train = _cli("train", "config.yaml", cwd=tmp_path)
    assert train.returncode == 0
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["type"] == "step"]
    assert len(steps) == 12 and all(e["gpu_memory"] and e["gpu_memory"][0]["max_reserved_gib"] > 0 for e in steps)
    started = next(e for e in events if e["type"] == "started")
    assert started["device"] == "cuda" and started["dtype"] == "bfloat16"
    assert steps[-1]["loss"] < steps[0]["loss"] - 1.0
    done = events[-1]
    assert done["type"] == "done" and done["kernels"]["attention"] == "varlen"

    chat = _cli("chat", "run", "--prompt", "w1 w2 w3", "--compare", "--max-new-tokens", "8", cwd=tmp_path)
    assert chat.returncode == 0 and "tuned: " in chat.stdout

    merge = _cli("export", "run", "--merge", "merged", cwd=tmp_path)
    if method == "lora-8bit" and merge.returncode != 0:
        pytest.xfail("LLM.int8's GPU matmul quantizes activations; a merged 16-bit model computes without that noise "
                     "(measured 1/3 greedy matches on an H200)")
    # Greedy answers of a random-weight model sit on near-ties that bf16 rounding of W + BA can flip; the
    # export then compares teacher-forced logits and tells rounding from a broken merge.
    assert merge.returncode == 0, "merged answers must match adapter-on-base"
    assert "3/3 prompts give the same greedy answer" in merge.stdout or "the merge is sound" in merge.stdout


def test_cuda_out_of_memory_fails_with_the_estimators_advice_and_the_advice_fits(shaped_model, shaped_data, tmp_path):
    """A 12 GiB GPU, emulated with torch's per-process memory fraction (a sitecustomize in the trainer's
    environment): micro-batch 32 x 512 without checkpointing needs ~35 GiB on the 1B shape. The run fails
    with one line and the estimator's settings for 12 GiB; applied (as the wizard's "Apply advice and
    restart" does), the same GPU trains."""
    import yaml

    total = torch.cuda.get_device_properties(0).total_memory
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os\nif os.environ.get('CAP_GPU_FRACTION'):\n    import torch\n"
        "    torch.cuda.set_per_process_memory_fraction(float(os.environ['CAP_GPU_FRACTION']))\n")
    env = {**os.environ, "CAP_GPU_FRACTION": str(12 * 1024**3 / total),
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    config = {"model": str(shaped_model), "method": "lora",
              "data": {"path": str(shaped_data), "max_length": 512, "eval_fraction": 0.0},
              "train": {"max_steps": 3, "batch_size": 32, "grad_accum": 1, "gradient_checkpointing": False,
                        "save_steps": 100, "lr": 1e-3},
              "output_dir": str(tmp_path / "run")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    train = _cli("train", "config.yaml", cwd=tmp_path, env=env)
    assert train.returncode != 0
    assert "Traceback" not in train.stdout + train.stderr
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    failed = events[-1]
    assert failed["type"] == "failed" and failed["reason"].startswith("out of GPU memory; use micro-batch")
    assert "of the 12.0 GiB this GPU gave the run" in failed["reason"]
    overrides = failed["suggested_overrides"]
    assert overrides["train.batch_size"] < 32 or overrides["train.gradient_checkpointing"]

    for dotted, value in overrides.items():
        section, key = dotted.split(".") if "." in dotted else (None, dotted)
        (config[section] if section else config)[key] = value
    config["output_dir"] = str(tmp_path / "run-2")
    (tmp_path / "config-2.yaml").write_text(yaml.safe_dump(config))
    retry = _cli("train", "config-2.yaml", cwd=tmp_path, env=env)
    assert retry.returncode == 0, "the estimator's advice fits the 12 GiB GPU"
    steps = [json.loads(line) for line in (tmp_path / "run-2" / "events.jsonl").read_text().splitlines()
             if '"step"' in line and json.loads(line)["type"] == "step"]
    assert max(e["gpu_memory"][0]["max_reserved_gib"] for e in steps) <= 12.0


def test_varlen_attention_on_a_packed_row_matches_sdpa_per_example(shaped_model):
    """The packed row attends only within each example, causally: the logits of running each example alone."""
    from transformers import AutoModelForCausalLM

    from core import attention

    assert attention.register() == "varlen"
    torch.manual_seed(0)
    lengths = [37, 128, 5, 300]
    ids = [torch.randint(10, 128000, (n,), device="cuda") for n in lengths]
    model = AutoModelForCausalLM.from_pretrained(shaped_model, dtype=torch.bfloat16, device_map={"": 0},
                                                 attn_implementation="sdpa").eval()
    packed = torch.cat(ids)[None]
    positions = torch.cat([torch.arange(n, device="cuda") for n in lengths])[None]
    with torch.no_grad():
        expected = torch.cat([model(input_ids=x[None]).logits[0] for x in ids]).float()
        packed_sdpa = model(input_ids=packed, position_ids=positions).logits[0].float()
        model.set_attn_implementation("varlen")
        got = model(input_ids=packed, position_ids=positions).logits[0].float()

    def compare(a, b):
        relative = ((a - b).norm() / b.norm()).item()
        agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
        return relative, agree

    print("varlen vs per-example: relative error %.5f, argmax agreement %.4f" % compare(got, expected))
    print("sdpa packed vs per-example: relative error %.5f, argmax agreement %.4f" % compare(packed_sdpa, expected))
    relative, agree = compare(got, expected)
    reference_relative, _ = compare(packed_sdpa, expected)
    # Measured on an H200 (bf16, random weights): varlen 2.1% / 94.3%; packed SDPA (leaking) 129% / 7%.
    assert relative < 0.05 and agree > 0.9
    assert reference_relative > 10 * relative or reference_relative < 0.05
