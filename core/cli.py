"""`lora-wizard`: with no sub-command it opens the wizard; sub-commands run the same engine headless.

Each sub-command's work lives in the module named for it and is imported only when that
sub-command runs, so `lora-wizard` (the wizard) and `lora-wizard estimate` start without torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from core.errors import UserError

# sub-command -> "module:function"; the function takes the parsed args and returns an exit code.
COMMANDS = {
    "train": "core.train:train_command",
    "estimate": "core.vram:estimate_command",
    "chat": "core.infer:chat_command",
    "export": "core.export:export_command",
    "runs": "core.runs:runs_command",
    "attach": "tui.app:attach_command",
    "login": "core.hub:login_command",
    "cluster": "core.distributed:cluster_command",
    "wizard": "tui.app:wizard_command",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-wizard",
        description="Fine-tune an LLM with LoRA or QLoRA. With no command, opens the wizard.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train headless from a run config (YAML)")
    train.add_argument("config", nargs="?", help="run config YAML (the wizard writes one at its review step)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a setting, e.g. --set train.lr=1e-4 (repeatable)")
    train.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint in output_dir")
    train.add_argument("--demo", action="store_true", help="train the built-in demo (no GPU, Hub or token needed)")
    train.add_argument("--detach", action="store_true", help="start the trainer in the background and return at once")
    train.add_argument("--quiet", action="store_true", help="no progress lines")

    estimate = sub.add_parser("estimate", help="GPU memory needed per method, and the fastest settings that fit")
    estimate.add_argument("model", nargs="?", help="Hub id, local folder, or a catalog name (see --list)")
    estimate.add_argument("--list", action="store_true", help="list the built-in catalog of models")
    estimate.add_argument("--method", choices=["lora", "lora-8bit", "qlora"], help="one method (default: all three)")
    estimate.add_argument("--batch-size", type=int, default=4)
    estimate.add_argument("--seq-len", type=int, default=1024)
    estimate.add_argument("--rank", type=int, default=16)
    estimate.add_argument("--gradient-checkpointing", choices=["on", "off", "auto"], default="auto")
    estimate.add_argument("--gpu-gib", type=float, help="plan for a GPU of this many GiB instead of the GPUs found")
    estimate.add_argument("--gpus", type=int, help="plan for this many GPUs (default: the GPUs found): DDP vs FSDP per GPU")
    estimate.add_argument("--json", action="store_true", help="machine-readable output")

    chat = sub.add_parser("chat", help="chat with a fine-tuned run")
    chat.add_argument("run_dir")
    chat.add_argument("--prompt", help="answer this one prompt and exit")
    chat.add_argument("--compare", action="store_true", help="also answer with the adapter off (base model)")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 for greedy answers")
    chat.add_argument("--system", help="system prompt")

    export = sub.add_parser("export", help="save, merge or publish a run's adapter")
    export.add_argument("run_dir")
    export.add_argument("--merge", metavar="OUT_DIR", help="save a merged 16-bit model here")
    export.add_argument("--merge-into-original", action="store_true",
                        help="merge into the original 16-bit weights instead of the dequantized ones (answers may drift)")
    export.add_argument("--push", metavar="REPO_ID", help="push the adapter (or the merged model with --merge) to the Hub")
    export.add_argument("--private", action="store_true", default=True, help="private repo (default)")
    export.add_argument("--public", dest="private", action="store_false", help="public repo")

    runs = sub.add_parser("runs", help="list runs and their state")
    runs.add_argument("root", nargs="?", default=None, help="folder holding runs (default: ./runs)")
    runs.add_argument("--json", action="store_true")

    attach = sub.add_parser("attach", help="reopen the live screen of a running or finished run")
    attach.add_argument("run_dir")

    cluster = sub.add_parser("cluster", help="write the accelerate config, per-machine command and SLURM script for a multi-machine run")
    cluster.add_argument("config", help="run config YAML")
    cluster.add_argument("--machines", type=int, required=True, help="how many machines take part")
    cluster.add_argument("--processes-per-machine", type=int, help="processes on each machine (default: its GPUs)")
    cluster.add_argument("--main-address", help="address of machine 0 that the others can reach")
    cluster.add_argument("--main-port", type=int, help="port on machine 0 (default 29500)")
    cluster.add_argument("--cpu", action="store_true", help="CPU processes over gloo (no GPUs), e.g. to try it out")
    cluster.add_argument("--resume", action="store_true", help="rewrite the files for an existing run directory")
    cluster.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    login = sub.add_parser("login", help="store a Hugging Face token in the OS keyring")
    login.add_argument("--token", help="the token (default: read from a masked prompt or HF_TOKEN)")
    login.add_argument("--logout", action="store_true", help="remove the stored token")

    wizard = sub.add_parser("wizard", help="open the wizard (the default)")
    wizard.add_argument("--demo", action="store_true", help="preselect the built-in demo")
    return parser


def _quiet_libraries() -> None:
    """Library chatter (progress bars, deprecation notes) would drown the one line per step we print."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="bitsandbytes")
    # bitsandbytes' 8-bit matmul logs a warning on every fp32 (CPU) forward: the CPU run's dtype, not news.
    import logging

    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "wizard"
    if command == "wizard" and not hasattr(args, "demo"):
        args.demo = False
    _quiet_libraries()
    module_name, function_name = COMMANDS[command].split(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        return int(function(args) or 0)
    except UserError as error:
        print(f"lora-wizard: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lora-wizard: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lora-wizard runs | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
