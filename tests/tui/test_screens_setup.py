"""Pilot tests of the wizard's setup steps: Welcome, Token, Model, Method, Dataset, Settings, Review.

Hub behaviour goes through the loopback fake Hub (the `fake_hub` fixture), models are tiny real
ones built with core.tiny, and hardware facts are put into the wizard state so results do not
depend on the machine.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from jaraco.classes import properties
from keyring.backend import KeyringBackend
from rich.console import Console
from rich.text import Text
from textual.worker import WorkerCancelled, WorkerFailed

from core.config import config_from_dict
from core.events import EventWriter
from tests.helpers import toy_pairs, write_jsonl
from tui.app import LoraWizardApp
from tui.state import ModelInfo, WizardState

SIZE = (100, 32)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"  # Textual runs on asyncio


def plain(widget) -> str:
    """The widget's text as a terminal 100 columns wide shows it."""
    rendered = getattr(widget, "content", None) or widget.render()
    if isinstance(rendered, (str, Text)) or hasattr(rendered, "plain"):
        return str(rendered)
    console = Console(width=100, file=io.StringIO(), record=True)
    console.print(rendered)
    return console.export_text()


def error_text(app) -> str:
    label = app.screen.query_one("#error")
    return plain(label) if label.display else ""


async def settle(app, pilot, rounds: int = 3) -> None:
    """Waits for workers and for the messages they post (which may start more workers).

    A worker that fails is the app's to report (that is what the tests check), not the wait's.
    """
    for _ in range(rounds):
        for worker in list(app.workers):
            try:
                await worker.wait()
            except (WorkerFailed, WorkerCancelled):
                pass
        await pilot.pause()


def known_state(**values) -> WizardState:
    """A state with the machine's facts already known: no GPU, 16 GiB, no token, a keyring."""
    facts = dict(gpus=[], memory_gib=16.0, token_checked=True, keyring=(True, "OS keyring: test"))
    facts.update(values)
    return WizardState(**facts)




@pytest.fixture
def runs_root(tmp_path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def local_model(tiny_model) -> Path:
    return tiny_model("llama")


# --- Welcome ----------------------------------------------------------------------------------


async def test_welcome_offers_the_demo_first_without_a_gpu(runs_root):
    app = LoraWizardApp(known_state(), runs_root=runs_root)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        choices = app.screen.query_one("#choices")
        assert choices.highlighted_option.id == "demo"
        assert "no GPU found" in plain(app.screen.query_one("#machine"))


async def test_welcome_offers_a_new_run_first_with_a_gpu_and_a_token(runs_root):
    gpu = type("Gpu", (), {"index": 0, "name": "NVIDIA H200", "total_gib": 139.8, "free_gib": 139.0})()
    app = LoraWizardApp(known_state(gpus=[gpu], token="hf_x", token_source="keyring"), runs_root=runs_root)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.screen.query_one("#choices").highlighted_option.id == "new"
        assert "NVIDIA H200" in plain(app.screen.query_one("#machine"))


async def test_welcome_demo_flag_preselects_the_demo_even_with_a_gpu(runs_root):
    gpu = type("Gpu", (), {"index": 0, "name": "GPU", "total_gib": 80.0, "free_gib": 80.0})()
    app = LoraWizardApp(known_state(gpus=[gpu], token="hf_x", token_source="env"), demo=True, runs_root=runs_root)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.screen.query_one("#choices").highlighted_option.id == "demo"


def write_run(root: Path, name: str, running: bool, steps: int) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("model: org/model\nmethod: qlora\n")
    writer = EventWriter(run_dir)
    writer.write("started")
    for step in range(1, steps + 1):
        writer.write("step", step=step, max_steps=100, loss=1.0)
    if running:
        (run_dir / "status.json").write_text(
            f'{{"pid": {os.getpid()}, "state": "running", "host": "{os.uname().nodename}"}}')
    else:
        writer.write("done", adapter_dir=str(run_dir / "adapter"), train_loss=0.5, runtime_s=1.0)
    return run_dir


async def test_welcome_lists_runs_on_disk_running_first_and_opens_one(runs_root):
    finished = write_run(runs_root, "finished-run", running=False, steps=3)
    time.sleep(0.01)
    live = write_run(runs_root, "live-run", running=True, steps=7)
    os.utime(finished / "config.yaml")  # the finished one is newer: running still comes first
    app = LoraWizardApp(known_state(), runs_root=runs_root)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        choices = app.screen.query_one("#choices")
        ids = [choices.get_option_at_index(i).id for i in range(choices.option_count)]
        runs = [choice for choice in ids if choice and choice.startswith("run:")]
        assert runs == [f"run:{live}", f"run:{finished}"]
        assert "7/100" in str(choices.get_option_at_index(ids.index(f"run:{live}")).prompt)
        choices.highlighted = ids.index(f"run:{finished}")
        await pilot.press("enter")
        await pilot.pause()
        assert type(app.screen).__name__ in ("TrainingScreen", "RunNoteScreen")
        assert Path(app.screen.run_dir) == finished


@pytest.fixture
def demo_cache(tmp_path, monkeypatch, local_model):
    """A demo cache holding a ready base model, so choosing the demo does not pretrain one for minutes."""
    from core import demo

    cache = tmp_path / "cache"
    monkeypatch.setenv("LORA_WIZARD_CACHE", str(cache))
    if not demo._model_complete(demo.ASSET_MODEL_DIR):
        shutil.copytree(local_model, cache / "demo" / f"base-v{demo.DEMO_VERSION}")
    return cache


async def wait_for_screen(app, pilot, name: str, text: str | None = None, rounds: int = 200) -> None:
    """Until `name` is the current screen (and shows `text`): workers load models and data meanwhile."""
    for _ in range(rounds):
        await pilot.pause(0.05)
        if type(app.screen).__name__ == name and (text is None or text in screen_text(app.screen)):
            return
    raise AssertionError(f"not on {name} showing {text!r}: on {type(app.screen).__name__}:\n{screen_text(app.screen)}")


def screen_text(screen) -> str:
    from textual.widgets import Label, Static

    return "\n".join(plain(widget) for widget in screen.query(Static) if widget.display) + "".join(
        str(label.render()) for label in screen.query(Label) if label.display)


async def test_the_demo_walks_every_step_with_its_choices_filled_in_and_labelled(runs_root, demo_cache):
    from core import demo

    app = LoraWizardApp(known_state(), runs_root=runs_root)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("d")
        await wait_for_screen(app, pilot, "LoginScreen")
        banner = plain(app.screen.query_one("#demo-banner"))
        assert banner.startswith("Demo: a built-in") and "Ctrl+N goes on" in banner
        await pilot.press("ctrl+n")  # the demo needs no token
        await wait_for_screen(app, pilot, "ModelScreen")
        for _ in range(200):  # the demo model is looked up on arrival
            await pilot.pause(0.05)
            if "LlamaForCausalLM" in plain(app.screen.query_one("#model-summary")):
                break
        assert "LlamaForCausalLM" in plain(app.screen.query_one("#model-summary"))
        assert app.screen.query_one("#model-id").value == str(demo.ensure_demo_model())
        await pilot.press("ctrl+n")
        await wait_for_screen(app, pilot, "MethodScreen")
        await settle(app, pilot)
        assert "GiB" in screen_text(app.screen) and app.screen.query_one("#demo-banner")  # estimates, as for any model
        await pilot.press("ctrl+n")
        await wait_for_screen(app, pilot, "DatasetScreen", "rows usable")  # previewed without asking
        assert app.screen.query_one("#dataset-path").value == str(demo.demo_dataset_path())
        demo_settings = (app.state.config.train.batch_size, app.state.config.train.max_steps,
                         app.state.config.data.max_length)
        await pilot.press("ctrl+n")
        await wait_for_screen(app, pilot, "SettingsScreen", "The demo's settings")
        await settle(app, pilot)
        await pilot.press("ctrl+n")
        await wait_for_screen(app, pilot, "ReviewScreen")
        config = app.state.config
        config.check_complete()
        # The fastest-settings search did not replace the demo's own (sized for two CPU cores).
        assert (config.train.batch_size, config.train.max_steps, config.data.max_length) == demo_settings
        assert config.model == str(demo.ensure_demo_model())
        assert config.data.path == str(demo.demo_dataset_path())
        assert config.output_dir == str(runs_root / f"demo-{config.method}")
        assert f"lora-wizard train {runs_root}/demo-{config.method}/config.yaml" in plain(
            app.screen.query_one("#train-command"))


async def test_new_run_goes_to_the_token_step(runs_root):
    app = LoraWizardApp(known_state(), runs_root=runs_root)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("n")
        await settle(app, pilot)
        assert type(app.screen).__name__ == "LoginScreen"


# --- Token ------------------------------------------------------------------------------------


@pytest.fixture
def clean_token(monkeypatch, fake_hub, session_token_cleared):
    """No token anywhere but what a test gives: no HF_TOKEN (fake_hub clears it), an empty hf-cli file path."""
    return fake_hub


async def test_a_refused_token_shows_the_hubs_refusal_and_is_not_stored(clean_token, no_keyring):
    from core.hub import get_token

    app = LoraWizardApp(known_state(keyring=None, token_checked=False), step="login")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.click("#token")
        await pilot.press(*"hf_NotARealToken")
        await pilot.press("enter")
        await settle(app, pilot)
        assert "refused by the Hub" in error_text(app)
        assert app.state.account is None
    assert get_token() == (None, None)


async def test_a_token_without_a_keyring_can_be_kept_for_the_session_only(clean_token, no_keyring):
    from core.hub import get_token

    token = clean_token.add_token("alice")
    app = LoraWizardApp(known_state(keyring=None, token_checked=False), step="login")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert "No usable OS keyring" in plain(screen.query_one("#keyring-status"))
        assert "gnome-keyring" in plain(screen.query_one("#keyring-status"))
        assert screen.query_one("#session-button").display
        assert screen.query_one("#token").password
        screen.query_one("#token").value = token
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        result = plain(screen.query_one("#login-result"))
        assert "account alice" in result and "no OS keyring" in result
        assert get_token() == (None, None)  # nothing stored, nothing written
        await pilot.press("ctrl+t")
        await settle(app, pilot)
        assert "Logged in as alice; token kept for this session only" in plain(screen.query_one("#login-result"))
        assert app.state.token_source == "session" and app.state.account == "alice"
    assert get_token() == (token, "session")


async def test_hf_token_in_the_environment_is_respected_and_said_so(clean_token, no_keyring, monkeypatch):
    token = clean_token.add_token("bob")
    monkeypatch.setenv("HF_TOKEN", token)
    app = LoraWizardApp(known_state(keyring=None, token_checked=False), step="login")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        status = plain(app.screen.query_one("#token-status"))
        assert "HF_TOKEN is set in the environment" in status and "Account: bob" in status
        assert app.state.token == token and app.state.token_source == "env"


class BlockingKeyring(KeyringBackend):
    """A keyring that waits (like a locked one behind an unseen prompt) until the test releases it.

    Only ever set explicitly (blocking_keyring below). keyring registers every KeyringBackend subclass
    that is imported, so a viable priority would chain this one behind the real Secret Service for the
    whole test session (the module is imported at collection): every read of a missing entry then
    waited 30 s here, which is what made the real-keyring tests in tests/core time out in CI."""

    release = threading.Event()

    @properties.classproperty
    def priority(cls) -> float:
        raise RuntimeError("BlockingKeyring is only used when a test sets it with keyring.set_keyring")

    def get_password(self, service, username):
        self.release.wait(30)
        return None

    def set_password(self, service, username, password):
        self.release.wait(30)

    def delete_password(self, service, username):
        self.release.wait(30)


@pytest.fixture
def blocking_keyring(monkeypatch):
    import keyring

    import core.hub

    monkeypatch.setenv("LORA_WIZARD_KEYRING_TIMEOUT", "0.5")
    previous = keyring.get_keyring()
    BlockingKeyring.release.clear()
    keyring.set_keyring(BlockingKeyring())
    yield
    BlockingKeyring.release.set()
    if core.hub._stuck_keyring_call is not None:
        core.hub._stuck_keyring_call.join(5)
    core.hub._stuck_keyring_call = None
    keyring.set_keyring(previous)


async def test_a_keyring_that_hangs_times_out_with_a_message(clean_token, blocking_keyring):
    token = clean_token.add_token("carol")
    app = LoraWizardApp(known_state(keyring=(True, "OS keyring: blocking")), step="login")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.screen.query_one("#token").value = token
        await pilot.press("enter")
        await settle(app, pilot)
        assert "did not answer within 0.5 s" in error_text(app)
        assert app.screen.query_one("#session-button").display
        assert not app.unexpected_errors


async def test_the_token_step_can_be_skipped():
    app = LoraWizardApp(known_state(), step="login")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.click("#next-button")
        await pilot.pause()
        assert type(app.screen).__name__ == "ModelScreen"


async def test_an_empty_token_is_a_message_not_a_hub_call(clean_token):
    app = LoraWizardApp(known_state(), step="login")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert "Paste a token first" in error_text(app)
    assert not [r for r in clean_token.requests if "whoami" in r.get("path", "")]


# --- Model ------------------------------------------------------------------------------------


async def model_screen_with(app, pilot, text: str) -> None:
    await settle(app, pilot)
    app.screen.query_one("#model-id").value = text
    await pilot.press("enter")
    await settle(app, pilot)


async def test_an_empty_model_id_is_a_message():
    app = LoraWizardApp(known_state(), step="model")
    async with app.run_test(size=SIZE) as pilot:
        await model_screen_with(app, pilot, "")
        assert "Give a Hub model id" in error_text(app)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert type(app.screen).__name__ == "ModelScreen"


async def test_a_missing_folder_is_a_message(tmp_path):
    app = LoraWizardApp(known_state(), step="model")
    async with app.run_test(size=SIZE) as pilot:
        await model_screen_with(app, pilot, str(tmp_path / "no-such-model"))
        assert "There is no model folder" in error_text(app)
        assert not app.unexpected_errors


async def test_a_folder_without_config_json_is_a_message(tmp_path):
    app = LoraWizardApp(known_state(), step="model")
    async with app.run_test(size=SIZE) as pilot:
        await model_screen_with(app, pilot, str(tmp_path))
        assert "has no config.json" in error_text(app)


async def test_a_local_model_shows_its_architecture_and_size_and_goes_on(local_model):
    app = LoraWizardApp(known_state(), step="model")
    async with app.run_test(size=SIZE) as pilot:
        await model_screen_with(app, pilot, str(local_model))
        info = app.state.model_info
        assert info.source == "local" and info.architecture == "LlamaForCausalLM"
        total = sum(p for p in [info.parameters] if p)
        assert total > 10_000  # counted from the safetensors header
        summary = plain(app.screen.query_one("#model-summary"))
        assert "LlamaForCausalLM" in summary and "local folder" in summary
        await pilot.press("ctrl+n")
        await settle(app, pilot)
        assert type(app.screen).__name__ == "MethodScreen"
        assert app.state.config.model == str(local_model)


async def test_a_hub_model_shows_its_licence(fake_hub, local_model):
    fake_hub.add_model("acme/tiny-chat", local_model, license="apache-2.0")
    app = LoraWizardApp(known_state(), step="model")
    async with app.run_test(size=SIZE) as pilot:
        await model_screen_with(app, pilot, "acme/tiny-chat")
        summary = plain(app.screen.query_one("#model-summary"))
        assert "acme/tiny-chat" in summary and "apache-2.0" in summary and "Hub" in summary
        assert app.state.model_info.can_access


async def test_a_gated_model_without_access_is_flagged_and_not_accepted(fake_hub, local_model):
    token = fake_hub.add_token("dave")
    fake_hub.add_model("meta/gated-model", local_model, gated=True)
    app = LoraWizardApp(known_state(token=token, token_source="session"), step="model")
    async with app.run_test(size=SIZE) as pilot:
        await model_screen_with(app, pilot, "meta/gated-model")
        summary = plain(app.screen.query_one("#model-summary"))
        assert "this token has no access" in summary and f"{fake_hub.url}/meta/gated-model" in summary
        await pilot.press("ctrl+n")
        await settle(app, pilot)
        assert type(app.screen).__name__ == "ModelScreen"
        assert "is gated" in error_text(app) and "request it at" in error_text(app)
        fake_hub.grant_access("meta/gated-model", "dave")
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        assert "Gated: this token has access" in plain(app.screen.query_one("#model-summary"))
        await pilot.press("ctrl+n")
        await settle(app, pilot)
        assert type(app.screen).__name__ == "MethodScreen"


async def test_a_name_searches_the_hub_and_a_hit_can_be_chosen(fake_hub, local_model):
    fake_hub.add_model("acme/tiny-chat", local_model, downloads=50)
    fake_hub.add_model("other/tiny-base", local_model, downloads=10)
    app = LoraWizardApp(known_state(), step="model")
    async with app.run_test(size=SIZE) as pilot:
        await model_screen_with(app, pilot, "tiny")
        results = app.screen.query_one("#search-results")
        assert results.display
        hits = [results.get_option_at_index(i).id for i in range(results.option_count)]
        assert hits == ["acme/tiny-chat", "other/tiny-base"]
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.state.model_info.id == "acme/tiny-chat"


async def test_an_unknown_hub_model_is_a_message(fake_hub):
    app = LoraWizardApp(known_state(), step="model")
    async with app.run_test(size=SIZE) as pilot:
        await model_screen_with(app, pilot, "nobody/nothing")
        assert "nobody/nothing" in error_text(app)
        assert not app.unexpected_errors


# --- Method -----------------------------------------------------------------------------------


async def test_method_table_recommends_and_choosing_goes_to_the_dataset(local_model):
    from core.config import METHODS

    state = known_state(config=config_from_dict({"model": str(local_model)}))
    app = LoraWizardApp(state, step="method")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen = app.screen
        table = screen.query_one("#methods")
        assert [row.key.value for row in table.ordered_rows] == list(METHODS)
        assert screen.recommended in METHODS
        assert METHODS[table.cursor_row] == screen.recommended
        assert plain(screen.query_one("#recommendation")).startswith(f"Recommended: {screen.recommended}")
        assert "CPU" in plain(screen.query_one("#machine-line"))
        await pilot.press("down")
        chosen = METHODS[table.cursor_row]
        assert chosen in plain(screen.query_one("#method-help"))
        await pilot.press("enter")
        await settle(app, pilot)
        assert type(app.screen).__name__ == "DatasetScreen"
        assert app.state.config.method == chosen and app.state.method_chosen


async def test_method_screen_with_two_gpus_offers_ddp_or_fsdp_per_gpu_and_writes_the_choice():
    from core.hardware import GpuInfo

    two = [GpuInfo(i, "NVIDIA GeForce RTX 4090", 24.0, 24.0, (8, 9)) for i in range(2)]
    state = known_state(gpus=two, config=config_from_dict({"model": "Llama-3.1-8B", "method": "lora",
                                                           "train": {"batch_size": 16}}))
    state.method_chosen = True  # keep the cursor on lora, whatever is recommended
    app = LoraWizardApp(state, step="method")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen = app.screen
        line = plain(screen.query_one("#multi-gpu"))
        # Bf16 LoRA of an 8B model at micro-batch 16 x 1024: a full copy (~28 GiB) does not fit a 24 GiB card,
        # sharded over two it does: FSDP is preselected and said why.
        assert "one GPU" in line and "DDP x2" in line and "FSDP x2" in line
        assert "[FSDP x2" in line and "fits only with the weights sharded" in line
        await pilot.press("g")
        assert "[one GPU" in plain(screen.query_one("#multi-gpu"))
        await pilot.press("g")
        assert "[DDP x2" in plain(screen.query_one("#multi-gpu")) and "chosen with g" in plain(screen.query_one("#multi-gpu"))
        await pilot.press("enter")
        await settle(app, pilot)
        assert type(app.screen).__name__ == "DatasetScreen"
        assert app.state.config.method == "lora" and app.state.config.distributed.mode == "ddp"
    review = LoraWizardApp(state, step="review")
    async with review.run_test(size=SIZE) as pilot:
        await settle(review, pilot)
        assert plain(review.screen.query_one("#launch-plan")).startswith("Launch: DDP (a copy per GPU) over 2 GPUs")


async def test_method_screen_with_one_gpu_says_nothing_of_multi_gpu(local_model):
    state = known_state(config=config_from_dict({"model": str(local_model)}))
    app = LoraWizardApp(state, step="method")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert plain(app.screen.query_one("#multi-gpu")) == ""
        await pilot.press("g")
        assert app.state.config.distributed.mode == "auto"


# --- Dataset ----------------------------------------------------------------------------------


async def test_dataset_preview_shows_the_format_trained_tokens_and_lengths(local_model, toy_alpaca):
    state = known_state(config=config_from_dict({"model": str(local_model), "data": {"max_length": 24}}))
    app = LoraWizardApp(state, step="dataset")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert screen.query_one("#dataset-loading").display is False
        screen.query_one("#dataset-path").value = str(toy_alpaca)
        await pilot.press("enter")
        await settle(app, pilot)
        assert "alpaca" in plain(screen.query_one("#dataset-detected"))
        assert "160 of 160 rows usable" in plain(screen.query_one("#dataset-detected"))
        previews = list(screen.query("TokenPreview"))
        assert len(previews) == 3
        for preview in previews:
            trained = [text for text, is_trained in preview.spans if is_trained]
            masked = [text for text, is_trained in preview.spans if not is_trained]
            assert trained and masked and "Reverse the word" in "".join(masked)
        assert len(app.state.token_lengths) == 160
        summary = plain(screen.query_one("#length-summary"))
        longer = sum(1 for length in app.state.token_lengths if length > 24)
        assert "160 examples counted" in summary and (f"{longer} " in summary if longer else "none" in summary)
        await pilot.press("ctrl+n")
        await settle(app, pilot)
        assert type(app.screen).__name__ == "SettingsScreen"
        assert app.state.config.data.path == str(toy_alpaca)


async def test_a_missing_dataset_file_is_a_message(local_model, tmp_path):
    state = known_state(config=config_from_dict({"model": str(local_model)}))
    app = LoraWizardApp(state, step="dataset")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.screen.query_one("#dataset-path").value = str(tmp_path / "missing.jsonl")
        await pilot.press("enter")
        await settle(app, pilot)
        assert "missing.jsonl" in error_text(app)
        assert app.screen.query_one("#dataset-loading").display is False
        assert not app.unexpected_errors
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert type(app.screen).__name__ == "DatasetScreen"


async def test_rows_in_the_wrong_shape_are_a_message(local_model, tmp_path):
    data = write_jsonl(tmp_path / "odd.jsonl", [{"question_text": q, "reply": a} for q, a in toy_pairs(5)])
    state = known_state(config=config_from_dict({"model": str(local_model)}))
    app = LoraWizardApp(state, step="dataset")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.screen.query_one("#dataset-path").value = str(data)
        await pilot.press("enter")
        await settle(app, pilot)
        assert "cannot tell the dataset's format" in error_text(app)


# --- Settings ---------------------------------------------------------------------------------


def settings_state(model: Path, data: Path, runs_root: Path) -> WizardState:
    config = config_from_dict({"model": str(model), "method": "lora", "data": {"path": str(data)}})
    return known_state(config=config, runs_root=runs_root,
                       model_info=ModelInfo(id=str(model), source="local", architecture="LlamaForCausalLM"))


def setting_input(app, key: str):
    field = next(field for field in app.screen.query("SettingField") if field.key == key)
    return field, field.query_one(".setting-input")


async def test_an_invalid_setting_shows_the_error_under_its_field_as_you_type(local_model, toy_alpaca, runs_root):
    app = LoraWizardApp(settings_state(local_model, toy_alpaca, runs_root), step="settings")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert setting_input(app, "output_dir")[1].value == str(runs_root / f"{local_model.name}-lora")
        field, box = setting_input(app, "train.lr")
        box.focus()
        box.value = ""
        await pilot.press(*"abc")
        await pilot.pause()
        error = plain(field.query_one(".setting-error"))
        assert "train.lr" in error and "abc" in error
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert type(app.screen).__name__ == "SettingsScreen"
        box.value = "1e-4"
        await pilot.pause()
        assert not field.query_one(".setting-error").display
        field, box = setting_input(app, "lora.r")
        box.value = "0"
        await pilot.pause()
        assert "lora.r must be a positive integer" in plain(field.query_one(".setting-error"))
        box.value = "8"
        await pilot.pause()
        await pilot.press("ctrl+n")
        await settle(app, pilot)
        assert type(app.screen).__name__ == "ReviewScreen"
        assert app.state.config.train.lr == 1e-4 and app.state.config.lora.r == 8


async def test_an_invalid_advanced_setting_opens_the_advanced_section(local_model, toy_alpaca, runs_root):
    app = LoraWizardApp(settings_state(local_model, toy_alpaca, runs_root), step="settings")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        advanced = app.screen.query_one("#advanced")
        assert advanced.collapsed
        field, box = setting_input(app, "lora.dropout")
        box.value = "1.5"
        await pilot.pause()
        assert "lora.dropout must be in [0, 1)" in plain(field.query_one(".setting-error"))
        assert not advanced.collapsed


async def test_a_cross_field_error_lands_under_the_field_it_names(local_model, toy_alpaca, runs_root):
    app = LoraWizardApp(settings_state(local_model, toy_alpaca, runs_root), step="settings")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        epochs, epochs_box = setting_input(app, "train.epochs")
        epochs_box.value = "0"
        await pilot.pause()
        assert "train.epochs must be positive" in plain(epochs.query_one(".setting-error"))
        steps, steps_box = setting_input(app, "train.max_steps")
        steps_box.value = "50"
        await pilot.pause()
        assert not epochs.query_one(".setting-error").display


# --- Review -----------------------------------------------------------------------------------


def review_state(model: Path, data: Path, output_dir: Path) -> WizardState:
    config = config_from_dict({"model": str(model), "method": "lora",
                               "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
                               "data": {"path": str(data), "max_length": 64, "eval_fraction": 0.0},
                               "train": {"max_steps": 2, "batch_size": 4, "grad_accum": 1, "save_steps": 1},
                               "output_dir": str(output_dir)})
    return known_state(config=config)


async def test_review_shows_the_config_where_it_goes_and_the_command(local_model, toy_alpaca, runs_root):
    output_dir = runs_root / "my-run"
    app = LoraWizardApp(review_state(local_model, toy_alpaca, output_dir), step="review")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert f"{output_dir}/config.yaml" in plain(screen.query_one("#config-path"))
        assert plain(screen.query_one("#train-command")) == f"Repeat this run headless: lora-wizard train {output_dir}/config.yaml"
        assert screen.shown_yaml == app.state.config.to_yaml()
        shown = plain(screen.query_one("#config-yaml"))
        assert "method: lora" in shown and f"output_dir: {output_dir}" in shown


async def test_review_refuses_to_start_over_a_previous_run(local_model, toy_alpaca, runs_root):
    output_dir = runs_root / "taken"
    output_dir.mkdir(parents=True)
    EventWriter(output_dir).write("started")
    app = LoraWizardApp(review_state(local_model, toy_alpaca, output_dir), step="review")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert "already holds a run" in error_text(app)
        assert type(app.screen).__name__ == "ReviewScreen"
        assert not app.screen.query_one("#next-button").disabled


async def test_start_writes_the_config_starts_the_trainer_and_opens_the_run(local_model, toy_alpaca, runs_root):
    from core.config import load_config
    from core.runs import cancel_run, run_state

    output_dir = runs_root / "started"
    app = LoraWizardApp(review_state(local_model, toy_alpaca, output_dir), step="review")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.click("#next-button")
            # Not settle(): the live screen's worker follows the run until it ends.
            for _ in range(150):
                if type(app.screen).__name__ != "ReviewScreen":
                    break
                await pilot.pause(0.2)
            assert type(app.screen).__name__ in ("TrainingScreen", "RunNoteScreen")
            assert load_config(output_dir / "config.yaml") == app.state.config
            assert (output_dir / "status.json").exists()
    finally:
        cancel_run(output_dir)
        deadline = time.time() + 60
        while run_state(output_dir) == "running" and time.time() < deadline:
            time.sleep(0.5)
