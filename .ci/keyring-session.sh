#!/bin/sh
# Runs a command with a real, throwaway Secret Service, so `keyring` uses its SecretService
# backend exactly as on a desktop, without touching anyone's real keyring:
#
#   .ci/keyring-session.sh python -m pytest -q
#
# It starts a private D-Bus session bus (dbus-run-session) and gnome-keyring-daemon's secrets
# component in it, unlocked with a throwaway password, under a fresh HOME and XDG folders in a
# temporary directory that is removed afterwards. The command's exit status is returned.
# LORA_WIZARD_TEST_KEYRING=1 tells the tests they may write to this keyring.
#
# Debian/Ubuntu packages: dbus (dbus-run-session, dbus-send) and gnome-keyring;
# libsecret-tools (secret-tool) is optional, for looking inside the keyring by hand.
set -eu

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 64
fi
for tool in dbus-run-session dbus-send gnome-keyring-daemon; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "keyring-session: $tool not found; install it with: sudo apt-get install -y dbus gnome-keyring" >&2
        exit 69
    fi
done

session_dir=$(mktemp -d "${TMPDIR:-/tmp}/lora-wizard-keyring.XXXXXX")
trap 'rm -rf "$session_dir"' EXIT INT TERM
mkdir -p "$session_dir/home" "$session_dir/runtime"
chmod 700 "$session_dir/runtime"

# A fresh HOME and XDG folders: the keyring files land here, and a desktop's own keyring daemon
# (found through XDG_RUNTIME_DIR) is never reached.
export HOME="$session_dir/home"
export XDG_RUNTIME_DIR="$session_dir/runtime"
export XDG_DATA_HOME="$HOME/.local/share"
export XDG_CONFIG_HOME="$HOME/.config"
export XDG_CACHE_HOME="$HOME/.cache"
unset GNOME_KEYRING_CONTROL SSH_AUTH_SOCK PYTHON_KEYRING_BACKEND DBUS_SESSION_BUS_ADDRESS
export LORA_WIZARD_TEST_KEYRING=1

status=0
# shellcheck disable=SC2016  # expanded by the inner shell, inside the new bus
dbus-run-session -- sh -c '
    set -eu
    # The first unlock creates the "login" collection with this password; keyring writes there.
    printf %s "throwaway-test-password" | gnome-keyring-daemon --unlock --components=secrets >/dev/null
    tries=0
    until dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
            org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q "boolean true"; do
        tries=$((tries + 1))
        if [ "$tries" -gt 50 ]; then
            echo "keyring-session: gnome-keyring-daemon did not start its Secret Service" >&2
            exit 70
        fi
        sleep 0.1
    done
    "$@"
' keyring-session "$@" || status=$?
exit "$status"
