"""Loading for training: what the engine changes in peft's defaults, checked against peft's own result."""

import pytest

torch = pytest.importorskip("torch")


def test_adapters_computing_in_the_input_dtype_match_peft_under_16bit_autocast(tiny_model):
    """The engine stops peft casting every adapted layer's input to the fp32 adapter (a full fp32 copy of
    the activations per layer); under the trainer's 16-bit autocast the loss and every gradient stay peft's."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from core.model import adapters_compute_in_input_dtype

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model("llama"), dtype=torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)  # zero at init: give the adapter something to do
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)  # peft's default on a 16-bit base
    ids = torch.randint(3, 300, (2, 48))

    def step():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in lora]).clone()

    loss_peft, grads_peft = step()
    layers = adapters_compute_in_input_dtype(model)
    assert layers == 7 * base.config.num_hidden_layers
    loss_ours, grads_ours = step()
    assert loss_ours == pytest.approx(loss_peft, rel=1e-3)
    assert torch.nn.functional.cosine_similarity(grads_ours, grads_peft, dim=0) > 0.999
    assert (grads_ours - grads_peft).norm() / grads_peft.norm() < 0.02
    assert adapters_compute_in_input_dtype(model) == 0  # idempotent
