"""Packed rows must attend within each example only: the logits of each example run alone."""

import pytest
import torch


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_packed_row_with_varlen_matches_each_example_alone(architecture, tiny_model):
    from transformers import AutoModelForCausalLM

    from core import attention

    model = AutoModelForCausalLM.from_pretrained(tiny_model(architecture), attn_implementation="sdpa").eval()
    torch.manual_seed(0)
    lengths = [7, 30, 2, 19]
    ids = [torch.randint(5, 300, (n,)) for n in lengths]
    packed = torch.cat(ids)[None]
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    with torch.no_grad():
        alone = torch.cat([model(input_ids=x[None]).logits[0] for x in ids])
        model.set_attn_implementation(attention.register())
        varlen = model(input_ids=packed, position_ids=positions).logits[0]
    assert torch.allclose(varlen, alone, atol=1e-4), (varlen - alone).abs().max()


def test_gradients_flow_through_the_per_example_path(tiny_model):
    from transformers import AutoModelForCausalLM

    from core import attention

    model = AutoModelForCausalLM.from_pretrained(tiny_model("llama"), attn_implementation=attention.register())
    ids = torch.randint(5, 300, (1, 12))
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]])
    loss = model(input_ids=ids, position_ids=positions, labels=ids).loss
    loss.backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("architecture", ["gemma2", "mistral", "qwen2"])
def test_sliding_windows_and_soft_capping_match_each_example_alone(architecture, tiny_model):
    """Gemma-2 soft-caps its attention logits and alternates sliding-window layers; Mistral and Qwen2 can slide."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from core import attention

    config = AutoConfig.from_pretrained(tiny_model(architecture))
    config.sliding_window = 8  # shorter than some examples below
    if architecture == "qwen2":
        config.use_sliding_window, config.max_window_layers = True, 0
        config.layer_types = ["sliding_attention"] * config.num_hidden_layers
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    torch.manual_seed(1)
    lengths = [5, 23, 8, 14]
    ids = [torch.randint(5, 300, (n,)) for n in lengths]
    with torch.no_grad():
        alone = torch.cat([reference(input_ids=x[None]).logits[0] for x in ids])
        reference.set_attn_implementation(attention.register())
        packed = reference(input_ids=torch.cat(ids)[None],
                           position_ids=torch.cat([torch.arange(n) for n in lengths])[None]).logits[0]
    assert torch.allclose(packed, alone, atol=1e-4), (packed - alone).abs().max()
