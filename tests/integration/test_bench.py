"""``make bench``'s harness (benchmarks/bench.py) in its quick mode: the table and the JSON come out with a
ratio, a target, a verdict and, for a miss, what limits it (the numbers of a quick run mean nothing)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_quick_writes_the_table_and_json(tmp_path, mnist_root):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench.py",
            "--quick",
            "--only",
            "attacks",
            "--data_dir",
            mnist_root,
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    names = [r["name"] for r in rows]
    assert any(n.startswith("PGD-10 / limit, keep_best off (demo CNN") for n in names)
    assert any(n.startswith("our PGD-10 / torchattacks' PGD-10") for n in names)
    assert any(n.startswith("our APGD-CE / official APGD-CE") for n in names)
    for r in rows:
        assert r["value"] > 0 or r["unit"] == " fwd"  # a difference of costs may come out < 0
        assert r["peak_rss_mib"] > 0
        assert r["pass"] is None or r["pass"] == (r["value"] <= r["target"])
        assert r["pass"] is not False or r["limit"]  # a miss says what limits it
    assert result["machine"]["cores"] and result["machine"]["quick"] is True
    table = out.with_suffix(".md").read_text()
    assert "| section | measurement | value | target | pass |" in table and "--quick" in table
