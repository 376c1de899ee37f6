#!/usr/bin/env bash
# Builds .venv-peers: the peer libraries (RecBole, implicit) on CPU torch, beside our package, so
# that til-jax itself never depends on torch. Then: python -m benchmarks.run --suite=peers --out=F.json
# (run.py re-runs itself under .venv-peers/bin/python when the current interpreter lacks the peers).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-peers
# torch first and pinned: 2.13.0 has a CPU wheel on local disk; other versions are multi-GB CUDA builds.
.venv-peers/bin/pip install torch==2.13.0
.venv-peers/bin/pip install recbole==1.2.1 implicit
.venv-peers/bin/pip install -e '.[bench,test]'
