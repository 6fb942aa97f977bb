"""MNIST at L_inf eps 0.3, trained as long as 2 CPU cores allow (about 90 minutes per method): PGD-AT,
TRADES and BETA-AT (configs/mnist_{method}_cpu.yaml), then the official AutoAttack and our attacks on all
10,000 test images, for docs/results.md.

Each fit is killed once (SIGKILL) in the middle of the run and continued with ``--ckpt_path last``; every
metric that both the killed and the resumed process logged for the same step (the training steps the kill
lost and the resumed run did again) is compared exactly and the count goes into the record. A fit the script
did not see end (the session ended) is continued from its ``last.ckpt`` by the next start. The test set is
evaluated in chunks of ``--chunk_size`` images, each its own ``evaluate --suite table`` (clean, PGD-40,
APGD-CE, BETA-10, the standard AutoAttack), so the hours of evaluation can be spread over sessions; the
finished chunks are merged (``lit_robust.evaluation.merge_reports``) once all are there. AutoAttack's
Square warning is checked on the first ``--square_check`` test images with Square alone at 4x the queries
and 2 restarts whenever AutoAttack's Square broke any point: points the stronger Square breaks that
AutoAttack left robust make the model's number suspect.

Records name the model they evaluated by two digests: the checkpoint file's and its weights' (``state_dict``
bytes), and the fit record names the machine (CPU, torch's kernel set, threads). A fresh machine has the
committed records but no checkpoint: a method whose chunks are all recorded is not trained again, and one
still missing chunks is refitted. The refit is bit-exact on the same CPU kernels (seen: two fits on one
machine; an AVX2 machine did not reproduce a fit made on another machine, from epoch 0 on): its weights'
digest matches and the finished chunks still count. Every child runs on AVX2 kernels (``_runs.KERNELS``),
meant to make an AVX-512 machine round as an AVX2 one does (not verified: no AVX-512 machine here).
Otherwise the earlier fit's records (fit, chunks, Square recheck, plots) move to
``superseded/{method}_{weights digest}/``, kept for docs/results.md, and the new model is evaluated from
image 0: chunks of two models are never merged.

    python scripts/mnist_long.py --methods trades --fit_only          # ~90 min: fit, kill, resume
    python scripts/mnist_long.py --methods trades --budget_minutes 60 # evaluate chunks for an hour
    python scripts/mnist_long.py --methods trades --jobs 2            # two chunks at once, 1 thread each
    python scripts/mnist_long.py                                      # everything still missing

Every step prints the ``python -m lit_robust`` command it runs. Records (JSON, committed) go to
``--out_dir``; checkpoints, logs and each chosen checkpoint's export (``<run>/export/model.safetensors`` and
``model.json``, its digest in the fit record) stay under ``logs/`` (not in git; rerunning the script redoes
them).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from _runs import digest, export_once, kernel_env, machine, same_model, val_curve, weights_digest

from lit_robust.checkpoint import read_checkpoint
from lit_robust.evaluation import Report, merge_reports

METHODS = {
    "pgd_at": ("PGD-AT", "configs/mnist_pgd_at_cpu.yaml"),
    "trades": ("TRADES", "configs/mnist_trades_cpu.yaml"),
    "beta_at": ("BETA-AT", "configs/mnist_beta_at_cpu.yaml"),
}
TEST_SIZE = 10_000
POLL_SECONDS = 20  # how often the fit's metrics.csv and last.ckpt are looked at before the kill
STRONG_SQUARE = (
    '{"square-4x": {"class_path": "lit_robust.attacks.AutoAttack", "init_args": '
    '{"components": ["square"], "square_queries": 20000, "square_restarts": 2}}}'
)


def lit_robust(args: list[str], log: Path | None = None, threads: int | None = None) -> subprocess.Popen:
    """Start ``python -m lit_robust ARGS`` (printed first, with the environment it sets) in its own process
    group, on the pinned CPU kernels (``_runs.kernel_env``); ``threads`` sets the child's OMP_NUM_THREADS."""
    settings = {**kernel_env(), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    env = {**os.environ, **settings}
    prefix = "".join(f"{k}={v} " for k, v in settings.items())
    print(f"\n$ {prefix}python -m lit_robust {shlex.join(args)}", flush=True)
    out = open(log, "a") if log else None  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "lit_robust", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )


def wait_ok(proc: subprocess.Popen, what: str) -> None:
    if proc.wait() != 0:
        raise SystemExit(f"{what} failed with exit status {proc.returncode}")


def read_rows(metrics_csv: Path) -> list[dict[str, str]]:
    if not metrics_csv.is_file():
        return []
    with metrics_csv.open(newline="") as f:
        return list(csv.DictReader(f))


def logged_values(rows: list[dict[str, str]], from_step: int) -> dict[tuple[int, str], str]:
    """``{(step, metric): value}`` of the non-empty cells of rows with ``step >= from_step``."""
    return {
        (int(float(r["step"])), k): v
        for r in rows
        if r.get("step") and int(float(r["step"])) >= from_step
        for k, v in r.items()
        if v not in ("", None) and k not in ("step", "epoch")
    }


def compare_logged(killed: list[dict], resumed: list[dict], from_step: int) -> tuple[list, list]:
    """The ``(step, metric)`` cells both runs logged from ``from_step`` on, and those whose values differ
    (``(step, metric, killed value, resumed value)``): a resumed run that is exact logs the same strings."""
    before, after = logged_values(killed, from_step), logged_values(resumed, from_step)
    common = sorted(set(before) & set(after))
    return common, [
        (s, k, before[(s, k)], after[(s, k)]) for s, k in common if before[(s, k)] != after[(s, k)]
    ]


def run_folder(save_dir: Path, started: float) -> Path | None:
    """The ``version_N`` folder a fit started at ``started`` created."""
    found = [p for p in save_dir.glob("version_*") if p.stat().st_mtime >= started - 1]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def fit_killed_and_resumed(key: str, config: str, out_dir: Path, kill_at: float, min_lost: int) -> dict:
    """Fit ``config``; once ``kill_at`` of the epochs are done and the run has logged ``min_lost`` steps past
    its ``last.ckpt``, SIGKILL it, continue with ``--ckpt_path last`` and compare what both logged.

    A fit this script started and did not see end (the session ended, Ctrl-C) is continued from its
    ``last.ckpt``, not started over: ``<save_dir>/{key}_fit_state.json`` (next to the runs, not in git)
    says when it started, the minutes its earlier processes ran and, once it happened, the planned kill."""
    record = out_dir / f"{key}_fit.json"
    fit = json.loads(record.read_text()) if record.is_file() else None
    if fit is not None and Path(fit["ckpt"]).is_file() and digest(fit["ckpt"]) == fit["ckpt_sha256"]:
        print(f"\n{key}: reusing {fit['ckpt']} (delete {record} to retrain)", flush=True)
        return fit
    state = FitState(config, key)
    if state.take_over_interrupted():
        kill = state.get("kill")
        print(
            f"\n{key}: continuing the fit interrupted after {state.minutes():.0f} min "
            f"({'after' if kill else 'before'} the planned kill) from {state.last_ckpt()}", flush=True
        )  # fmt: skip
        if kill is not None:
            return resume_and_compare(key, config, out_dir, state, kill)
        args = [*fit_args(config), "--ckpt_path", "last"]
    else:
        state.begin()
        args = fit_args(config)
    proc = lit_robust(args, out_dir / f"{key}_fit.log")
    kill = kill_mid_run(
        lambda: proc.poll() is None, lambda: (proc.kill(), proc.wait()), config, state, kill_at, min_lost
    )
    state.update(kill={k: v for k, v in kill.items() if k != "rows"})
    write_rows(out_dir / f"{key}_metrics_killed.csv", kill["rows"])
    return resume_and_compare(key, config, out_dir, state, kill)


class FitState:
    """What survives an interruption of one fit of ``config`` by this script: ``started`` (when its first
    process started: the run folder is the one written since), ``minutes`` (what its earlier processes
    ran, up to their last write), ``since`` (when the current process started) and ``kill``."""

    def __init__(self, config: str, key: str) -> None:
        logger = yaml.safe_load(Path(config).read_text())["trainer"]["logger"]["init_args"]
        self.save_dir = Path(logger["save_dir"]) / logger["name"]
        self.path = self.save_dir / f"{key}_fit_state.json"
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def update(self, **values: Any) -> None:
        self.data.update(values)
        self.save_dir.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1))

    def begin(self) -> None:
        now = time.time()
        self.data = {}
        self.update(started=now, since=now, minutes=0.0)

    def folder(self) -> Path | None:
        return run_folder(self.save_dir, self.data["started"]) if self.data else None

    def last_ckpt(self) -> Path | None:
        folder = self.folder()
        last = folder / "checkpoints" / "last.ckpt" if folder else None
        return last if last is not None and last.is_file() else None

    def take_over_interrupted(self) -> bool:
        """Take over a fit an earlier process ended unseen, leaving a ``last.ckpt``: add that process's
        minutes (up to its last write), count the current one from now, and return True; else False."""
        if self.last_ckpt() is None:
            return False
        last_write = max(p.stat().st_mtime for p in self.folder().rglob("*") if p.is_file())
        now = time.time()
        self.update(
            minutes=self.minutes(last_write), since=now, interruptions=self.data.get("interruptions", 0) + 1
        )
        return True

    def minutes(self, until: float | None = None) -> float:
        """Minutes this fit's processes ran: the earlier ones' and the current one's up to ``until``."""
        return (
            self.data["minutes"] + (max(until or time.time(), self.data["since"]) - self.data["since"]) / 60
        )

    def done(self) -> None:
        self.path.unlink(missing_ok=True)


def fit_args(config: str) -> list[str]:
    return ["fit", "--config", config, "--trainer.enable_progress_bar=false"]


def kill_mid_run(
    alive: Callable[[], bool],
    kill: Callable[[], object],
    config: str,
    state: FitState,
    kill_at: float,
    min_lost: int,
) -> dict:
    """Wait for the fit of ``config`` (``state``) to finish ``kill_at`` of its epochs and log ``min_lost``
    steps past its ``last.ckpt``, then ``kill`` it (SIGKILL); what the killed run had logged."""
    epochs = yaml.safe_load(Path(config).read_text())["trainer"]["max_epochs"]
    folder = None
    while True:
        time.sleep(POLL_SECONDS)
        if not alive():
            raise SystemExit(f"{config}: the fit ended before it could be killed (see its log)")
        folder = folder or state.folder()
        last = folder / "checkpoints" / "last.ckpt" if folder else None
        rows = read_rows(folder / "metrics.csv") if folder else []
        if not rows or last is None or not last.is_file():
            continue
        epoch = max(int(float(r["epoch"])) for r in rows if r.get("epoch"))
        ckpt_step = int(read_checkpoint(last, field="last.ckpt").get("global_step", 0))
        logged = max(int(float(r["step"])) for r in rows if r.get("step"))
        if epoch >= kill_at * epochs and logged - ckpt_step >= min_lost:
            kill()
            time.sleep(2)
            rows = read_rows(folder / "metrics.csv")
            print(
                f"killed the fit at epoch {epoch}, step {logged}; last.ckpt is step {ckpt_step}", flush=True
            )
            return {"folder": str(folder), "rows": rows, "at_step": logged, "ckpt_step": ckpt_step,
                    "minutes": state.minutes()}  # fmt: skip


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def resume_and_compare(key: str, config: str, out_dir: Path, state: FitState, kill: dict) -> dict:
    """Continue the killed fit with ``--ckpt_path last``; compare every value both runs logged for the steps
    after the checkpoint (the killed run's rows: ``{key}_metrics_killed.csv``); record the best checkpoint
    (``{key}_fit.json``)."""
    folder = Path(kill["folder"])
    wait_ok(
        lit_robust([*fit_args(config), "--ckpt_path", "last"], out_dir / f"{key}_fit.log"), f"{key}: resume"
    )
    killed = read_rows(out_dir / f"{key}_metrics_killed.csv")
    common, differ = compare_logged(killed, read_rows(folder / "metrics.csv"), kill["ckpt_step"])
    best = sorted((folder / "checkpoints").glob("best*.ckpt"))
    if len(best) != 1:
        raise SystemExit(f"{key}: expected one best checkpoint in {folder / 'checkpoints'}, found {best}")
    minutes = state.minutes()
    fit = {
        "ckpt": str(best[0]),
        "ckpt_sha256": digest(str(best[0])),
        "weights_sha256": weights_digest(str(best[0])),
        "log_dir": str(folder),
        "minutes": minutes,
        "killed_after_minutes": kill["minutes"],
        "resumed_minutes": minutes - kill["minutes"],
        "killed_at_step": kill["at_step"],
        "resumed_from_step": kill["ckpt_step"],
        "resume_compared_values": len(common),
        "resume_differing_values": differ[:20],
        "resume_exact": bool(common) and not differ,
        **({"interruptions": n} if (n := state.get("interruptions")) else {}),
        "machine": machine(),
    }
    (out_dir / f"{key}_fit.json").write_text(json.dumps(fit, indent=1))
    state.done()
    print(f"{key}: resume compared {len(common)} logged values, {len(differ)} differ", flush=True)
    return fit


def curves(key: str, fit: dict, out_dir: Path) -> dict:
    """The validation curve per epoch (clean and PGD-20 robust accuracy) into the fit record, and the run's
    plots (``lit_robust plot``: robust_overfitting.png shows whether robust accuracy fell after its best)."""
    curve = val_curve(fit["log_dir"], {"clean": "val/clean_acc", "robust": "val/robust_acc"})
    if fit.get("val_curve") != curve:
        fit["val_curve"] = curve
        (out_dir / f"{key}_fit.json").write_text(json.dumps(fit, indent=1))
    plots = out_dir / f"{key}_plots"
    if not (plots / "robust_overfitting.png").is_file():
        wait_ok(lit_robust(["plot", fit["log_dir"], "--out", str(plots)]), f"{key}: plot")
    return fit


def model_id(fit: dict) -> dict:
    """What a report records of the model it evaluated: the checkpoint file's and the weights' digests."""
    return {k: fit[k] for k in ("ckpt_sha256", "weights_sha256") if k in fit}


def evaluated(report: Path, fit: dict) -> bool:
    """Whether ``report`` exists and evaluated the model of ``fit`` (``_runs.same_model``)."""
    return report.is_file() and same_model(json.loads(report.read_text())["script"], fit)


def complete(key: str, out_dir: Path, fit: dict | None, size: int) -> bool:
    """Whether ``{key}_test.json`` exists and every chunk of the test set evaluated ``fit``'s model."""
    return (
        fit is not None
        and (out_dir / f"{key}_test.json").is_file()
        and all(evaluated(chunk_report(out_dir, key, o), fit) for o in range(0, TEST_SIZE, size))
    )


def fit_for(key: str, config: str, out_dir: Path, kill_at: float, min_lost: int, size: int) -> dict | None:
    """The fit record of ``key``: ``None`` when its evaluation is complete (no checkpoint needed: a fresh
    machine does not retrain it), else the reused or new fit. A refit says whether it reproduced the
    weights that earlier chunks evaluated (they are kept) or not (they are evaluated again)."""
    record = out_dir / f"{key}_fit.json"
    previous = json.loads(record.read_text()) if record.is_file() else None
    if complete(key, out_dir, previous, size):
        print(f"\n{key}: all {TEST_SIZE} test images evaluated (delete {record} to redo it)", flush=True)
        return None
    fit = curves(key, fit_killed_and_resumed(key, config, out_dir, kill_at, min_lost), out_dir)
    if previous and previous.get("weights_sha256") and previous["ckpt_sha256"] != fit["ckpt_sha256"]:
        same = previous["weights_sha256"] == fit["weights_sha256"]
        fit["weights_match_previous_fit"] = same
        record.write_text(json.dumps(fit, indent=1))
        if same:
            print(f"{key}: the refit reproduced the weights of the recorded fit", flush=True)
        else:
            kept = supersede(key, out_dir, previous)
            was, now = (f.get("machine", {}).get("capability", "not recorded") for f in (previous, fit))
            print(
                f"{key}: the refit's weights differ from the recorded fit's (CPU kernels: recorded {was}, "
                f"here {now}); its records moved to {kept}, the new model is evaluated from image 0",
                flush=True,
            )
    return fit


def supersede(key: str, out_dir: Path, previous: dict) -> Path:
    """Move the records of the fit ``previous`` (its chunk reports, Square recheck and plots) and the fit
    record itself to ``out_dir/superseded/{key}_{first 8 hex digits of its weights digest}/``: kept,
    never merged with another model's chunks, never overwritten by their evaluation."""
    dest = out_dir / "superseded" / f"{key}_{previous['weights_sha256'][:8]}"
    (dest / key).mkdir(parents=True, exist_ok=True)
    (dest / f"{key}_fit.json").write_text(json.dumps(previous, indent=1))
    for report in [*sorted((out_dir / key).glob("chunk_*.json")), out_dir / f"{key}_square_check.json"]:
        if evaluated(report, previous):
            report.rename(dest / report.relative_to(out_dir))
    if (plots := out_dir / f"{key}_plots").is_dir():  # (drawn from its run: ``curves`` draws the new one)
        plots.rename(dest / plots.name)
    return dest


def chunk_report(out_dir: Path, key: str, offset: int) -> Path:
    return out_dir / key / f"chunk_{offset:05d}.json"


def evaluate_chunks(
    key: str, config: str, fit: dict, out_dir: Path, size: int, deadline: float, jobs: int = 1
) -> list[Path]:
    """Evaluate the chunks of the test set not yet done (none started after ``deadline``), ``jobs`` at a
    time (each with ``os.cpu_count() // jobs`` threads); the finished chunk reports, in test-set order."""

    def done(dest: Path) -> bool:
        return evaluated(dest, fit)

    def run(offset: int) -> None:
        if time.time() <= deadline:
            n = min(size, TEST_SIZE - offset)
            threads = max(1, (os.cpu_count() or 1) // jobs)
            suite = ["--suite=table"]
            evaluate(key, config, fit, out_dir, offset, n, suite, chunk_report(out_dir, key, offset), threads)

    todo = [offset for offset in range(0, TEST_SIZE, size) if not done(chunk_report(out_dir, key, offset))]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(run, todo))  # (list: re-raises a failed chunk's error)
    return [p for offset in range(0, TEST_SIZE, size) if done(p := chunk_report(out_dir, key, offset))]


def evaluate(
    key: str,
    config: str,
    fit: dict,
    out_dir: Path,
    offset: int,
    n: int,
    suite: list,
    dest: Path,
    threads: int | None = None,
):
    """``evaluate`` test images ``offset .. offset + n - 1`` (with ``threads`` OMP threads); the report (with
    the checkpoint's digest, its start and end times and the threads under ``script``) goes to ``dest``."""
    work = out_dir / key / "work"
    args = [
        "evaluate", "--config", config, f"--ckpt_path={fit['ckpt']}", *suite,
        f"--data.init_args.test_offset={offset}", f"--data.init_args.test_subset={n}",
        f"--output_dir={work}", "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    start = time.time()
    log = work / f"eval_{offset:05d}.log"  # (one per chunk: chunks may run at once)
    work.mkdir(parents=True, exist_ok=True)
    wait_ok(lit_robust(args, log, threads), f"{key}: evaluate {n} from {offset} (log: {log})")
    made = work / (f"eval_{Path(fit['ckpt']).stem}" + (f"_from{offset}.json" if offset else ".json"))
    report = json.loads(made.read_text())
    end = time.time()
    report["script"] = {
        **model_id(fit),
        "eval_minutes": (end - start) / 60,
        "threads": threads,
        "started": start,  # (unix times: chunks that ran at once overlap)
        "ended": end,
    }
    dest.write_text(json.dumps(report))
    made.unlink()
    (work / made.with_suffix(".md").name).unlink(missing_ok=True)


def square_recheck(key: str, config: str, fit: dict, out_dir: Path, n: int) -> dict | None:
    """If AutoAttack's Square broke any point in the chunks evaluated so far: Square alone, 4x AutoAttack's
    queries and 2 restarts, on the first ``n`` test images (with PGD-20 and APGD-CE); returns how many
    points it broke that AutoAttack had left robust."""
    dest = out_dir / f"{key}_square_check.json"
    chunks = [c for c in sorted((out_dir / key).glob("chunk_*.json")) if evaluated(c, fit)]
    square = sum(
        json.loads(c.read_text())["attacks"]["autoattack"]["broken_by_component"]["square"] for c in chunks
    )
    if n <= 0 or not square:  # only when Square broke points the white-box components had left
        return None
    if not evaluated(dest, fit):
        evaluate(key, config, fit, out_dir, 0, n, ["--suite=quick", f"--attacks={STRONG_SQUARE}"], dest)
    check = json.loads(dest.read_text())["per_sample"]["square-4x"]
    aa = leading_per_sample(chunks, "autoattack")[:n]
    if len(aa) < n:
        return None
    return {"n": n, "broken_after_autoattack": sum(a and not s for a, s in zip(aa, check, strict=True))}


def leading_per_sample(chunks: list[Path], attack: str) -> list[bool]:
    """Per image, ``attack``'s result over the chunk reports that run on from test image 0 without a gap."""
    values: list[bool] = []
    for chunk in sorted(chunks):
        if int(chunk.stem.split("_")[1]) != len(values):
            break
        values += json.loads(chunk.read_text())["per_sample"][attack]
    return values


def merged(key: str, out_dir: Path, chunks: list[Path], size: int) -> dict | None:
    """Merge the chunk reports into ``{key}_test.json``/``.md`` once every chunk is there."""
    if len(chunks) < -(-TEST_SIZE // size):
        print(f"{key}: {len(chunks)} of {-(-TEST_SIZE // size)} chunks evaluated", flush=True)
        return None
    reports = [json.loads(p.read_text()) for p in chunks]
    report = merge_reports([Report.from_dict(r) for r in reports])
    report.write(out_dir, f"{key}_test")
    return {"report": report.to_dict(), "eval_minutes": sum(r["script"]["eval_minutes"] for r in reports)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out_dir", default="docs/results/mnist_long")
    parser.add_argument("--fit_only", action="store_true", help="train (and record) only")
    parser.add_argument("--chunk_size", type=int, default=500, help="test images per evaluate run")
    parser.add_argument(
        "--budget_minutes", type=float, default=float("inf"), help="start no chunk after this"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="chunks evaluated at once (each with cores/jobs threads)"
    )
    parser.add_argument("--square_check", type=int, default=500, help="test images of the Square recheck")
    parser.add_argument("--kill_at", type=float, default=0.5, help="fraction of the epochs before the kill")
    parser.add_argument("--min_lost", type=int, default=150, help="logged steps past last.ckpt at the kill")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + 60 * args.budget_minutes
    for key in args.methods:
        name, config = METHODS[key]
        fit = fit_for(key, config, out_dir, args.kill_at, args.min_lost, args.chunk_size)
        if fit is not None:
            fit = export_once(fit, out_dir / f"{key}_fit.json")
        if fit is None or args.fit_only:
            continue
        for _ in range(2):  # the recheck as soon as the chunks of its images are in, then the other chunks
            if time.time() < deadline and (
                check := square_recheck(key, config, fit, out_dir, args.square_check)
            ):
                broke = check["broken_after_autoattack"]
                print(f"{name}: strong Square, first {check['n']} images: {broke} more broken", flush=True)
            chunks = evaluate_chunks(key, config, fit, out_dir, args.chunk_size, deadline, args.jobs)
        if (result := merged(key, out_dir, chunks, args.chunk_size)) is not None:
            accuracy = result["report"]["accuracy"]
            print(f"{name}: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in accuracy.items()), flush=True)


if __name__ == "__main__":
    main()
