"""The offline catalog: every entry is the real architecture, and Hub ids find their entry."""

import subprocess
import sys

import pytest

from core.catalog import CATALOG, describe_catalog, lookup
from core.vram import facts_from_fields, model_facts


def _meta_model(fields: dict):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(fields)
    model_type = fields.pop("model_type")
    fields.pop("fused_qkv", None)
    vision = fields.pop("vision_config", None)
    if vision:  # an image-text model: what AutoModelForCausalLM loads for the Hub id
        config = AutoConfig.for_model("gemma3", text_config=dict(fields, model_type=model_type),
                                      vision_config=dict(vision, model_type="siglip_vision_model"))
    else:
        config = AutoConfig.for_model(model_type, **fields)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_entry_counts_exactly_what_transformers_builds(name):
    import torch

    model = _meta_model(CATALOG[name])
    output = model.get_output_embeddings()
    facts = facts_from_fields(name, CATALOG[name])
    assert facts.total_params == sum(p.numel() for p in model.parameters())
    assert sorted(facts.linear) == sorted((m.in_features, m.out_features) for m in model.modules()
                                          if isinstance(m, torch.nn.Linear) and m is not output)
    assert facts.tied == (output.weight is model.get_input_embeddings().weight)


# Parameter counts the model cards publish (Hub "Model size" / papers), in billions.
@pytest.mark.parametrize("name, published_billions", [
    ("meta-llama/Llama-3.2-1B-Instruct", 1.24), ("meta-llama/Llama-3.2-3B", 3.21), ("meta-llama/Llama-3.1-8B", 8.03),
    ("meta-llama/Llama-3.3-70B-Instruct", 70.6), ("mistralai/Mistral-7B-Instruct-v0.3", 7.25),
    ("mistralai/Mistral-7B-v0.1", 7.24), ("Qwen/Qwen2.5-0.5B-Instruct", 0.494), ("Qwen/Qwen2.5-1.5B", 1.54),
    ("Qwen/Qwen2.5-3B", 3.09), ("Qwen/Qwen2.5-7B-Instruct", 7.62), ("Qwen/Qwen2.5-14B", 14.8),
    ("Qwen/Qwen2.5-32B", 32.8), ("Qwen/Qwen2.5-72B", 72.7), ("google/gemma-2-2b-it", 2.61),
    ("google/gemma-2-9b-it", 9.24), ("google/gemma-2-27b", 27.2), ("google/gemma-3-1b-it", 1.0),
    ("google/gemma-3-4b-it", 4.3), ("google/gemma-3-12b-it", 12.2), ("google/gemma-3-27b-it", 27.4),
    ("microsoft/Phi-3-mini-4k-instruct", 3.82), ("microsoft/Phi-3-medium-4k-instruct", 14.0),
    ("microsoft/phi-4", 14.7), ("HuggingFaceTB/SmolLM2-135M-Instruct", 0.135), ("HuggingFaceTB/SmolLM2-360M", 0.362),
    ("HuggingFaceTB/SmolLM2-1.7B", 1.71),
])
def test_counts_match_the_published_ones(name, published_billions):
    assert model_facts(name).total_params / 1e9 == pytest.approx(published_billions, rel=0.01)


@pytest.mark.parametrize("query, entry", [
    ("meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B"), ("meta-llama/Meta-Llama-3-8B-Instruct", "Llama-3.1-8B"),
    ("meta-llama/Meta-Llama-3.1-8B", "Llama-3.1-8B"), ("unsloth/Llama-3.2-1B-Instruct", "Llama-3.2-1B"),
    ("meta-llama/Llama-3.3-70B-Instruct", "Llama-3.1-70B"), ("Qwen/Qwen2.5-7B-Instruct", "Qwen2.5-7B"),
    ("mistralai/Mistral-7B-Instruct-v0.2", "Mistral-7B-v0.1"), ("mistralai/Mistral-7B-Instruct-v0.3", "Mistral-7B-v0.3"),
    ("google/gemma-3-4b-pt", "gemma-3-4b"), ("google/gemma-2-9b-it", "gemma-2-9b"),
    ("microsoft/Phi-3.5-mini-instruct", "Phi-3-mini-128k"), ("microsoft/Phi-3-mini-4k-instruct", "Phi-3-mini-4k"),
    ("HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2-360M"), ("qwen2.5-0.5b", "Qwen2.5-0.5B"),
])
def test_hub_ids_find_their_entry(query, entry):
    assert lookup(query)[0] == entry


@pytest.mark.parametrize("query", ["someone/unknown-model", "Qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-bnb-4bit", ""])
def test_other_names_are_not_guessed(query):
    assert lookup(query) is None


def test_facts_of_a_catalog_model_need_neither_torch_nor_transformers():
    code = ("import sys; from core.vram import model_facts; model_facts('meta-llama/Llama-3.1-70B-Instruct'); "
            "print(sorted(m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_model_limits_are_the_published_ones():
    assert model_facts("meta-llama/Llama-3.1-8B").max_positions == 131072
    assert model_facts("microsoft/Phi-3-mini-4k-instruct").max_positions == 4096
    assert model_facts("microsoft/Phi-3-mini-128k-instruct").max_positions == 131072
    assert model_facts("mistralai/Mistral-7B-v0.1").vocab == 32000
    assert model_facts("mistralai/Mistral-7B-v0.3").vocab == 32768


def test_the_catalog_listing_names_every_entry():
    lines = describe_catalog().splitlines()
    assert len(lines) == len(CATALOG) + 1
    assert [line.split()[0] for line in lines[1:]] == list(CATALOG)
    assert "8.03B" in next(line for line in lines if line.startswith("Llama-3.1-8B "))
