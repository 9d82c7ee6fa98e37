#!/usr/bin/env bash
# Create .venv and install plasticollapse, with the extras named by $EXTRAS (comma-separated;
# `make setup` and `make test` pass EXTRAS=dev, `make install` and `make demo` none).
#
# torch is chosen deliberately, because a plain `pip install torch` pulls a multi-GB CUDA build:
#   - a torch already importable by $PYTHON (yours, GPU or not) is kept: the venv sees it;
#   - else, on a machine with an NVIDIA driver (nvidia-smi), PyPI's default (CUDA) torch;
#   - else the CPU build of torch $TORCH_VERSION (PyTorch's CPU wheel index, or a local wheel
#     that pip's find-links already knows).
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS-dev}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "setup: keeping the torch of $PYTHON ($("$PYTHON" -c 'import torch; print(torch.__version__)'))"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
    torch_spec=""
elif command -v nvidia-smi >/dev/null 2>&1; then
    echo "setup: NVIDIA driver found; installing PyPI's CUDA build of torch"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    torch_spec="torch>=2.1"
else
    echo "setup: no GPU found; installing the CPU build of torch $TORCH_VERSION"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    torch_spec="torch==$TORCH_VERSION"
fi

PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)
if [ -n "$torch_spec" ] && ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    if [ "$torch_spec" = "torch==$TORCH_VERSION" ]; then
        # --extra-index-url: the CPU wheel (2.x.y+cpu) outranks PyPI's CUDA one for the same version.
        "${PIP[@]}" --retries 1 --extra-index-url "$TORCH_CPU_INDEX" "$torch_spec"
    else
        "${PIP[@]}" "$torch_spec"
    fi
fi
"${PIP[@]}" -e ".${EXTRAS:+[$EXTRAS]}"
"$VENV/bin/python" -c "import torch, plasticollapse; print('setup: plasticollapse', plasticollapse.__version__, 'with torch', torch.__version__, '(cuda)' if torch.cuda.is_available() else '(cpu)')"
