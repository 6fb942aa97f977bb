"""The prepared GPU benchmark runs end to end on a CPU in its tiny mode (``benchmarks/gpu.sh --tiny
--device cpu``): every row trains through the real pipeline and the JSON and table come out."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_benchmark_tiny_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), "--tiny", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    variants = [(r["net"], r["variant"]) for r in result["rows"]]
    assert variants == [
        ("PreActResNet-18", "fp32"),
        ("PreActResNet-18", "bf16"),
        ("PreActResNet-18", "bf16 + channels_last"),
        ("PreActResNet-18", "bf16 + channels_last + compile"),
        ("WideResNet-34-10", "bf16 + channels_last"),
        ("data pipeline", "CIFAR10 loader + transfer + crop/flip"),
    ]
    assert all(r["images_per_s"] > 0 and r["peak_memory_mib"] > 0 for r in result["rows"])
    assert result["tiny"] and result["batch"] == 8 and result["loader_over_fastest_training"] > 1
    assert "| PreActResNet-18 | bf16 + channels_last + compile |" in proc.stdout
    assert "data pipeline / fastest PGD-10 training row" in proc.stdout
