#!/usr/bin/env bash
# Creates .venv with collm-nas and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# The CPU build first: any other torch spec pulls several GB of CUDA packages.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "collm-nas installed in .venv ($(.venv/bin/collm-nas --help >/dev/null && echo ok))"
