"""GPU detection: what NVML reports, CUDA_VISIBLE_DEVICES, and machines without a GPU or without NVML."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from core.hardware import GpuInfo, describe, detect_gpus, system_memory_gib, visible_indices

UUIDS = ["GPU-1a2b3c4d-0000-0000-0000-000000000000", "GPU-5e6f7a8b-0000-0000-0000-000000000000",
         "GPU-9c0d1e2f-0000-0000-0000-000000000000"]
HAS_NVIDIA = os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


@pytest.mark.parametrize("value, expected", [
    (None, [0, 1, 2]), ("", []), ("1", [1]), ("2,0", [2, 0]), ("0, 1", [0, 1]),
    ("1,7,0", [1]),  # CUDA stops at the first entry naming no GPU
    ("-1", []), ("GPU-5e6f", [1]), ("GPU-9c0d1e2f-0000-0000-0000-000000000000,0", [2, 0]),
    ("GPU-", []),  # a prefix of several UUIDs names none
    ("1,1", [1]),
])
def test_cuda_visible_devices(value, expected):
    assert visible_indices(value, UUIDS) == expected


@pytest.mark.parametrize("capability, bf16", [((7, 5), False), ((8, 0), True), ((8, 6), True), ((9, 0), True),
                                              ((6, 1), False)])
def test_bf16_from_the_compute_capability(capability, bf16):
    gpu = GpuInfo(0, "card", 80.0, 79.0, capability)
    assert gpu.bf16 is bf16 and gpu.to_dict()["bf16"] is bf16
    assert json.loads(json.dumps(gpu.to_dict()))["compute_capability"] == list(capability)


def _detect_in_a_fresh_process(prelude: str = "") -> dict:
    code = (f"{prelude}\nimport sys, json\nfrom core.hardware import detect_gpus\ngpus = detect_gpus()\n"
            "print(json.dumps({'gpus': [g.to_dict() for g in gpus], 'torch': 'torch' in sys.modules}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(HAS_NVIDIA, reason="this machine has an NVIDIA driver")
def test_a_machine_without_a_gpu_says_so_plainly():
    report = _detect_in_a_fresh_process()
    assert report == {"gpus": [], "torch": False}
    total, available = system_memory_gib()
    assert 0 < available <= total
    assert describe([]).startswith("no NVIDIA GPU found: training runs on the CPU")


def test_no_nvml_library_is_no_crash():
    """nvidia-ml-py missing (a bare install): detection falls back to torch only if it is loaded anyway."""
    report = _detect_in_a_fresh_process("import sys; sys.modules['pynvml'] = None")
    assert report["torch"] is False
    if not HAS_NVIDIA:
        assert report["gpus"] == []


def test_the_description_groups_cards_by_model():
    gpus = [GpuInfo(0, "NVIDIA H200", 139.8, 120.2, (9, 0)), GpuInfo(1, "NVIDIA H200", 139.8, 139.1, (9, 0))]
    assert describe(gpus) == "2 x NVIDIA H200 (140 GiB, 120 GiB free)"


@pytest.mark.skipif(not HAS_NVIDIA, reason="needs an NVIDIA GPU (run on the H200 machine)")
def test_nvml_agrees_with_torch_on_a_gpu_machine():
    import torch

    gpus = detect_gpus()
    assert len(gpus) == torch.cuda.device_count() > 0
    for gpu in gpus:
        free, total = torch.cuda.mem_get_info(gpu.index)
        assert gpu.total_gib == pytest.approx(total / 1024**3, abs=0.05)
        assert gpu.free_gib == pytest.approx(free / 1024**3, abs=2.0)  # other processes come and go
        assert gpu.compute_capability == torch.cuda.get_device_capability(gpu.index)
        assert gpu.name == torch.cuda.get_device_name(gpu.index)
    only_last = _detect_in_a_fresh_process(f"import os; os.environ['CUDA_VISIBLE_DEVICES'] = '{len(gpus) - 1}'")
    assert [g["name"] for g in only_last["gpus"]] == [gpus[-1].name] and only_last["gpus"][0]["index"] == 0
