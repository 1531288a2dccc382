"""The token layer of core.hub against real keyring backends.

- A real Secret Service (gnome-keyring on a private D-Bus session): run the suite under
  `.ci/keyring-session.sh` (CI does); those tests skip elsewhere so they never touch a
  developer's own keyring. One test starts its own throwaway session through the wrapper.
- No backend at all, as on a bare SSH server: subprocesses with no session bus and a fresh HOME,
  or keyring's "fail"/"null" backends.
- A keyring that never answers: BlockingKeyring below, a keyring backend plugin selected with
  PYTHON_KEYRING_BACKEND=test_keyring.BlockingKeyring in a subprocess.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jaraco.classes import properties
from keyring.backend import KeyringBackend

from core import hub
from core.errors import HubError, UserError

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / ".ci" / "keyring-session.sh"

IN_THROWAWAY_KEYRING = os.environ.get("LORA_WIZARD_TEST_KEYRING") == "1" and bool(
    os.environ.get("DBUS_SESSION_BUS_ADDRESS"))
NO_SECRET_SERVICE = ("needs a throwaway Secret Service: run under .ci/keyring-session.sh "
                     "(Debian packages: dbus gnome-keyring), which CI does")


@pytest.fixture
def secret_service():
    """Skips without the wrapper's throwaway Secret Service; fails instead on CI, where skipping would hide it."""
    if not IN_THROWAWAY_KEYRING:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI must run the test suite under .ci/keyring-session.sh so the real keyring is tested")
        pytest.skip(NO_SECRET_SERVICE)


needs_secret_service = pytest.mark.usefixtures("secret_service")


class BlockingKeyring(KeyringBackend):
    """A locked keyring waiting on an unlock prompt nobody sees: its first call takes
    LORA_WIZARD_TEST_KEYRING_DELAY seconds (someone unlocks it then), later calls answer at once."""

    unlocked = False

    @properties.classproperty
    def priority(cls) -> float:
        # Viable only when chosen by name: otherwise keyring would chain it behind the real
        # Secret Service in this very process and ask it whenever that one has no entry.
        if not os.environ.get("PYTHON_KEYRING_BACKEND", "").endswith(".BlockingKeyring"):
            raise RuntimeError("BlockingKeyring is only used when PYTHON_KEYRING_BACKEND names it")
        return 1

    def _wait(self) -> None:
        if not BlockingKeyring.unlocked:
            time.sleep(float(os.environ.get("LORA_WIZARD_TEST_KEYRING_DELAY", "120")))
            BlockingKeyring.unlocked = True

    def get_password(self, service, username):
        self._wait()
        return None

    def set_password(self, service, username, password):
        self._wait()

    def delete_password(self, service, username):
        self._wait()


# --- helpers ------------------------------------------------------------------------------


def bare_environment(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh login on a server with no desktop: no session bus, empty HOME."""
    dropped = ("DBUS_SESSION_BUS_ADDRESS", "PYTHON_KEYRING_BACKEND", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
               "LORA_WIZARD_TEST_KEYRING", "XDG_RUNTIME_DIR", "HF_HOME", "HF_TOKEN_PATH", "GNOME_KEYRING_CONTROL")
    env = {name: value for name, value in os.environ.items() if name not in dropped}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent)]),
    )
    env.update(extra)
    return env


def run_python(code: str, env: dict[str, str], cwd: Path, stdin: str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def files_containing(root: Path, secret: str) -> list[Path]:
    needle = secret.encode()
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


@pytest.fixture
def token_sources(tmp_path, monkeypatch, session_token_cleared):
    """No HF_TOKEN and an `hf auth login` token file path that starts empty; returns that path."""
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    token_file = tmp_path / "hf-home" / "token"
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
    return token_file


# --- the module stays cheap ---------------------------------------------------------------


def test_importing_core_hub_loads_neither_keyring_nor_huggingface_hub(tmp_path):
    result = run_python("import sys, core.hub; print(sorted(m for m in ('keyring', 'huggingface_hub', 'textual') "
                        "if m in sys.modules))", bare_environment(tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- a real Secret Service ----------------------------------------------------------------


@needs_secret_service
def test_the_test_sessions_keyring_is_the_secret_service_alone():
    """No test's keyring backend may join keyring's automatic chain: every KeyringBackend subclass a test
    module defines is registered when pytest imports it, and a viable one would be asked whenever the
    Secret Service has no entry (a blocking one made reads of a missing token wait 30 s in CI)."""
    from keyring.backend import get_all_keyring

    collected = {type(backend).__module__ + "." + type(backend).__name__ for backend in get_all_keyring()}
    assert not {name for name in collected if name.startswith(("tests.", "test_"))}, collected


@needs_secret_service
def test_round_trip_in_the_real_secret_service(token_sources):
    token = "hf_RealSecretServiceRoundTrip0001"
    available, reason = hub.keyring_available()
    assert available, reason
    assert "SecretService" in reason

    assert hub.store_token(token) == "keyring"
    assert hub.get_token() == (token, "keyring")
    # The documented entry, readable with the OS's own tool.
    if shutil.which("secret-tool"):
        looked_up = subprocess.run(["secret-tool", "lookup", "service", hub.KEYRING_SERVICE,
                                    "username", hub.KEYRING_USERNAME], capture_output=True, text=True, timeout=30)
        assert looked_up.stdout.strip() == token
    # gnome-keyring encrypts its files: the token is nowhere in plaintext under HOME.
    assert files_containing(Path.home(), token) == []

    assert hub.delete_token() is True
    assert hub.get_token() == (None, None)
    assert hub.delete_token() is False


@needs_secret_service
def test_hf_token_in_the_environment_wins_over_the_keyring(token_sources, monkeypatch):
    hub.store_token("hf_StoredInTheKeyring000000000001")
    try:
        monkeypatch.setenv("HF_TOKEN", "hf_FromTheEnvironment00000000001")
        assert hub.get_token() == ("hf_FromTheEnvironment00000000001", "env")
        monkeypatch.delenv("HF_TOKEN")
        assert hub.get_token() == ("hf_StoredInTheKeyring000000000001", "keyring")
    finally:
        hub.delete_token()


@needs_secret_service
def test_login_validates_and_stores_in_the_keyring(fake_hub, token_sources, capsys):
    token = fake_hub.add_token("alice")
    assert hub.login_command(argparse.Namespace(token=token, logout=False)) == 0
    output = capsys.readouterr()
    assert output.out.strip() == "Logged in as alice; token stored in the OS keyring (service lora-wizard)."
    assert token not in output.out + output.err
    assert hub.get_token() == (token, "keyring")

    assert hub.login_command(argparse.Namespace(token=None, logout=True)) == 0
    assert "Removed the token from the OS keyring." in capsys.readouterr().out
    assert hub.get_token() == (None, None)


@needs_secret_service
def test_login_reads_a_piped_token(fake_hub, token_sources, monkeypatch, capsys):
    token = fake_hub.add_token("bob")
    monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
    try:
        assert hub.login_command(argparse.Namespace(token=None, logout=False)) == 0
        assert hub.get_token() == (token, "keyring")
        assert token not in capsys.readouterr().out
    finally:
        hub.delete_token()


@needs_secret_service
def test_login_with_a_refused_token_stores_nothing(fake_hub, token_sources):
    token = "hf_RevokedLongAgo0000000000000001"
    with pytest.raises(HubError, match="token was refused") as refused:
        hub.login_command(argparse.Namespace(token=token, logout=False))
    assert token not in str(refused.value)
    assert hub.get_token() == (None, None)


@needs_secret_service
def test_cli_login_in_a_subprocess_reaches_the_fake_hub_and_the_shared_keyring(fake_hub, token_sources, tmp_path):
    """`lora-wizard login` as a user runs it: a new process, the token piped in, HF_ENDPOINT from the fixture."""
    token = fake_hub.add_token("carol")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        result = run_python("import sys; from core.cli import main; sys.exit(main(['login']))", env, cwd=tmp_path,
                            stdin=token + "\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "Logged in as carol; token stored in the OS keyring (service lora-wizard)."
        assert token not in result.stdout + result.stderr
        assert any(request["path"] == "/api/whoami-v2" for request in fake_hub.requests)
        # Stored by the other process, found by this one: it is in the Secret Service, not in memory.
        assert hub.get_token() == (token, "keyring")
    finally:
        hub.delete_token()


@pytest.mark.skipif(not (shutil.which("dbus-run-session") and shutil.which("gnome-keyring-daemon")),
                    reason="needs the Debian packages dbus and gnome-keyring for .ci/keyring-session.sh")
def test_the_wrapper_gives_a_child_a_working_secret_service(tmp_path):
    """What CI relies on: the wrapper's throwaway keyring works, and is gone afterwards."""
    code = (
        "import json, os; from core import hub\n"
        "available, reason = hub.keyring_available()\n"
        "stored = hub.store_token('hf_WrapperSmokeTest00000000001')\n"
        "print(json.dumps({'available': available, 'reason': reason, 'stored': stored, "
        "'source': hub.get_token()[1], 'home': os.environ['HOME'], 'marker': os.environ.get('LORA_WIZARD_TEST_KEYRING')}))\n"
    )
    env = bare_environment(tmp_path)
    result = subprocess.run([str(WRAPPER), sys.executable, "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["available"] is True, report["reason"]
    assert report["stored"] == "keyring" and report["source"] == "keyring"
    assert report["marker"] == "1"
    assert report["home"] != str(tmp_path) and not Path(report["home"]).exists()


def test_the_wrapper_passes_the_exit_status_through(tmp_path):
    if not (shutil.which("dbus-run-session") and shutil.which("gnome-keyring-daemon")):
        pytest.skip("needs the Debian packages dbus and gnome-keyring for .ci/keyring-session.sh")
    result = subprocess.run([str(WRAPPER), "sh", "-c", "exit 3"], env=bare_environment(tmp_path),
                            capture_output=True, timeout=120)
    assert result.returncode == 3


# --- no keyring (a bare SSH server) -------------------------------------------------------

NO_BACKEND_SCRIPT = """
import json
from core import hub
from core.errors import UserError
token = input()
report = {}
report["available"], report["reason"] = hub.keyring_available()
try:
    hub.store_token(token)
    report["stored"] = True
except UserError as error:
    report["store_error"] = [type(error).__name__, str(error)]
report["session"] = hub.store_token(token, session_only=True)
report["session_token_returned"] = hub.get_token() == (token, "session")
report["deleted"] = hub.delete_token()
report["after_delete"] = list(hub.get_token())
print(json.dumps(report))
"""


@pytest.mark.parametrize("backend", [None, "keyring.backends.fail.Keyring", "keyring.backends.null.Keyring"],
                         ids=["no-session-bus", "fail-backend", "null-backend"])
def test_without_a_keyring_the_token_lives_in_memory_only(tmp_path, backend):
    home = tmp_path / "home"
    home.mkdir()
    token = "hf_NoKeyringOnThisServer000000001"
    env = bare_environment(home, **({"PYTHON_KEYRING_BACKEND": backend} if backend else {}))
    result = run_python(NO_BACKEND_SCRIPT, env, cwd=home, stdin=token + "\n")
    assert result.returncode == 0, result.stderr
    assert token not in result.stdout + result.stderr
    report = json.loads(result.stdout)

    assert report["available"] is False
    assert "sudo apt install gnome-keyring" in report["reason"]
    assert "dbus-run-session -- sh -c 'echo -n PASSWORD | gnome-keyring-daemon --unlock; lora-wizard'" in report["reason"]
    assert report["store_error"][0] == "KeyringUnavailable"
    assert report["session"] == "session" and report["session_token_returned"] is True
    assert report["deleted"] is True and report["after_delete"] == [None, None]
    assert files_containing(tmp_path, token) == []


def test_login_without_a_keyring_refuses_to_write_a_plaintext_file(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    token = "hf_WouldBeWrittenInPlaintext00001"
    result = run_python("import sys; from core.cli import main; sys.exit(main(['login']))",
                        bare_environment(home), cwd=home, stdin=token + "\n")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lora-wizard: No usable OS keyring here")
    assert "plaintext" in lines[0]
    assert token not in result.stderr
    assert files_containing(tmp_path, token) == []


def test_login_without_a_keyring_does_not_ask_the_hub(fake_hub, no_keyring, token_sources):
    token = fake_hub.add_token("alice")
    with pytest.raises(hub.KeyringUnavailable, match="does not write tokens to plaintext files"):
        hub.login_command(argparse.Namespace(token=token, logout=False))
    assert fake_hub.requests == []


def test_store_refuses_an_empty_token(no_keyring, token_sources):
    with pytest.raises(UserError, match="empty"):
        hub.store_token("  \n")


# --- other token sources ------------------------------------------------------------------


def test_hf_token_from_the_environment_comes_first(no_keyring, token_sources, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", " hf_FromTheEnvironment00000000002\n")
    hub.store_token("hf_SessionToken000000000000000002", session_only=True)
    assert hub.get_token() == ("hf_FromTheEnvironment00000000002", "env")


def test_the_hf_cli_token_file_is_read_but_never_written(no_keyring, token_sources):
    token_sources.parent.mkdir(parents=True)
    token_sources.write_text("hf_FromHfAuthLogin000000000000003\n")
    before = token_sources.stat()
    assert hub.get_token() == ("hf_FromHfAuthLogin000000000000003", "hf-cli")

    hub.store_token("hf_SessionToken000000000000000003", session_only=True)
    assert hub.get_token() == ("hf_SessionToken000000000000000003", "session")
    hub.delete_token()
    assert hub.get_token() == ("hf_FromHfAuthLogin000000000000003", "hf-cli")
    after = token_sources.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)


def test_no_token_anywhere(no_keyring, token_sources):
    assert hub.get_token() == (None, None)


# --- a keyring that never answers ------------------------------------------------------------

TIMEOUT_SCRIPT = """
import json, time
from core import hub
report = {}
started = time.monotonic()
try:
    hub.store_token("hf_NeverStoredBecauseItHangs00001")
    report["first"] = "stored"
except hub.KeyringTimeout as error:
    report["first"] = str(error)
report["first_seconds"] = time.monotonic() - started
started = time.monotonic()
try:
    hub.get_token()
    report["second"] = "answered"
except hub.KeyringTimeout:
    report["second"] = "timeout"
report["second_seconds"] = time.monotonic() - started
print(json.dumps(report), flush=True)
"""


def test_a_keyring_that_never_answers_times_out_with_advice(tmp_path):
    env = bare_environment(tmp_path, PYTHON_KEYRING_BACKEND="test_keyring.BlockingKeyring",
                           LORA_WIZARD_KEYRING_TIMEOUT="1", LORA_WIZARD_TEST_KEYRING_DELAY="600")
    started = time.monotonic()
    result = run_python(TIMEOUT_SCRIPT, env, cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    assert report["first"].startswith("The OS keyring did not answer within 1 s when asked to store the token in it")
    assert "gnome-keyring-daemon --unlock" in report["first"] and "HF_TOKEN" in report["first"]
    assert "hf_NeverStoredBecauseItHangs00001" not in result.stdout + result.stderr
    assert 0.9 <= report["first_seconds"] < 5
    # While the first call still waits, the next fails at once instead of queueing behind it.
    assert report["second"] == "timeout" and report["second_seconds"] < 0.5
    # The stuck call is a daemon thread: it does not keep the process alive.
    assert elapsed < 30


def test_the_keyring_works_again_once_it_answers(tmp_path):
    code = TIMEOUT_SCRIPT.replace("started = time.monotonic()\ntry:\n    hub.get_token()",
                                  "time.sleep(2.5)\nstarted = time.monotonic()\ntry:\n    hub.get_token()")
    env = bare_environment(tmp_path, PYTHON_KEYRING_BACKEND="test_keyring.BlockingKeyring",
                           LORA_WIZARD_KEYRING_TIMEOUT="1", LORA_WIZARD_TEST_KEYRING_DELAY="1.5")
    result = run_python(code, env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["first"].startswith("The OS keyring did not answer")
    # The keyring was unlocked while the first call waited: reading works again.
    assert report["second"] == "answered" and report["second_seconds"] < 0.5
