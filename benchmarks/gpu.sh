#!/usr/bin/env bash
# The prepared GPU benchmark (benchmarks/bench_gpu.py): PreAct ResNet-18 PGD-10 adversarial-training
# images/s in fp32, bf16, bf16 + channels_last, + torch.compile, one WideResNet-34-10 row and the data
# pipeline, on synthetic CIFAR-shaped data; under 5 minutes on one GPU. Writes benchmarks/results/gpu.json.
#   bash benchmarks/gpu.sh                      # on a CUDA machine
#   bash benchmarks/gpu.sh --tiny --device cpu  # smoke test on a CPU (the test suite runs it)
# Uses .venv/bin/python when it exists (else $PYTHON or python3) with the repository on PYTHONPATH, so it
# also runs from a plain checkout on a machine whose python already has torch and lightning.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" "$root/benchmarks/bench_gpu.py" "$@"
