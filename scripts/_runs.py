"""Shared by the reproduction scripts: run ``python -m lit_robust`` in-process, printing each command,
and record finished fits/evaluations as JSON so that a second call reuses them."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shlex
import time
from pathlib import Path

import torch

from lit_robust.checkpoint import read_checkpoint
from lit_robust.cli import main
from lit_robust.resume import run_of


def script_args(
    doc: str, choose: str, choices: list[str], out_dir: str, default: list[str] | None = None
) -> argparse.Namespace:
    """The reproduction scripts' options: ``--data_dir``, ``--test_subset`` (evaluated test images),
    ``--<choose>`` (which runs, default ``default`` or all of ``choices``), ``--out_dir`` (created) and
    ``--fit_only``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--test_subset", type=int, default=200)
    parser.add_argument(f"--{choose}", nargs="+", default=list(default or choices), choices=list(choices))
    parser.add_argument("--out_dir", default=out_dir)
    parser.add_argument("--fit_only", action="store_true", help="train (and record) only; no evaluation")
    args = parser.parse_args()
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    return args


def cli(args: list[str]):
    """Run ``python -m lit_robust ARGS`` in this process (after printing the command)."""
    print(f"\n$ python -m lit_robust {shlex.join(args)}", flush=True)
    return main(args)


def fit_once(record: Path, args: list[str], name: str) -> dict:
    """``fit`` with ``args`` unless ``record`` names an existing checkpoint, then :func:`export_once`;
    returns the record: ``ckpt`` (best on validation), ``last`` (last epoch), ``log_dir``, ``minutes``,
    ``export`` and ``export_sha256``."""
    fit = json.loads(record.read_text()) if record.is_file() else None
    if fit is not None and Path(fit["ckpt"]).is_file():
        print(f"\n{name}: reusing {fit['ckpt']} (delete {record} to retrain)", flush=True)
        return export_once(fit, record)
    start = time.perf_counter()
    trainer = cli(["fit", *args]).trainer
    ckpt = trainer.checkpoint_callback
    fit = {
        "ckpt": ckpt.best_model_path,
        "last": str(Path(ckpt.best_model_path).with_name("last.ckpt")),
        "log_dir": trainer.log_dir,
        "minutes": (time.perf_counter() - start) / 60,
    }
    record.write_text(json.dumps(fit))
    return export_once(fit, record)


def export_once(fit: dict, record: Path) -> dict:
    """``export --ckpt_path <fit's best checkpoint>`` into the run's ``export/`` folder (out of git, like the
    checkpoint) when the checkpoint is here; the export's path and its weights file's SHA-256 go into the
    fit ``record`` (a refit writes the same ``model.safetensors`` only where it reached the same weights:
    the record's digest says whether it did).
    A digest that differs from the recorded one is said, and kept."""
    if not Path(fit["ckpt"]).is_file():
        return fit
    folder = (run_of(fit["ckpt"]) or Path(fit["ckpt"]).parent) / "export"
    cli(["export", f"--ckpt_path={fit['ckpt']}", f"--output_dir={folder}"])
    exported = {"export": str(folder), "export_sha256": digest(str(folder / "model.safetensors"))}
    if fit.get("export_sha256") not in (None, exported["export_sha256"]):
        print(f"\n{record}: the new export's weights differ from the recorded export's", flush=True)
    if {k: fit.get(k) for k in exported} != exported:
        fit = {**fit, **exported}
        record.write_text(json.dumps(fit, indent=1))
    return fit


def digest(path: str) -> str:
    """SHA-256 of a file: identifies a checkpoint's contents (a re-trained run may reuse its path)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def val_curve(log_dir: str, columns: dict[str, str]) -> list[dict]:
    """Per validated epoch of the CSV log in ``log_dir``: ``{"epoch": e, name: value}`` for each
    ``name: metric`` of ``columns`` (an epoch logged twice, by a killed and its resumed run, counts once)."""
    metrics = Path(log_dir) / "metrics.csv"
    if not metrics.is_file():
        return []
    with metrics.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if all(r.get(m) for m in columns.values())]
    by_epoch = {int(r["epoch"]): {k: float(r[m]) for k, m in columns.items()} for r in rows}
    return [{"epoch": e, **by_epoch[e]} for e in sorted(by_epoch)]


def weights_digest(path: str) -> str:
    """SHA-256 of a checkpoint's ``state_dict`` (names, dtypes, shapes and bytes, in name order): equal for
    two fits that reached the same weights, whatever else their files hold (paths, times, loop state), so a
    refit on a fresh machine that reproduced them is recognised as the model that earlier records evaluated.
    Fits are bit-exact on machines that run the same CPU kernels (``machine()["capability"]``): an AVX2 and
    an AVX-512 machine round differently from the first step on."""
    h = hashlib.sha256()
    for name, value in sorted(read_checkpoint(path)["state_dict"].items()):
        tensor = value.detach().cpu().contiguous()
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


def evaluate_once(dest: Path, args: list[str], ckpt: str, n_samples: int, name: str) -> dict:
    """``evaluate --ckpt_path ckpt`` with ``args`` unless ``dest`` holds a report of the same checkpoint
    contents (SHA-256, not only its path) and sample count; returns ``{"report": <the evaluate JSON>,
    "eval_minutes": ...}`` (also in ``dest``, with the Markdown table next to it as
    ``dest.with_suffix('.md')``)."""
    done = json.loads(dest.read_text()) if dest.is_file() else None
    if (
        done
        and done["report"]["meta"]["ckpt_path"] == ckpt
        and done["report"]["meta"]["n_samples"] == n_samples
        and done.get("ckpt_sha256") == digest(ckpt)
    ):
        print(f"\n{name}: reusing the evaluation in {dest}", flush=True)
        return done
    start = time.perf_counter()
    out_dir = dest.parent
    cli(["evaluate", *args, f"--ckpt_path={ckpt}", f"--output_dir={out_dir}"])
    stem = f"eval_{Path(ckpt).stem}"
    report = json.loads((out_dir / f"{stem}.json").read_text())
    (out_dir / f"{stem}.json").unlink()
    (out_dir / f"{stem}.md").rename(dest.with_suffix(".md"))
    done = {
        "report": report,
        "eval_minutes": (time.perf_counter() - start) / 60,
        "ckpt_sha256": digest(ckpt),
    }
    dest.write_text(json.dumps(done, indent=1))
    return done


#: The CPU kernels every fit and evaluation of the long runs use: torch's own (ATen), oneDNN's (convolutions)
#: and MKL's (matrix products, with conditional numerical reproducibility) capped at AVX2, which every x86
#: machine we run on has. On an AVX2 machine this changes nothing (a 12-step BETA-AT fit: the same weights
#: with and without); an AVX-512 machine would otherwise round differently from the first step.
KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}


def kernel_env() -> dict[str, str]:
    """``KERNELS`` where this machine has AVX2 or more (else nothing: its own kernels), the caller's own
    setting of any of them kept."""
    if not torch.backends.cpu.get_cpu_capability().startswith(("AVX2", "AVX512")):
        return {}
    return {k: os.environ.get(k, v) for k, v in KERNELS.items()}


def machine() -> dict:
    """What decides whether a fit's floats repeat on another machine: the CPU, torch's kernel set for it
    (``torch.backends.cpu.get_cpu_capability()``: "AVX2", "AVX512", ...), the intra-op threads and torch."""
    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "unknown"
    )
    return {
        "cpu": model,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "pinned": kernel_env(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _cpuinfo() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.is_file() else []


def same_model(script: dict, fit: dict) -> bool:
    """Whether a report's ``script`` record (``mnist_long.model_id``) names the model of ``fit``: the same
    weights (a refit that reproduced them included) or, for records written before weights were digested,
    the same checkpoint file."""
    if "weights_sha256" in script and "weights_sha256" in fit:
        return script["weights_sha256"] == fit["weights_sha256"]
    return script.get("ckpt_sha256") == fit.get("ckpt_sha256")
