"""The token never reaches a file, a log, an event, a config, a model card or the output."""

import os
import subprocess
import sys

from tests.helpers import toy_config

FAKE_TOKEN = "hf_LoRaWiZaRdFaKeToKeN0123456789abcdef"


def test_a_whole_headless_session_never_writes_the_token(tiny_model, toy_alpaca, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HF_TOKEN": FAKE_TOKEN, "HOME": str(home), "HF_HUB_OFFLINE": "1",
           "XDG_CACHE_HOME": str(home / ".cache")}
    config = toy_config(tiny_model("qwen2"), toy_alpaca, tmp_path / "run", method="qlora", max_steps=3)
    config.save(tmp_path / "config.yaml")
    outputs = []
    for args in (["train", "config.yaml"], ["chat", "run", "--prompt", "Reverse the word cat.", "--compare"],
                 ["export", "run", "--merge", "merged"], ["runs", "."], ["estimate", str(tiny_model("qwen2")), "--json"]):
        result = subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout + result.stderr)
    assert not any(FAKE_TOKEN in output for output in outputs)
    scanned = 0
    for root in (tmp_path, home):
        for path in root.rglob("*"):
            if path.is_file():
                scanned += 1
                assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    assert scanned > 20  # run dir, checkpoints, merged model, config, logs
