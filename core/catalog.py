"""Configs of popular models, for estimates offline and without downloading anything.

Values are the models' published config.json fields that decide parameter counts and memory.
`lookup` matches a Hub id (any organisation, -Instruct / -it / -Chat suffixes ignored) or a short name.
"""

from __future__ import annotations

import re

# name -> config fields (model_type, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
# num_key_value_heads, head_dim (when not hidden/heads), vocab_size, tie_word_embeddings, max_position_embeddings,
# attention_bias (q/k/v biases, Qwen2), vision_config (image-text models: the vision tower that loads with them))
# Gemma 3 4B/12B/27B are image-text models (Gemma3ForConditionalGeneration): a SigLIP-So400m tower rides along,
# loaded, quantized and (with target_modules all-linear) adapted like the text layers.
GEMMA3_VISION = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                     image_size=896, patch_size=14, num_channels=3, vision_use_head=False)

CATALOG: dict[str, dict] = {
    "Llama-3.2-1B": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                         max_position_embeddings=131072),
    "Llama-3.2-3B": dict(model_type="llama", hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                         num_attention_heads=24, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                         max_position_embeddings=131072),
    "Llama-3.1-8B": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
                         max_position_embeddings=131072),
    "Llama-3.1-70B": dict(model_type="llama", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                          num_attention_heads=64, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
                          max_position_embeddings=131072),
    "Mistral-7B-v0.1": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False,
                            max_position_embeddings=32768),
    "Mistral-7B-v0.3": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=8, vocab_size=32768, tie_word_embeddings=False,
                            max_position_embeddings=32768),
    "Qwen2.5-0.5B": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         max_position_embeddings=32768, attention_bias=True),
    "Qwen2.5-1.5B": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         max_position_embeddings=32768, attention_bias=True),
    "Qwen2.5-3B": dict(model_type="qwen2", hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                       num_attention_heads=16, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                       max_position_embeddings=32768, attention_bias=True),
    "Qwen2.5-7B": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
                       max_position_embeddings=32768, attention_bias=True),
    "Qwen2.5-14B": dict(model_type="qwen2", hidden_size=5120, intermediate_size=13824, num_hidden_layers=48,
                        num_attention_heads=40, num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False,
                        max_position_embeddings=32768, attention_bias=True),
    "Qwen2.5-32B": dict(model_type="qwen2", hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                        num_attention_heads=40, num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False,
                        max_position_embeddings=32768, attention_bias=True),
    "Qwen2.5-72B": dict(model_type="qwen2", hidden_size=8192, intermediate_size=29568, num_hidden_layers=80,
                        num_attention_heads=64, num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False,
                        max_position_embeddings=32768, attention_bias=True),
    "gemma-2-2b": dict(model_type="gemma2", hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=256000,
                       tie_word_embeddings=True, max_position_embeddings=8192),
    "gemma-2-9b": dict(model_type="gemma2", hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=256, vocab_size=256000,
                       tie_word_embeddings=True, max_position_embeddings=8192),
    "gemma-2-27b": dict(model_type="gemma2", hidden_size=4608, intermediate_size=36864, num_hidden_layers=46,
                        num_attention_heads=32, num_key_value_heads=16, head_dim=128, vocab_size=256000,
                        tie_word_embeddings=True, max_position_embeddings=8192),
    "gemma-3-1b": dict(model_type="gemma3_text", hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
                       num_attention_heads=4, num_key_value_heads=1, head_dim=256, vocab_size=262144,
                       tie_word_embeddings=True, max_position_embeddings=32768),
    "gemma-3-4b": dict(model_type="gemma3_text", hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=262208,
                       tie_word_embeddings=True, max_position_embeddings=131072, vision_config=GEMMA3_VISION),
    "gemma-3-12b": dict(model_type="gemma3_text", hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                        num_attention_heads=16, num_key_value_heads=8, head_dim=256, vocab_size=262208,
                        tie_word_embeddings=True, max_position_embeddings=131072, vision_config=GEMMA3_VISION),
    "gemma-3-27b": dict(model_type="gemma3_text", hidden_size=5376, intermediate_size=21504, num_hidden_layers=62,
                        num_attention_heads=32, num_key_value_heads=16, head_dim=128, vocab_size=262208,
                        tie_word_embeddings=True, max_position_embeddings=131072, vision_config=GEMMA3_VISION),
    "Phi-3-mini-4k": dict(model_type="phi3", hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=32, vocab_size=32064, tie_word_embeddings=False,
                          max_position_embeddings=4096, fused_qkv=True),
    "Phi-3-medium-4k": dict(model_type="phi3", hidden_size=5120, intermediate_size=17920, num_hidden_layers=40,
                            num_attention_heads=40, num_key_value_heads=10, vocab_size=32064,
                            tie_word_embeddings=False, max_position_embeddings=4096, fused_qkv=True),
    "phi-4": dict(model_type="phi3", hidden_size=5120, intermediate_size=17920, num_hidden_layers=40,
                  num_attention_heads=40, num_key_value_heads=10, vocab_size=100352, tie_word_embeddings=False,
                  max_position_embeddings=16384, fused_qkv=True),
    "SmolLM2-135M": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
                         max_position_embeddings=8192),
    "SmolLM2-360M": dict(model_type="llama", hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5, vocab_size=49152, tie_word_embeddings=True,
                         max_position_embeddings=8192),
    "SmolLM2-1.7B": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                         num_attention_heads=32, num_key_value_heads=32, vocab_size=49152, tie_word_embeddings=True,
                         max_position_embeddings=8192),
}
# The 128k-context variants: the same weights' shapes, longer positions (LongRoPE).
CATALOG["Phi-3-mini-128k"] = dict(CATALOG["Phi-3-mini-4k"], max_position_embeddings=131072)
CATALOG["Phi-3-medium-128k"] = dict(CATALOG["Phi-3-medium-4k"], max_position_embeddings=131072)

ALIASES = {
    # Same shapes (Llama 3 and 3.1 differ in RoPE scaling and context length, 3.3 70B in training only).
    "llama-3-8b": "Llama-3.1-8B", "llama-3.3-70b": "Llama-3.1-70B", "llama-3-70b": "Llama-3.1-70B",
    "mistral-7b": "Mistral-7B-v0.1", "mistral-7b-v0.2": "Mistral-7B-v0.1",  # v0.2 kept v0.1's 32000-token vocabulary
    "phi-3-mini": "Phi-3-mini-4k", "phi-3-medium": "Phi-3-medium-4k", "phi-3.5-mini": "Phi-3-mini-128k",
}
_SUFFIXES = re.compile(r"(-instruct|-it|-pt|-chat|-hf|-base)(-\d+)?(?=-|$)")


def _key(name: str) -> str:
    name = name.strip().rstrip("/").split("/")[-1].lower().removeprefix("meta-")  # Meta-Llama-3.1-8B
    previous = None
    while previous != name:
        previous, name = name, _SUFFIXES.sub("", name)
    return name


_INDEX = {_key(name): name for name in CATALOG}
_INDEX.update(ALIASES)


def lookup(name: str) -> tuple[str, dict] | None:
    """(catalog name, config fields) for a Hub id or short name in the catalog, else None."""
    found = _INDEX.get(_key(name))
    return (found, CATALOG[found]) if found else None


def describe_catalog() -> str:
    """The catalog as aligned lines (name, parameters, layers, context), for `lora-wizard estimate --list`."""
    from core.vram import facts_from_fields

    lines = [f"{'model':<18} {'parameters':>10} {'layers':>6} {'context':>8}"]
    for name, fields in CATALOG.items():
        facts = facts_from_fields(name, fields)
        lines.append(f"{name:<18} {facts.total_params / 1e9:>9.2f}B {facts.layers:>6} {facts.max_positions:>8}")
    return "\n".join(lines)
