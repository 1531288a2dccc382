"""Small models of real architectures, built locally: the demo's base and the tests' fixtures.

A byte-level BPE tokenizer is trained on text we pass in (so it is a real tokenizer, with a real
ChatML chat template), and a model of a real transformers architecture is built from a config
with widths that bitsandbytes' CPU 4-bit path accepts (multiples of 64).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

ARCHITECTURES = ("llama", "qwen2", "mistral", "qwen3", "gemma2", "phi3")


def build_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """Trains a byte-level BPE tokenizer on `texts`, with ChatML special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_config(architecture: str, vocab_size: int, eos_token_id: int | None = None, pad_token_id: int | None = None, hidden: int = 64, layers: int = 2, heads: int = 2,
                kv_heads: int = 1, intermediate: int = 128, max_positions: int = 2048):
    """A transformers config of `architecture` at toy size (widths multiples of 64 for bitsandbytes' CPU NF4)."""
    from transformers import AutoConfig

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture}; known: {ARCHITECTURES}")
    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
    )
    if architecture in ("qwen3", "gemma2"):
        kwargs["head_dim"] = hidden // heads
    return AutoConfig.for_model(architecture, **kwargs)


def build_tiny_model(architecture: str, tokenizer, out_dir: str | Path, seed: int = 0, **config_kwargs) -> Path:
    """Builds a randomly initialised model of `architecture` and saves it with `tokenizer` to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(architecture, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **config_kwargs)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
