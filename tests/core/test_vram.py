"""The estimator: model facts, per-method memory, fit verdicts, fastest settings, the CLI."""

import json
import subprocess
import sys

import pytest

from core.catalog import CATALOG, lookup
from core.vram import estimate, facts_from_fields, fastest_settings, model_facts, verdict


@pytest.mark.parametrize("name, published_billions", [
    ("meta-llama/Llama-3.2-1B-Instruct", 1.24), ("meta-llama/Llama-3.2-3B", 3.21), ("meta-llama/Llama-3.1-8B", 8.03),
    ("meta-llama/Llama-3.3-70B-Instruct", 70.55), ("mistralai/Mistral-7B-Instruct-v0.3", 7.25),
    ("Qwen/Qwen2.5-0.5B-Instruct", 0.49), ("Qwen/Qwen2.5-7B-Instruct", 7.62), ("Qwen/Qwen2.5-72B", 72.7),
    ("google/gemma-2-9b-it", 9.24), ("microsoft/phi-4", 14.66), ("HuggingFaceTB/SmolLM2-135M-Instruct", 0.135),
    ("HuggingFaceTB/SmolLM2-1.7B", 1.71), ("microsoft/Phi-3-mini-4k-instruct", 3.82),
])
def test_catalog_parameter_counts_match_the_published_ones(name, published_billions):
    facts = model_facts(name)
    assert facts.total_params / 1e9 == pytest.approx(published_billions, rel=0.02)


@pytest.mark.parametrize("name", ["Llama-3.2-1B", "Qwen2.5-0.5B", "SmolLM2-360M", "Mistral-7B-v0.3"])
def test_catalog_counts_equal_the_real_architecture_on_the_meta_device(name):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(CATALOG[name])
    model_type = fields.pop("model_type")
    fields.pop("attention_bias", None)
    config = AutoConfig.for_model(model_type, **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    real = sum(p.numel() for p in model.parameters())
    assert facts_from_fields(name, CATALOG[name]).total_params == real


def test_aliases_and_unknown_names():
    assert lookup("meta-llama/Meta-Llama-3-8B-Instruct")[0] == "Llama-3.1-8B"
    assert lookup("unsloth/Qwen2.5-7B-Instruct")[0] == "Qwen2.5-7B"
    assert lookup("someone/unknown-model") is None


def test_local_folders_of_any_architecture(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    for architecture in ("llama", "qwen2", "gemma2", "phi3"):
        folder = tiny_model(architecture)
        facts = model_facts(str(folder))
        real = AutoModelForCausalLM.from_pretrained(folder)
        assert facts.total_params == sum(p.numel() for p in real.parameters()), architecture
        linear = [m for n, m in real.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
        assert sorted(facts.linear) == sorted((m.in_features, m.out_features) for m in linear)


@pytest.mark.parametrize("method", ["lora", "lora-8bit", "qlora"])
def test_weight_bytes_match_bitsandbytes_on_a_real_quantized_model(method, tmp_path, tiny_tokenizer):
    """The weights term against what bitsandbytes really stores (CPU), widths multiples of 64."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from core.tiny import build_tiny_model

    folder = build_tiny_model("llama", tiny_tokenizer, tmp_path / "m", hidden=256, intermediate=512, layers=2,
                              heads=4, kv_heads=2)
    quantization = {"lora": None, "lora-8bit": BitsAndBytesConfig(load_in_8bit=True),
                    "qlora": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)}
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, quantization_config=quantization[method],
                                                 device_map="cpu")
    from core.vram import weight_bytes

    real = model.get_memory_footprint()
    assert weight_bytes(model_facts(str(folder)), method, dtype_bytes=2) == pytest.approx(real, rel=0.03)


# Peak reserved memory measured on an H200 with this engine (tests/bench/RESULTS.md), Llama-3-8B shape,
# packed rows of 512, LoRA r=16 on all linear layers.
H200_MEASURED = [
    ("lora", 4, False, 29.8), ("lora", 8, False, 43.8), ("lora", 8, True, 18.5), ("lora", 16, True, 21.4),
    ("qlora", 4, False, 19.8), ("qlora", 8, True, 8.2), ("qlora", 16, True, 10.7), ("lora-8bit", 8, True, 22.2),
]


@pytest.mark.parametrize("method, batch, checkpointing, reserved", H200_MEASURED)
def test_estimate_within_ten_percent_of_the_h200_measurements(method, batch, checkpointing, reserved):
    from core.vram import CUDA_CONTEXT_GIB

    result = estimate(model_facts("meta-llama/Llama-3.1-8B"), method, batch, 512, 16, checkpointing)
    assert result.peak_gib - CUDA_CONTEXT_GIB == pytest.approx(reserved, rel=0.10)


@pytest.mark.parametrize("peak, capacity, expected", [(70, 80, "fits"), (72, 80, "fits"), (75, 80, "tight"),
                                                      (80, 80, "tight"), (81, 80, "no")])
def test_verdicts(peak, capacity, expected):
    assert verdict(peak, capacity) == expected


def test_precision_ordering_and_checkpointing_savings():
    facts = model_facts("Qwen/Qwen2.5-7B")
    peaks = {m: estimate(facts, m, 4, 1024).peak_gib for m in ("lora", "lora-8bit", "qlora")}
    assert peaks["qlora"] < peaks["lora"]
    assert estimate(facts, "lora", 4, 1024, gradient_checkpointing=True).peak_gib < \
        estimate(facts, "lora", 4, 1024, gradient_checkpointing=False).peak_gib


def test_fastest_settings_turn_checkpointing_off_when_memory_allows_and_on_when_not():
    facts = model_facts("meta-llama/Llama-3.1-8B")
    roomy = fastest_settings(facts, "qlora", 140, max_length=512)
    assert roomy["gradient_checkpointing"] is False and roomy["fits"] == "fits"
    tight = fastest_settings(facts, "lora", 24, max_length=512)
    assert tight["gradient_checkpointing"] is True and tight["peak_gib"] <= 24 * 0.9
    hopeless = fastest_settings(model_facts("meta-llama/Llama-3.3-70B"), "lora", 24, max_length=512)
    assert hopeless["fits"] == "no"


def test_max_length_follows_the_real_token_lengths():
    facts = model_facts("Qwen/Qwen2.5-0.5B")
    settings = fastest_settings(facts, "lora", 80, token_lengths=[100] * 98 + [300, 3000], max_length=2048)
    assert settings["max_length"] == 320  # p99 (300) rounded up to a multiple of 64


def test_cli_json_without_torch_and_quickly():
    code = ("import sys, json, io, contextlib; from core.cli import main; out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out): main(['estimate', 'meta-llama/Llama-3.1-8B', '--gpu-gib', '80', '--json'])\n"
            "print(json.dumps({'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules, 'out': out.getvalue()}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not report["torch"] and not report["transformers"]
    data = json.loads(report["out"])
    for method in ("lora", "lora-8bit", "qlora"):
        entry = data["methods"][method]
        assert entry["weights_gib"] > 0 and entry["peak_gib"] > entry["weights_gib"]
        assert set(entry["breakdown"]) >= {"weights", "activations", "logits_and_loss", "cuda_context", "allocator"}
        assert entry["fits"] in ("fits", "tight", "no")


def test_unknown_local_path_is_one_line(tmp_path):
    from core.errors import ModelError

    with pytest.raises(ModelError, match="does not exist"):
        model_facts(str(tmp_path / "nope"))
