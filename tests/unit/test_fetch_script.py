"""scripts/fetch_offline_data.sh must never download when the data is already there."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fetch_offline_data.sh"


def test_fetch_is_a_no_op_when_files_are_present(mnist_root, tmp_path):
    root = tmp_path / "data"
    for name in ("MNIST", "FashionMNIST"):
        shutil.copytree(Path(mnist_root) / name / "raw", root / name / "raw")
    # No npm or apt-get on PATH: any attempt to download would fail the script.
    env = {**os.environ, "PATH": f"{tmp_path / 'empty'}:/usr/bin:/bin"}
    (tmp_path / "empty").mkdir()
    for tool in ("npm", "apt-get"):
        fake = tmp_path / "empty" / tool
        fake.write_text("#!/bin/sh\necho 'download attempted' >&2\nexit 99\n")
        fake.chmod(0o755)
    start = time.perf_counter()
    out = subprocess.run(["bash", str(SCRIPT), str(root)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "download attempted" not in out.stderr
    assert "already present" in out.stdout
    assert time.perf_counter() - start < 5
