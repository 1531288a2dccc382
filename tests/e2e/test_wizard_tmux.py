"""The real app in a real terminal (tmux), through the whole wizard on a tiny local model on the CPU,
to a chat answer: what a newcomer does, key by key."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import toy_pairs, write_jsonl

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (CI installs it)")


class Terminal:
    def __init__(self, socket: str, cwd: Path, env: dict[str, str], width: int = 120, height: int = 36):
        self.socket = socket
        self.seen: list[str] = []  # every screen captured
        command = f"{sys.executable} -m core.cli"
        environment = " ".join(f"{key}={value}" for key, value in env.items())
        subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-x", str(width), "-y", str(height), "-c", str(cwd),
                        # COLUMNS/LINES can reach the session from the test's environment and would pin the
                        # app to their size instead of the window's.
                        f"env -u COLUMNS -u LINES {environment} {command}; sleep 600"], check=True)

    def screen(self) -> str:
        text = subprocess.run(["tmux", "-L", self.socket, "capture-pane", "-p"], capture_output=True, text=True).stdout
        self.seen.append(text)
        return text

    def history(self) -> str:
        """Everything the pane showed, scrollback included."""
        return subprocess.run(["tmux", "-L", self.socket, "capture-pane", "-p", "-S", "-"], capture_output=True,
                              text=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self.socket, "send-keys", *keys], check=True)
        time.sleep(0.3)

    def type(self, text: str) -> None:
        subprocess.run(["tmux", "-L", self.socket, "send-keys", "-l", text], check=True)
        time.sleep(0.3)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.3)
        raise AssertionError(f"{text!r} did not appear within {timeout}s; the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


FAKE_TOKEN = "hf_E2eRecognisableFakeTokenZq81"


def files_holding(root: Path, secret: str) -> list[Path]:
    needle = secret.encode()
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_a_newcomer_goes_from_welcome_to_a_chat_answer(tiny_model, tmp_path, fake_hub):
    """Logged in with a recognisable token (on a server with no keyring: this session only), through
    training, chat and export; then the token is in no file written and nowhere on the screen."""
    home = tmp_path / "home"
    home.mkdir()
    fake_hub.add_token("alice", FAKE_TOKEN)
    rows = [{"instruction": q, "input": "", "output": a} for q, a in toy_pairs(48, seed=5)]
    data = write_jsonl(tmp_path / "reverse.jsonl", rows)
    model = tiny_model("llama")
    root = Path(__file__).resolve().parents[2]
    env = {"HOME": str(home), "PYTHONPATH": str(root), "TERM": "xterm-256color",
           "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring", "CUDA_VISIBLE_DEVICES": "",
           "HF_ENDPOINT": fake_hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home"),
           "HF_HUB_DISABLE_XET": "1"}
    terminal = Terminal(f"lora-wizard-e2e-{os.getpid()}", tmp_path, env)
    try:
        # Each wait is on text only the awaited screen shows (the step bar names every step on every screen).
        terminal.wait_for("Start a new run", timeout=30)
        terminal.keys("n")
        terminal.wait_for("paste the token")
        terminal.type(FAKE_TOKEN)
        terminal.keys("C-t")  # no keyring on this "server": keep it for this session only
        terminal.wait_for("Logged in as alice; token kept for this session only", timeout=60)
        terminal.keys("C-n")
        terminal.wait_for("Which model to fine-tune")
        terminal.type(str(model))
        terminal.keys("Enter")
        terminal.wait_for("LlamaForCausalLM", timeout=60)
        terminal.keys("C-n")
        terminal.wait_for("lora-8bit", timeout=60)  # the three methods side by side
        terminal.keys("C-n")
        terminal.wait_for("Training data:")
        terminal.type(str(data))
        terminal.keys("Enter")
        terminal.wait_for("rows usable", timeout=90)
        terminal.keys("C-n")
        terminal.wait_for("Hover or focus a field")
        terminal.keys("C-n")
        terminal.wait_for("Repeat this run headless: lora-wizard train", timeout=30)
        terminal.keys("C-s")
        screen = terminal.wait_for("done ✓", timeout=600)
        assert "Traceback" not in screen and "loss" in screen
        assert "Chat with it: Ctrl+T" in screen

        terminal.keys("C-t")
        terminal.wait_for("Enter sends your message", timeout=120)
        terminal.type("Reverse the word cat.")
        terminal.keys("Enter")
        terminal.wait_for("you: Reverse the word cat.", timeout=60)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "…" in terminal.screen():
            time.sleep(0.5)  # both answers streamed in, base first
        screen = terminal.screen()
        assert screen.count("you: Reverse the word cat.") == 2  # base and fine-tuned panes
        assert "…" not in screen and "(no answer)" not in screen
        assert "Traceback" not in screen

        terminal.keys("C-o")
        screen = terminal.wait_for("Export the run", timeout=30)
        assert "adapter (" in screen and "Merge (Ctrl+G)" in screen
        terminal.keys("C-q")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "^q Quit" in terminal.screen():
            time.sleep(0.3)
        screen = terminal.screen()
        assert "^q Quit" not in screen and "Traceback" not in screen  # the app left cleanly
        runs = list((tmp_path / "runs").glob("*/adapter/adapter_config.json"))
        assert runs, "the run's adapter was not saved under ./runs"
        # The session token went to the trainer (in its environment, never to disk) and nowhere else.
        assert (runs[0].parents[1] / "trainer.log").is_file()
        assert files_holding(tmp_path, FAKE_TOKEN) == []
        shown = "\n".join(terminal.seen) + terminal.history()
        assert FAKE_TOKEN not in shown and FAKE_TOKEN[3:12] not in shown
    finally:
        terminal.close()
