"""The wizard's side of the boundary with the engine's optional parts: hardware, VRAM estimates, the demo.

Screens call these from thread workers. Each function imports its core module when called, so
the wizard starts without torch, and a core module that is missing from an install (or not
written yet) degrades to "not available" instead of breaking a screen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from core.config import AUTO, METHODS
from tui.state import WizardState, system_memory_gib

# A plan that leaves less than this share of memory free is "tight": allocator fragmentation and
# a longer-than-usual batch can tip it over.
TIGHT_SHARE = 0.10
# Best quality first. QLoRA ranks above 8-bit LoRA: close to LoRA's quality in the least memory,
# while LLM.int8 steps are slower and save less.
QUALITY_ORDER = ("lora", "qlora", "lora-8bit")


@dataclass
class MethodEstimate:
    method: str
    weights_gib: float
    peak_gib: float
    verdict: str  # "fits" | "tight" | "no"
    multi_gpu: dict[str, Any] | None = None  # with several GPUs: per-GPU peak of single / ddp / fsdp, the recommended one


def detect_hardware() -> tuple[list[Any], float | None]:
    """(GPUs found, CPU memory in GiB). No core.hardware means no GPU support in this install."""
    try:
        from core.hardware import detect_gpus
    except ImportError:
        return [], system_memory_gib()
    return list(detect_gpus()), system_memory_gib()


def capacity_gib(state: WizardState) -> float | None:
    """Memory one training process may use: the emptiest-card-that-is-smallest on a GPU box, else CPU memory."""
    if state.gpus:
        return min(getattr(gpu, "free_gib", None) or gpu.total_gib for gpu in state.gpus)
    return state.memory_gib


def verdict(peak_gib: float, capacity: float | None) -> str:
    if capacity is None:
        return "fits"
    if peak_gib > capacity:
        return "no"
    return "tight" if peak_gib > capacity * (1 - TIGHT_SHARE) else "fits"


def estimator_available() -> bool:
    try:
        import core.vram  # noqa: F401
    except ImportError:
        return False
    return True


def model_facts(state: WizardState) -> Any:
    from core.vram import model_facts as facts_for

    return facts_for(state.config.model, token=state.token)


def estimate_methods(state: WizardState) -> dict[str, MethodEstimate] | None:
    """Peak memory of each method for the chosen model and settings; None when there is no estimator."""
    try:
        from core.vram import estimate, multi_gpu_choice
    except ImportError:
        return None
    facts = model_facts(state)
    train = state.config.train
    batch_size = train.batch_size if isinstance(train.batch_size, int) else 1
    # "auto" turns checkpointing on when needed, so the question "does it fit at all" assumes it on.
    checkpointing = train.gradient_checkpointing if isinstance(train.gradient_checkpointing, bool) else True
    capacity = capacity_gib(state)
    estimates = {}
    for method in METHODS:
        # Without a GPU the engine trains in fp32 on the CPU, which the estimate must know.
        result = estimate(facts, method, batch_size=batch_size, seq_len=state.config.data.max_length,
                          rank=state.config.lora.r, gradient_checkpointing=checkpointing,
                          device="cuda" if state.gpus else "cpu")
        several = len(state.gpus or []) > 1
        estimates[method] = MethodEstimate(method, float(result.weights_gib), float(result.peak_gib),
                                           verdict(float(result.peak_gib), capacity),
                                           multi_gpu_choice(result, facts, len(state.gpus), capacity) if several else None)
    return estimates


def recommend(estimates: dict[str, MethodEstimate] | None, has_gpu: bool) -> tuple[str, str]:
    """(method, one line why): the best-quality method that fits."""
    if estimates is None:
        if has_gpu:
            return "qlora", "qlora: no memory estimate in this install, so the method that needs the least memory."
        return "lora", "lora: on the CPU, 16-bit LoRA steps are several times faster than bitsandbytes' 8-bit and 4-bit ones."
    for wanted in ("fits", "tight"):
        for method in QUALITY_ORDER:
            if estimates[method].verdict == wanted:
                better = [m for m in QUALITY_ORDER[: QUALITY_ORDER.index(method)]]
                if not better:
                    return method, f"{method}: the best quality and fastest steps, and it fits."
                missing = " and ".join(better)
                return method, f"{method}: the best-quality method that fits ({missing} would not)."
    return "qlora", "qlora needs the least memory, but nothing fits: pick a smaller model, a shorter max_length or a bigger GPU."


def fastest_settings(state: WizardState) -> dict[str, Any] | None:
    """The estimator's fastest batch settings for the chosen method, or None without an estimator."""
    try:
        from core.vram import fastest_settings as search
    except ImportError:
        return None
    config = state.config
    # No GPU: the search plans for the CPU (gpu_gib None) and reads the free CPU memory itself.
    gpu_gib = capacity_gib(state) if state.gpus else None
    return dict(search(model_facts(state), config.method, gpu_gib, token_lengths=state.token_lengths,
                       rank=config.lora.r, max_length=config.data.max_length, packing=config.data.packing))


def demo_config(state: WizardState, progress: Callable[[int, int, str], None] | None = None):
    """The demo's run config (building the demo model first if this install does not ship it)."""
    from core import demo

    demo.ensure_demo_model(progress=progress)
    config = demo.demo_config()
    state.demo = True
    state.demo_model = config.model
    state.config = config
    config.output_dir = state.suggested_output_dir()
    return config


def gradient_checkpointing_text(value: Any) -> str:
    return AUTO if value == AUTO else ("on" if value else "off")
