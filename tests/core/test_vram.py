"""The estimator: model facts, per-method memory against real models and H200 measurements, fit verdicts,
fastest settings, and `lora-wizard estimate` (shape, speed, no torch)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.vram import (CUDA_CONTEXT_GIB, METHODS, adapter_bytes, estimate, examples_per_row, facts_from_fields, fastest_settings,
                       model_facts, suggested_max_length, verdict, weight_bytes)


def _real_counts(model):
    import torch

    output = model.get_output_embeddings()
    linear = sorted((m.in_features, m.out_features) for m in model.modules()
                    if isinstance(m, torch.nn.Linear) and m is not output)
    return sum(p.numel() for p in model.parameters()), linear


# --- model facts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("architecture", ["llama", "qwen2", "mistral", "qwen3", "gemma2", "phi3"])
def test_local_folders_of_every_tiny_architecture(architecture, tiny_model):
    """The analytic path (no torch) against the saved model itself: parameters and linear shapes."""
    from transformers import AutoModelForCausalLM

    folder = tiny_model(architecture)
    facts = model_facts(str(folder))
    total, linear = _real_counts(AutoModelForCausalLM.from_pretrained(folder))
    assert facts.total_params == total
    assert sorted(facts.linear) == linear


@pytest.mark.parametrize("model_type, extra", [
    ("llama", dict(attention_bias=True, mlp_bias=True)), ("qwen3", dict(head_dim=32, attention_bias=True)),
    ("olmo2", {}), ("gemma", dict(head_dim=32)), ("granite", {}), ("gemma3_text", dict(head_dim=32)),
    ("mistral", dict(head_dim=48)),
])
def test_analytic_counts_equal_the_meta_device_model(model_type, extra):
    """Every architecture the analytic path claims, with its less common options, against transformers."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=1000, **extra)
    config = AutoConfig.for_model(model_type, **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    fields.update(model_type=model_type, tie_word_embeddings=config.tie_word_embeddings)
    facts = facts_from_fields(model_type, fields)
    total, linear = _real_counts(model)
    assert (facts.total_params, sorted(facts.linear)) == (total, linear)


@pytest.mark.parametrize("model_type", ["gpt_neox", "phi", "starcoder2"])
def test_other_architectures_through_the_meta_device(model_type, tmp_path):
    """A config.json the analytic path does not know goes through transformers on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                  num_attention_heads=4, vocab_size=500)
    config.save_pretrained(tmp_path)
    facts = model_facts(str(tmp_path))
    with torch.device("meta"):
        total, linear = _real_counts(AutoModelForCausalLM.from_config(config))
    assert facts.total_params == total and sorted(facts.linear) == linear
    assert facts.hidden == 128 and facts.vocab == 500


def test_an_image_text_model_folder_counts_its_vision_tower(tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "gemma3", text_config=dict(model_type="gemma3_text", hidden_size=128, intermediate_size=256,
                                   num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=64,
                                   vocab_size=600),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14,
                           vision_use_head=False))
    config.save_pretrained(tmp_path)
    facts = model_facts(str(tmp_path))
    with torch.device("meta"):
        total, linear = _real_counts(AutoModelForCausalLM.from_config(config))
    assert facts.total_params == total and sorted(facts.linear) == linear
    assert facts.hidden == 128 and facts.vocab == 600 and facts.layers == 2


def test_model_facts_from_the_hub_config(fake_hub):
    fields = dict(model_type="qwen2", hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=True)
    fake_hub.add_model("small-org/not-in-the-catalog", {"config.json": json.dumps(fields)})
    facts = model_facts("small-org/not-in-the-catalog")
    assert facts.hidden == 256 and facts.total_params == facts_from_fields("x", fields).total_params


def test_a_gated_hub_model_without_access_names_the_page_to_request_it(fake_hub):
    from huggingface_hub import constants

    from core.errors import HubError

    token = fake_hub.add_token("alice")
    fake_hub.add_model("big-lab/gated-model", {"config.json": "{}"}, gated=True)
    with pytest.raises(HubError) as raised:
        model_facts("big-lab/gated-model", token=token)
    message = str(raised.value)
    assert f"{constants.ENDPOINT}/big-lab/gated-model" in message and "\n" not in message
    assert token not in message


def test_offline_the_cached_config_answers_and_a_missing_one_is_one_line(fake_hub, monkeypatch):
    from huggingface_hub import constants, hf_hub_download

    from core.errors import HubError

    fields = dict(model_type="llama", hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=2, vocab_size=500)
    fake_hub.add_model("small-org/cached", {"config.json": json.dumps(fields)})
    hf_hub_download("small-org/cached", "config.json")  # as a training run would have
    fake_hub.stop()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert model_facts("small-org/cached").total_params == facts_from_fields("x", fields).total_params
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set and small-org/never-seen's config is not in the cache"):
        model_facts("small-org/never-seen")


def test_unknown_models_are_one_line(fake_hub, tmp_path):
    from core.errors import HubError, ModelError

    with pytest.raises(HubError, match="No model 'nobody/nothing'"):
        model_facts("nobody/nothing")
    with pytest.raises(ModelError, match="does not exist"):
        model_facts(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        model_facts(str(tmp_path / "empty"))


# --- weights against real bitsandbytes models ---------------------------------------------------------

@pytest.mark.parametrize("hidden, intermediate", [(128, 256), (256, 512)])
@pytest.mark.parametrize("method", METHODS)
def test_weight_bytes_match_bitsandbytes_on_a_real_quantized_model(method, hidden, intermediate, tmp_path,
                                                                     tiny_tokenizer):
    """The weights term against what bitsandbytes really stores (CPU): parameters + buffers of the loaded model."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from core.tiny import build_tiny_model

    folder = build_tiny_model("llama", tiny_tokenizer, tmp_path / "m", hidden=hidden, intermediate=intermediate,
                              layers=2, heads=2, kv_heads=1)
    quantization = {"lora": None, "lora-8bit": BitsAndBytesConfig(load_in_8bit=True),
                    "qlora": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)}
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, quantization_config=quantization[method],
                                                 device_map="cpu")
    real = model.get_memory_footprint() + _quantization_state_bytes(model)
    predicted = weight_bytes(model_facts(str(folder)), method, dtype_bytes=2)
    assert predicted == pytest.approx(real, rel=0.002), (predicted, real)


def _quantization_state_bytes(model) -> int:
    """What bitsandbytes keeps beside the parameters, which get_memory_footprint (parameters + buffers) misses:
    LLM.int8's fp32 row scales (SCB), NF4's absmax, nested absmax, code tables and offset."""
    import torch

    tensors = []
    for parameter in model.parameters():
        if isinstance(getattr(parameter, "SCB", None), torch.Tensor):
            tensors.append(parameter.SCB)
        state = getattr(parameter, "quant_state", None)
        while state is not None:
            tensors += [t for t in (state.absmax, state.code, getattr(state, "offset", None)) if t is not None]
            state = getattr(state, "state2", None)
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_adapter_bytes_match_what_the_engine_trains(method, tiny_model, toy_alpaca, tmp_path):
    """LoRA weights: fp32 on a 16-bit base (peft), bf16 on a quantized one (TRL casts them): the saved adapter."""
    from safetensors import safe_open

    from core.train import run_training
    from tests.helpers import toy_config

    folder = tiny_model("llama")
    config = toy_config(folder, toy_alpaca, tmp_path / "run", method=method, max_steps=1, save_steps=100)
    assert run_training(config, tmp_path / "run")["type"] == "done"
    saved = 0
    with safe_open(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"), "pt") as tensors:
        for key in tensors.keys():
            tensor = tensors.get_tensor(key)
            saved += tensor.numel() * tensor.element_size()
    predicted = adapter_bytes(model_facts(str(folder)), method, rank=config.lora.r)
    assert predicted["lora_weights"] == saved
    assert predicted["optimizer_states"] == 2 * saved  # AdamW: two moments in the adapter's dtype


# --- peak memory against the H200 ---------------------------------------------------------------------

# Peak reserved memory measured on an H200 with this engine (tests/bench/RESULTS.md), Llama-3-8B shape,
# packed rows of 512, LoRA r=16 on all linear layers, Liger on.
H200_MEASURED = [
    ("lora", 4, False, 29.8), ("lora", 8, False, 43.8), ("lora", 8, True, 18.5), ("lora", 16, True, 21.4),
    ("qlora", 4, False, 19.8), ("qlora", 8, True, 8.2), ("qlora", 16, True, 10.7), ("lora-8bit", 8, True, 22.2),
]


@pytest.mark.parametrize("method, batch, checkpointing, reserved", H200_MEASURED)
def test_estimate_within_ten_percent_of_the_h200_measurements(method, batch, checkpointing, reserved):
    result = estimate(model_facts("meta-llama/Llama-3.1-8B"), method, batch, 512, 16, checkpointing, liger=True)
    assert result.peak_gib - CUDA_CONTEXT_GIB == pytest.approx(reserved, rel=0.10)


# Issue 3's matrix, measured with `python3 tests/bench/bench_vram.py` on an H200 (2026-11-29; RESULTS.md):
# peak reserved GiB the trainer reported, per shape, method, micro-batch, row length and checkpointing. The
# Qwen2.5-7B 8 x 512 rows are from the re-run with expandable segments (the engine's default since); the
# rest from the run before it, where only Qwen's 8 x 512 rows fragmented (reserved 5-14 GiB above allocated).
H200_MATRIX = [
    ("llama-3.2-1b", "lora", 8, 512, False, 10.16),
    ("llama-3.2-1b", "lora", 8, 512, True, 3.64),
    ("llama-3.2-1b", "lora", 2, 2048, False, 10.41),
    ("llama-3.2-1b", "lora", 2, 2048, True, 3.90),
    ("llama-3.2-1b", "lora-8bit", 8, 512, False, 10.79),
    ("llama-3.2-1b", "lora-8bit", 8, 512, True, 4.49),
    ("llama-3.2-1b", "lora-8bit", 2, 2048, False, 11.06),
    ("llama-3.2-1b", "lora-8bit", 2, 2048, True, 4.75),
    ("llama-3.2-1b", "qlora", 8, 512, False, 8.67),
    ("llama-3.2-1b", "qlora", 8, 512, True, 2.10),
    ("llama-3.2-1b", "qlora", 2, 2048, False, 8.82),
    ("llama-3.2-1b", "qlora", 2, 2048, True, 2.25),
    ("llama-3-8b", "lora", 8, 512, False, 43.83),
    ("llama-3-8b", "lora", 8, 512, True, 18.53),
    ("llama-3-8b", "lora", 2, 2048, False, 43.97),
    ("llama-3-8b", "lora", 2, 2048, True, 18.56),
    ("llama-3-8b", "lora-8bit", 8, 512, False, 45.77),
    ("llama-3-8b", "lora-8bit", 8, 512, True, 22.23),
    ("llama-3-8b", "lora-8bit", 2, 2048, False, 45.77),
    ("llama-3-8b", "lora-8bit", 2, 2048, True, 22.17),
    ("llama-3-8b", "qlora", 8, 512, False, 33.55),
    ("llama-3-8b", "qlora", 8, 512, True, 8.07),
    ("llama-3-8b", "qlora", 2, 2048, False, 33.80),
    ("llama-3-8b", "qlora", 2, 2048, True, 8.22),
    ("qwen2.5-7b", "lora", 2, 2048, False, 44.81),
    ("qwen2.5-7b", "lora", 2, 2048, True, 20.75),
    ("qwen2.5-7b", "lora-8bit", 8, 512, False, 51.32),
    ("qwen2.5-7b", "lora-8bit", 8, 512, True, 23.90),
    ("qwen2.5-7b", "lora-8bit", 2, 2048, False, 43.28),
    ("qwen2.5-7b", "lora-8bit", 2, 2048, True, 20.54),
    ("qwen2.5-7b", "qlora", 2, 2048, False, 35.27),
    ("qwen2.5-7b", "qlora", 2, 2048, True, 11.07),
    ("qwen2.5-7b", "lora", 8, 512, False, 43.37),
    ("qwen2.5-7b", "lora", 8, 512, True, 19.53),
    ("qwen2.5-7b", "qlora", 8, 512, False, 34.55),
    ("qwen2.5-7b", "qlora", 8, 512, True, 10.29),
]
# Outside +-10%, with why (RESULTS.md). Strict: an estimator that gets them right must drop them from here.
H200_OUTSIDE = {
    ("llama-3.2-1b", "lora", 8, 512, True): "1B overestimated by ~0.5 GiB: fixed terms fitted on the 8B shape",
    ("llama-3.2-1b", "qlora", 8, 512, False): "1B overestimated by ~1 GiB: fixed terms fitted on the 8B shape",
    ("llama-3.2-1b", "qlora", 8, 512, True): "1B overestimated by ~0.7 GiB: fixed terms fitted on the 8B shape",
    ("llama-3.2-1b", "qlora", 2, 2048, True): "1B overestimated by ~0.5 GiB: fixed terms fitted on the 8B shape",
    ("qwen2.5-7b", "lora", 2, 2048, True): "Qwen2.5 with checkpointing allocates ~2 GiB the Llama-fitted terms miss",
    ("qwen2.5-7b", "qlora", 2, 2048, True): "Qwen2.5 with checkpointing allocates ~2 GiB the Llama-fitted terms miss",
    ("qwen2.5-7b", "qlora", 8, 512, True): "Qwen2.5 with checkpointing allocates ~2 GiB the Llama-fitted terms miss",
    ("qwen2.5-7b", "lora-8bit", 8, 512, True): "measured before expandable segments: reserved 4.5 GiB above allocated",
}


def _matrix_cases():
    for shape, method, batch, length, checkpointing, reserved in H200_MATRIX:
        why = H200_OUTSIDE.get((shape, method, batch, length, checkpointing))
        marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
        yield pytest.param(shape, method, batch, length, checkpointing, reserved, marks=marks,
                           id=f"{shape}-{method}-{batch}x{length}-gc{'on' if checkpointing else 'off'}")


@pytest.mark.parametrize("shape, method, batch, length, checkpointing, reserved", _matrix_cases())
def test_estimate_within_ten_percent_over_the_h200_matrix(shape, method, batch, length, checkpointing, reserved):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from shapes import SHAPES

    facts = facts_from_fields(shape, SHAPES[shape])
    result = estimate(facts, method, batch, length, 16, checkpointing, liger=True)
    assert result.peak_gib == pytest.approx(reserved + CUDA_CONTEXT_GIB, rel=0.10)


def test_without_liger_against_the_plain_recipe_measured_on_the_h200():
    """Not fitted: the usual Trainer + PEFT recipe (no Liger, 8 x 512 padded tokens, checkpointing, bf16 LoRA)
    peaked at 24.8 GiB reserved; its activations and materialised logits are what the no-Liger and
    `fused_loss=False` terms describe."""
    result = estimate(model_facts("meta-llama/Llama-3.1-8B"), "lora", 8, 512, 16, True, liger=False, fused_loss=False)
    assert result.peak_gib - CUDA_CONTEXT_GIB == pytest.approx(24.8, rel=0.10)


# --- the parts of the estimate ------------------------------------------------------------------------

def test_breakdown_adds_up_and_orders_methods_sensibly():
    facts = model_facts("Qwen/Qwen2.5-7B")
    results = {m: estimate(facts, m, 4, 1024, liger=True) for m in METHODS}
    for result in results.values():
        assert sum(result.breakdown.values()) == pytest.approx(result.peak_gib, abs=0.02)
        assert result.breakdown["cuda_context"] == CUDA_CONTEXT_GIB
    assert results["qlora"].weights_gib < results["lora-8bit"].weights_gib < results["lora"].weights_gib
    assert results["qlora"].peak_gib < results["lora"].peak_gib
    assert results["qlora"].breakdown["dequantization_buffers"] > 0 == results["lora"].breakdown["dequantization_buffers"]
    # Adapters: fp32 weight + gradient + two AdamW moments on a 16-bit base, all bf16 on a quantized one.
    lora, qlora = results["lora"].breakdown, results["qlora"].breakdown
    assert lora["optimizer_states"] == pytest.approx(2 * lora["lora_weights"], abs=0.002)
    assert qlora["lora_weights"] == pytest.approx(lora["lora_weights"] / 2, abs=0.002)


def test_checkpointing_liger_and_tokens_move_the_estimate_the_right_way():
    facts = model_facts("meta-llama/Llama-3.1-8B")
    base = estimate(facts, "lora", 4, 1024, gradient_checkpointing=False, liger=True)
    assert estimate(facts, "lora", 4, 1024, gradient_checkpointing=True, liger=True).peak_gib < base.peak_gib
    without_liger = estimate(facts, "lora", 4, 1024, gradient_checkpointing=False, liger=False)
    # Liger changes the layers' activations only: TRL's fused LM head never materialises the logits either way.
    assert without_liger.breakdown["logits_and_loss"] == base.breakdown["logits_and_loss"]
    assert without_liger.breakdown["activations"] > base.breakdown["activations"]
    # A trainer that materialises them (the usual recipe): 2 + 4 + 4 bytes per vocabulary entry and token.
    materialised = estimate(facts, "lora", 4, 1024, gradient_checkpointing=False, liger=False, fused_loss=False)
    assert materialised.breakdown["logits_and_loss"] == pytest.approx(4 * 1024 * 128256 * 10 / 1024**3, rel=0.01)
    double = estimate(facts, "lora", 8, 1024, gradient_checkpointing=False, liger=True)
    assert double.breakdown["activations"] == pytest.approx(2 * base.breakdown["activations"], rel=0.001)
    assert double.weights_gib == base.weights_gib


def test_lora_dropout_zero_drops_masks_and_on_a_quantized_base_the_input_copies():
    facts = model_facts("meta-llama/Llama-3.1-8B")
    h, q, i = 4096, 4096, 14336
    tokens, layers = 8 * 512, 32
    for method, per_token_and_layer in (("lora", 5 * h + q + i), ("qlora", 5 * h + q + i + 2 * 3 * h)):
        with_dropout = estimate(facts, method, 8, 512, gradient_checkpointing=False, liger=True)
        without = estimate(facts, method, 8, 512, gradient_checkpointing=False, liger=True, lora_dropout=0.0)
        saved = (with_dropout.breakdown["activations"] - without.breakdown["activations"]) * 1024**3
        assert saved == pytest.approx(tokens * layers * per_token_and_layer, rel=0.001), method


def test_cpu_estimates_are_fp32_without_a_cuda_context():
    facts = model_facts("HuggingFaceTB/SmolLM2-135M")
    cpu, gpu = estimate(facts, "lora", 2, 512, device="cpu"), estimate(facts, "lora", 2, 512, liger=False)
    assert cpu.breakdown["cuda_context"] == 0 and cpu.breakdown["allocator"] == 0 and not cpu.liger
    assert cpu.weights_gib == pytest.approx(2 * gpu.weights_gib, rel=0.01)


@pytest.mark.parametrize("peak, capacity, expected", [(70, 80, "fits"), (72, 80, "fits"), (72.1, 80, "tight"),
                                                      (80, 80, "tight"), (80.1, 80, "no")])
def test_verdicts(peak, capacity, expected):
    assert verdict(peak, capacity) == expected


def test_estimate_against_a_capacity_sets_the_verdict():
    facts = model_facts("meta-llama/Llama-3.1-8B")
    assert estimate(facts, "qlora", 4, 512, capacity_gib=80, liger=True).fits == "fits"
    assert estimate(facts, "lora", 4, 512, capacity_gib=16, liger=True).fits == "no"
    assert estimate(facts, "lora", 4, 512, liger=True).fits == "unknown"


# --- fastest settings ---------------------------------------------------------------------------------

def test_fastest_settings_turn_checkpointing_off_when_memory_allows_and_on_when_not():
    facts = model_facts("meta-llama/Llama-3.1-8B")
    roomy = fastest_settings(facts, "qlora", 140, max_length=512, liger=True)
    assert roomy["gradient_checkpointing"] is False and roomy["fits"] == "fits"
    tight = fastest_settings(facts, "lora", 24, max_length=512, liger=True)
    assert tight["gradient_checkpointing"] is True and tight["peak_gib"] <= 24 * 0.9
    hopeless = fastest_settings(model_facts("meta-llama/Llama-3.3-70B"), "lora", 24, max_length=512, liger=True)
    assert hopeless["fits"] == "no" and "does not fit" in hopeless["note"]


def test_fastest_settings_keep_the_effective_batch_near_the_target():
    facts = model_facts("Qwen/Qwen2.5-0.5B")
    lengths = [200] * 100  # 5 examples a packed row of 1024
    settings = fastest_settings(facts, "lora", 80, token_lengths=lengths, max_length=1024, target_examples=16,
                                liger=True)
    assert settings["max_length"] == 256  # p99 of the lengths, rounded up to 64
    assert settings["examples_per_step"] == pytest.approx(16, rel=0.35)
    assert settings["batch_size"] * settings["grad_accum"] * examples_per_row(lengths, 256, True) == \
        pytest.approx(settings["examples_per_step"], rel=0.01)
    unpacked = fastest_settings(facts, "lora", 80, token_lengths=lengths, max_length=1024, packing=False, liger=True)
    assert unpacked["batch_size"] * unpacked["grad_accum"] == 16


def test_a_smaller_card_gets_a_smaller_micro_batch_then_checkpointing():
    facts = model_facts("meta-llama/Llama-3.1-8B")
    chosen = [fastest_settings(facts, "qlora", gib, token_lengths=[1000] * 50, max_length=1024, liger=True)
              for gib in (80, 24, 12)]
    assert [c["fits"] for c in chosen] == ["fits"] * 3
    assert chosen[0]["gradient_checkpointing"] is False and chosen[-1]["gradient_checkpointing"] is True
    assert all(c["peak_gib"] <= 0.9 * gib for c, gib in zip(chosen, (80, 24, 12)))
    assert chosen[0]["batch_size"] >= chosen[-1]["batch_size"]


@pytest.mark.parametrize("lengths, configured, positions, expected", [
    ([100] * 98 + [300, 3000], 2048, 4096, 320),  # p99 = 300 -> 320
    ([5000] * 10, 8192, 4096, 4096),  # capped by the model's positions
    ([5000] * 10, 1024, 4096, 1024),  # and by the configured max_length
    ([10] * 10, 1024, 4096, 64),
    (None, 1024, 4096, 1024),
])
def test_max_length_follows_the_real_token_lengths(lengths, configured, positions, expected):
    assert suggested_max_length(lengths, configured, positions) == expected


def test_on_the_cpu_a_small_batch_without_checkpointing():
    settings = fastest_settings(model_facts("HuggingFaceTB/SmolLM2-135M"), "lora", None, max_length=512)
    assert settings["batch_size"] <= 2 and settings["gradient_checkpointing"] is False
    assert settings["grad_accum"] >= 4 and settings["fits"] in ("fits", "tight")


# --- lora-wizard estimate -----------------------------------------------------------------------------

def _cli(*argv: str) -> tuple[dict, float]:
    code = ("import sys, json, io, contextlib, time; start = time.perf_counter(); from core.cli import main\n"
            "out = io.StringIO()\n"
            f"with contextlib.redirect_stdout(out): code = main({list(argv)!r})\n"
            "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, 'transformers': 'transformers' in "
            "sys.modules, 'out': out.getvalue()}))")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1]), time.perf_counter() - start


def test_cli_json_for_a_catalog_model_without_torch_and_quickly():
    report, seconds = _cli("estimate", "meta-llama/Llama-3.1-8B-Instruct", "--gpu-gib", "80", "--json")
    assert report["code"] == 0 and not report["torch"] and not report["transformers"]
    assert seconds < 2.0, f"took {seconds:.2f}s"
    data = json.loads(report["out"])
    assert data["model"] == "Llama-3.1-8B" and data["parameters"] == 8030261248 and data["capacity_gib"] == 80
    for method in METHODS:
        entry = data["methods"][method]
        assert entry["weights_gib"] > 0 and entry["peak_gib"] > entry["weights_gib"]
        assert set(entry["breakdown"]) >= {"weights", "lora_weights", "lora_gradients", "optimizer_states",
                                           "activations", "logits_and_loss", "cuda_context", "allocator"}
        assert entry["fits"] in ("fits", "tight", "no")
        assert {e["gradient_checkpointing"] for e in entry["estimates"]} == {True, False}
        assert set(entry["fastest_settings"]) >= {"batch_size", "grad_accum", "gradient_checkpointing", "max_length"}
    assert data["methods"]["qlora"]["fits"] == "fits"


def test_cli_one_method_and_fixed_checkpointing():
    report, _ = _cli("estimate", "Qwen/Qwen2.5-72B-Instruct", "--method", "qlora", "--gradient-checkpointing", "on",
                     "--gpu-gib", "24", "--batch-size", "1", "--seq-len", "512", "--json")
    data = json.loads(report["out"])
    assert list(data["methods"]) == ["qlora"]
    entry = data["methods"]["qlora"]
    assert entry["gradient_checkpointing"] is True and entry["fits"] == "no"  # 72B in 4 bits is ~40 GiB
    assert entry["fastest_settings"]["fits"] == "no"


def test_cli_table_for_people():
    report, _ = _cli("estimate", "google/gemma-2-9b-it", "--gpu-gib", "48")
    lines = report["out"].splitlines()
    assert lines[0].startswith("gemma-2-9b: 9.24B parameters")
    rows = [line for line in lines if line.split() and line.split()[0] in METHODS]
    assert len(rows) == 6 and all(line.split()[-1] in ("fits", "tight", "no") for line in rows)
    assert len({line.rindex("G ") for line in rows}) == 1  # aligned columns
    assert sum(line.startswith("fastest for") for line in lines) == 3
