"""The machinery behind docs/results.md: ``scripts/mnist_long.py`` kills a fit in the middle, resumes it and
compares every value both processes logged (a tiny PGD-AT run here, 40 steps per epoch); a changed value
is caught; the validation curve and plots cover the whole run; ``scripts/results_md.py --check`` holds
docs/results.md to the committed records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import mnist_long  # noqa: E402

CONFIG = """
seed_everything: 0
model:
  class_path: lit_robust.methods.PGDAT
  init_args:
    eps: 0.1
    net: {{class_path: lit_robust.nets.MLP, init_args: {{hidden: [32]}}}}
    train_attack: {{class_path: lit_robust.attacks.PGD, init_args: {{steps: 3, random_start: true}}}}
    eval_attack: {{class_path: lit_robust.attacks.PGD, init_args: {{steps: 3, random_start: true}}}}
data:
  class_path: lit_robust.data.MNIST
  init_args: {{data_dir: {data}, train_subset: 640, val_size: 64, batch_size: 16, seed: 0}}
trainer:
  max_epochs: 4
  deterministic: true
  log_every_n_steps: 1
  enable_model_summary: false
  callbacks:  # 160 steps: 1.6 s of sleep, the window in which the fit is killed (throttle.py)
    - {{class_path: throttle.SleepPerStep, init_args: {{seconds: 0.01}}}}
  logger:
    class_path: lit_robust.loggers.CSVLogger
    init_args: {{save_dir: {logs}, name: tiny, flush_logs_every_n_steps: 1}}
"""


@pytest.fixture(scope="module", autouse=True)
def importable_throttle():
    """The fits this module starts as subprocesses import ``throttle`` from this folder."""
    here = str(Path(__file__).parent)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
        yield


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, mnist_root):
    folder = tmp_path_factory.mktemp("mnist_long")
    config = folder / "tiny.yaml"
    config.write_text(CONFIG.format(data=mnist_root, logs=folder / "logs"))
    mnist_long.POLL_SECONDS = 0.2
    fit = mnist_long.fit_killed_and_resumed("tiny", str(config), folder, kill_at=0.5, min_lost=5)
    return folder, fit


def test_the_fit_is_killed_mid_run_and_resumes_exactly(killed_and_resumed):
    folder, fit = killed_and_resumed
    assert fit["killed_at_step"] - fit["resumed_from_step"] >= 5 and fit["resumed_from_step"] >= 80
    assert fit["resume_exact"] and fit["resume_compared_values"] >= 5, fit
    assert Path(fit["ckpt"]).name.startswith("best") and Path(fit["ckpt"]).is_file()
    rows = mnist_long.read_rows(Path(fit["log_dir"]) / "metrics.csv")
    assert max(int(r["epoch"]) for r in rows if r.get("epoch")) == 3  # the resumed run finished
    assert (folder / "tiny_metrics_killed.csv").is_file()


def test_a_fit_interrupted_unseen_is_continued_not_started_over(killed_and_resumed, tmp_path, mnist_root):
    """The session ends (SIGKILL, nothing recorded) after the fit's first last.ckpt and before the planned
    kill: the next start continues that run in its own folder, still kills it once mid-run, compares, and
    reaches the uninterrupted record's weights bit for bit."""
    config = tmp_path / "cut.yaml"
    config.write_text(CONFIG.format(data=mnist_root, logs=tmp_path / "logs"))
    state = mnist_long.FitState(str(config), "cut")
    state.begin()
    proc = mnist_long.lit_robust(mnist_long.fit_args(str(config)))
    cut = mnist_long.kill_mid_run(
        lambda: proc.poll() is None, lambda: (proc.kill(), proc.wait()), str(config), state, 0.25, 3
    )
    fit = mnist_long.fit_killed_and_resumed("cut", str(config), tmp_path, kill_at=0.5, min_lost=5)
    assert fit["interruptions"] == 1 and fit["resume_exact"], fit
    assert fit["killed_at_step"] > cut["at_step"] and fit["minutes"] > cut["minutes"]
    assert [p.name for p in (tmp_path / "logs" / "tiny").glob("version_*")] == ["version_0"]
    assert fit["weights_sha256"] == killed_and_resumed[1]["weights_sha256"]
    assert not state.path.is_file()
    ours, theirs = (
        mnist_long.export_once(f, tmp_path / f"{n}.json")
        for n, f in (("a", fit), ("b", killed_and_resumed[1]))
    )
    assert ours["export_sha256"] == theirs["export_sha256"]  # the export files are reproducible too
    rows = mnist_long.read_rows(Path(fit["log_dir"]) / "metrics.csv")
    assert sorted(int(r["epoch"]) for r in rows if r.get("val/clean_acc")) == [0, 1, 2, 3]


def test_the_chosen_checkpoint_is_exported_beside_its_run_with_the_digest_recorded(
    killed_and_resumed, tmp_path
):
    """The export (out of git, under logs/) holds the best checkpoint's net; its digest goes into the fit
    record, and exporting again changes nothing."""
    from _runs import digest
    from safetensors.torch import load_file

    from lit_robust.checkpoint import read_checkpoint

    _, fit = killed_and_resumed
    record = tmp_path / "tiny_fit.json"
    exported = mnist_long.export_once(dict(fit), record)
    weights = Path(exported["export"]) / "model.safetensors"
    assert Path(exported["export"]).parent == Path(fit["log_dir"])
    assert json.loads(record.read_text()) == exported and exported["export_sha256"] == digest(str(weights))
    net = {k.removeprefix("net."): v for k, v in read_checkpoint(fit["ckpt"])["state_dict"].items()}
    saved = load_file(str(weights))
    assert saved.keys() == {k for k in net if k in saved} and saved
    assert all(torch.equal(saved[k], net[k]) for k in saved)
    record.unlink()
    assert mnist_long.export_once(exported, record) == exported and not record.exists()


def test_the_validation_curve_and_plots_come_from_the_whole_run(killed_and_resumed):
    folder, fit = killed_and_resumed
    fit = mnist_long.curves("tiny", dict(fit), folder)
    assert [c["epoch"] for c in fit["val_curve"]] == [0, 1, 2, 3]  # one per epoch, the killed one once
    assert all(0 <= c["robust"] <= c["clean"] <= 1 for c in fit["val_curve"])
    assert (folder / "tiny_plots" / "robust_overfitting.png").stat().st_size > 0


def test_the_test_set_is_evaluated_in_chunks_that_merge_into_one_report(killed_and_resumed, monkeypatch):
    """Chunks of 16 of a 32-image "test set", both at once (``--jobs 2``, one thread each): the first one
    too (``evaluate`` names it without ``_from0``), each recorded with the checkpoint's digest, then
    merged per sample."""
    folder, fit = killed_and_resumed
    monkeypatch.setattr(mnist_long, "TEST_SIZE", 32)
    monkeypatch.setattr(mnist_long, "evaluate", _quick(mnist_long.evaluate))
    monkeypatch.setattr(mnist_long.os, "cpu_count", lambda: 2)
    chunks = mnist_long.evaluate_chunks("tiny", str(folder / "tiny.yaml"), fit, folder, 16, float("inf"), 2)
    assert [p.name for p in chunks] == ["chunk_00000.json", "chunk_00016.json"]
    reports = [json.loads(p.read_text()) for p in chunks]
    assert [r["meta"].get("first_index", 0) for r in reports] == [0, 16]
    assert all(r["script"] == {**r["script"], **mnist_long.model_id(fit)} for r in reports)
    assert all(mnist_long.evaluated(p, fit) for p in chunks)
    assert [r["script"]["threads"] for r in reports] == [1, 1]
    merged = mnist_long.merged("tiny", folder, chunks, 16)
    per_sample = merged["report"]["per_sample"]
    assert per_sample["clean"] == reports[0]["per_sample"]["clean"] + reports[1]["per_sample"]["clean"]
    assert (folder / "tiny_test.json").is_file()


def test_a_refit_reproduces_the_weights_so_the_finished_chunks_carry_over(killed_and_resumed):
    """A fresh machine has the committed records but no checkpoint: an uninterrupted refit on the same CPU
    kernels (here: the same machine) reaches the killed-and-resumed run's weights bit for bit (another
    file: its paths and loop state differ), so the chunks that evaluated those weights still count and
    only the missing ones run."""
    from _runs import digest, kernel_env, weights_digest

    folder, fit = killed_and_resumed
    assert fit["weights_sha256"] == weights_digest(fit["ckpt"])
    done = subprocess.run(
        [sys.executable, "-m", "lit_robust", *mnist_long.fit_args(str(folder / "tiny.yaml"))],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **kernel_env()},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    refit = sorted(Path(fit["log_dir"]).parent.glob("version_*/checkpoints/best*.ckpt"))[-1]
    assert refit.parent != Path(fit["ckpt"]).parent
    assert weights_digest(str(refit)) == fit["weights_sha256"]
    assert digest(str(refit)) != fit["ckpt_sha256"]
    refit_record = {"ckpt_sha256": digest(str(refit)), "weights_sha256": weights_digest(str(refit))}
    chunk = folder / "refit" / "chunk_00000.json"
    chunk.parent.mkdir()
    chunk.write_text(json.dumps({"script": mnist_long.model_id(fit)}))
    assert mnist_long.evaluated(chunk, refit_record)
    assert not mnist_long.evaluated(chunk, {**refit_record, "weights_sha256": "0" * 64})
    legacy = {"ckpt_sha256": fit["ckpt_sha256"]}  # records made before weights were digested
    chunk.write_text(json.dumps({"script": legacy}))
    assert mnist_long.evaluated(chunk, fit) and not mnist_long.evaluated(chunk, refit_record)


def test_a_method_evaluated_on_every_chunk_is_not_retrained(tmp_path, monkeypatch):
    """Its checkpoint gone (a fresh machine), a method whose chunks and merged report are all recorded is
    left alone; one chunk missing, it is fitted again (here: the fit is replaced by a marker)."""
    monkeypatch.setattr(mnist_long, "TEST_SIZE", 32)
    fit = {"ckpt": str(tmp_path / "gone.ckpt"), "ckpt_sha256": "a" * 64, "weights_sha256": "b" * 64}
    (tmp_path / "m_fit.json").write_text(json.dumps(fit))
    (tmp_path / "m_test.json").write_text("{}")
    for offset in (0, 16):
        chunk = mnist_long.chunk_report(tmp_path, "m", offset)
        chunk.parent.mkdir(exist_ok=True)
        chunk.write_text(json.dumps({"script": mnist_long.model_id(fit)}))

    def refit(*args):
        raise RuntimeError("refit")

    monkeypatch.setattr(mnist_long, "fit_killed_and_resumed", refit)
    assert mnist_long.fit_for("m", "unused.yaml", tmp_path, 0.5, 5, 16) is None
    mnist_long.chunk_report(tmp_path, "m", 16).unlink()
    with pytest.raises(RuntimeError, match="refit"):
        mnist_long.fit_for("m", "unused.yaml", tmp_path, 0.5, 5, 16)


def test_a_refit_with_other_weights_moves_the_earlier_records_aside(tmp_path, monkeypatch):
    """A refit on a machine with other CPU kernels (BETA-AT: AVX2 here, the recorded fit made elsewhere)
    reaches other weights: the earlier fit's record, chunks and Square recheck move to
    ``superseded/{key}_{weights}/`` instead of staying beside the new model's (where they were merged with
    its chunks and then overwritten by them), and the new model is evaluated from image 0."""
    monkeypatch.setattr(mnist_long, "TEST_SIZE", 32)
    old = {"ckpt": str(tmp_path / "gone.ckpt"), "ckpt_sha256": "a" * 64, "weights_sha256": "b" * 64}
    (tmp_path / "m_fit.json").write_text(json.dumps(old))
    chunk = mnist_long.chunk_report(tmp_path, "m", 0)
    chunk.parent.mkdir()
    for report in (chunk, tmp_path / "m_square_check.json"):
        report.write_text(json.dumps({"script": mnist_long.model_id(old)}))
    (tmp_path / "m_plots").mkdir()
    (tmp_path / "m_plots" / "robust_overfitting.png").write_bytes(b"the earlier fit's curves")
    new = {"ckpt": str(tmp_path / "new.ckpt"), "ckpt_sha256": "c" * 64, "weights_sha256": "d" * 64}
    monkeypatch.setattr(mnist_long, "fit_killed_and_resumed", lambda *args: dict(new))
    monkeypatch.setattr(mnist_long, "curves", lambda key, fit, out_dir: fit)
    assert mnist_long.fit_for("m", "unused.yaml", tmp_path, 0.5, 5, 16)["weights_match_previous_fit"] is False
    kept = tmp_path / "superseded" / "m_bbbbbbbb"
    assert json.loads((kept / "m_fit.json").read_text()) == old
    assert (kept / "m" / "chunk_00000.json").is_file() and (kept / "m_square_check.json").is_file()
    assert not chunk.exists() and not (tmp_path / "m_square_check.json").exists()
    assert (kept / "m_plots" / "robust_overfitting.png").is_file() and not (tmp_path / "m_plots").exists()
    assert json.loads((tmp_path / "m_fit.json").read_text())["weights_sha256"] == "d" * 64
    # a refit that reproduced the weights keeps the chunks where they are
    chunk.write_text(json.dumps({"script": mnist_long.model_id(new)}))
    monkeypatch.setattr(mnist_long, "fit_killed_and_resumed", lambda *args: {**new, "ckpt_sha256": "e" * 64})
    assert mnist_long.fit_for("m", "unused.yaml", tmp_path, 0.5, 5, 16)["weights_match_previous_fit"]
    assert chunk.is_file() and not (tmp_path / "superseded" / "m_dddddddd").exists()


def test_results_page_never_merges_chunks_of_two_models(tmp_path):
    """docs/results.md merged every chunk file in a method's folder, whatever model it evaluated: a
    refit's first chunks would have been merged with the earlier fit's later ones into one row. Only the
    chunks of the fit record's weights count; the earlier fit's evaluation is named apart."""
    import results_md

    kept = REPO / "docs" / "results" / "mnist_long" / "superseded" / "beta_at_1ceb3403"
    fit = json.loads((kept / "beta_at_fit.json").read_text())
    for offset, weights in ((0, fit["weights_sha256"]), (500, "0" * 64)):
        report = json.loads((kept / "beta_at" / f"chunk_{offset:05d}.json").read_text())
        report["script"]["weights_sha256"] = weights
        (tmp_path / f"chunk_{offset:05d}.json").write_text(json.dumps(report))
    assert results_md.chunks_so_far(tmp_path, fit)["n"] == 500
    assert results_md.chunks_so_far(tmp_path, {**fit, "weights_sha256": "1" * 64}) is None
    here = {"weights_sha256": "2" * 64, "machine": {"capability": "AVX2"}}
    fact = results_md.superseded_fact(kept, "beta_at", here)
    assert "weights `1ceb3403`" in fact and "CPU kernels not recorded there, AVX2 here" in fact
    assert "on the first 7,500 test images (clean 97.76," in fact and "AutoAttack 88.00" in fact


def test_every_run_of_the_script_uses_the_pinned_cpu_kernels(capsys, monkeypatch):
    """BETA-AT refitted on an AVX2 machine differed from its fit on another machine from epoch 0: the
    script's fits and evaluations run on AVX2 kernels, set in the child's environment and printed with its
    command (a user's own setting kept), and the fit record names the machine; a CPU without AVX2 runs its
    own kernels (the capability is set here, so both cases run on any machine)."""
    import _runs

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    started = {}
    monkeypatch.setattr(mnist_long.subprocess, "Popen", lambda cmd, **kw: started.update(kw))
    mnist_long.lit_robust(["evaluate", "--help"], threads=1)
    assert {k: started["env"][k] for k in _runs.KERNELS} == {**_runs.KERNELS, "MKL_CBWR": "COMPATIBLE"}
    assert started["env"]["OMP_NUM_THREADS"] == "1"
    printed = capsys.readouterr().out
    assert "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=1" in printed
    assert _runs.machine()["pinned"]["ATEN_CPU_CAPABILITY"] == "avx2"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    mnist_long.lit_robust(["evaluate", "--help"])
    assert "ATEN_CPU_CAPABILITY" not in started["env"] and _runs.machine()["pinned"] == {}
    assert "$ python -m lit_robust evaluate --help" in capsys.readouterr().out


def test_the_square_recheck_compares_only_chunks_that_run_on_from_image_0(tmp_path):
    chunks = []
    for offset, values in ((0, [True, False]), (2, [True]), (5, [False])):  # 3 and 4 missing
        chunks.append(tmp_path / f"chunk_{offset:05d}.json")
        chunks[-1].write_text(json.dumps({"per_sample": {"autoattack": values}}))
    assert mnist_long.leading_per_sample(chunks, "autoattack") == [True, False, True]
    assert mnist_long.leading_per_sample(chunks[1:], "autoattack") == []


def _quick(evaluate):
    """The script's evaluate with the quick suite (PGD-20, APGD-CE) instead of the table's AutoAttack."""

    def run(key, config, fit, out_dir, offset, n, suite, dest, threads=None):
        return evaluate(key, config, fit, out_dir, offset, n, ["--suite=quick"], dest, threads)

    return run


def test_a_value_the_resumed_run_logged_differently_is_reported(killed_and_resumed):
    folder, fit = killed_and_resumed
    killed = mnist_long.read_rows(folder / "tiny_metrics_killed.csv")
    resumed = mnist_long.read_rows(Path(fit["log_dir"]) / "metrics.csv")
    row = next(r for r in resumed if int(r["step"]) > fit["resumed_from_step"] and r.get("train/loss_step"))
    row["train/loss_step"] = str(float(row["train/loss_step"]) + 1e-6)
    common, differ = mnist_long.compare_logged(killed, resumed, fit["resumed_from_step"])
    assert len(common) == fit["resume_compared_values"]
    assert [(s, k) for s, k, *_ in differ] == [(int(row["step"]), "train/loss_step")]


def test_results_page_is_what_the_records_give():
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "results_md.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_wall_time_of_chunks_that_ran_at_once_counts_overlaps_once():
    import results_md

    runs = [
        {"started": 0.0, "ended": 600.0, "eval_minutes": 10.0},  # two chunks at once: 10 min of wall time
        {"started": 60.0, "ended": 540.0, "eval_minutes": 8.0},
        {"started": 1200.0, "ended": 1500.0, "eval_minutes": 5.0},  # after a pause
        {"eval_minutes": 3.0},  # recorded without times: its own minutes
    ]
    assert results_md.wall_minutes(runs) == pytest.approx(10 + 5 + 3)


def test_the_masking_sentence_follows_the_numbers():
    """Our drop from PGD-40 to AutoAttack is called "common to MNIST adversarial training" only when it is
    about the paper's own (Madry et al.: 89.62 -> 88.50, 1.12 points); a drop of 5 points is masking of
    our own (the generated page once said "common" for any drop)."""
    import results_md

    assert "common to MNIST adversarial training" in results_md.masking_fact("pgd_at", 1.5, [])
    large = results_md.masking_fact("pgd_at", 5.11, [])
    assert "common" not in large and "3.99 more: masking of our own" in large
    assert results_md.masking_fact("beta_at", 5.0, []).endswith("below our PGD-40")


def test_fit_once_exports_what_it_fitted_and_reuses_both(tmp_path, mnist_root):
    """The shorter scripts' ``fit_once`` (l2nnn_mnist, mnist_table, entropysgd_table) exports the best
    checkpoint too: the record names the export and its digest; a second call fits and changes nothing."""
    from _runs import digest, fit_once

    config = tmp_path / "once.yaml"
    config.write_text(CONFIG.format(data=mnist_root, logs=tmp_path / "logs"))
    record = tmp_path / "once_fit.json"
    fit = fit_once(record, ["--config", str(config), "--trainer.max_epochs=1"], "once")
    weights = Path(fit["export"]) / "model.safetensors"
    assert Path(fit["export"]).parent == Path(fit["log_dir"]) and fit["export_sha256"] == digest(str(weights))
    assert json.loads(record.read_text()) == fit
    assert fit_once(record, ["unused"], "once") == fit
    assert [p.name for p in (tmp_path / "logs" / "tiny").glob("version_*")] == ["version_0"]


def test_capacity_is_called_a_limit_only_below_the_papers_clean_accuracy():
    """PGD-AT's 99.02% clean is inside the papers' 98.8-99.5%: the page once called capacity its limit."""
    import results_md

    assert "not what limits it" in results_md.capacity_fact(99.02)
    assert "every clean error is a robust error" in results_md.capacity_fact(98.09)


def test_the_cross_check_names_the_images_only_our_attacks_broke():
    """PGD-AT's worst case was 0.01 points below AutoAttack with nothing on the page saying why: the
    cross-check counts, per image, what each side broke that the other left, and names ours by index."""
    import results_md

    from lit_robust.evaluation import Report

    t = torch.tensor
    report = Report(
        clean=t([1, 1, 1, 1, 0], dtype=torch.bool),
        correct={
            "pgd-40": t([1, 1, 1, 0, 0], dtype=torch.bool),  # breaks image 3, which AutoAttack left
            "apgd-ce": t([1, 1, 1, 1, 1], dtype=torch.bool),
            "autoattack": t([0, 1, 1, 1, 0], dtype=torch.bool),  # breaks image 0, which ours left
        },
        seconds={}, implementations={}, descriptions={},
    )  # fmt: skip
    fact = results_md.cross_check(report)
    assert "AutoAttack broke 1 image(s) that none of our attacks (PGD-40, APGD-CE) broke" in fact
    assert "ours broke 1 that AutoAttack left robust (test index 3 by PGD-40)" in fact
    assert "worst case is 20.00 points below AutoAttack" in fact
    assert report.accuracies()["autoattack"] - report.accuracies()["worst_case"] == pytest.approx(0.2)
    report.meta["first_index"] = 500  # a merge that starts at a later chunk: indices of the test set
    assert "(test index 503 by PGD-40)" in results_md.cross_check(report)
    del report.correct["pgd-40"]
    assert results_md.cross_check(report).endswith("ours broke 0 that AutoAttack left robust.")
    del report.correct["apgd-ce"]
    assert results_md.cross_check(report) == ""  # AutoAttack alone: nothing to cross-check


def test_l2nnn_rows_come_from_the_committed_records_without_refitting(monkeypatch, tmp_path):
    """A fresh machine has docs/l2nnn's records but none of their checkpoints: ``run`` returns each row
    from the records instead of fitting again, and the table they give is the committed table.md (a
    call for one run no longer rewrites it with that run alone)."""
    import l2nnn_mnist

    def refit(*args):
        raise AssertionError("refitted a recorded run")

    monkeypatch.setattr(l2nnn_mnist, "fit_once", refit)
    monkeypatch.chdir(tmp_path)  # (the records' checkpoint paths are relative: none of them is here)
    out = REPO / "docs" / "l2nnn"
    keys = ["model3", "model4", "noisy75"]
    rows = [l2nnn_mnist.run(k, "unused", 200, out, fit_only=False) for k in keys]
    assert [r["key"] for r in rows] == keys and all(not Path(r["fit"]["ckpt"]).is_file() for r in rows)
    everything = [r for k in l2nnn_mnist.RUNS if (r := l2nnn_mnist.recorded(k, out))]
    assert l2nnn_mnist.tables(everything) == (out / "table.md").read_text()


def test_mnist_table_rows_come_from_the_committed_records_without_refitting(monkeypatch, tmp_path):
    """The same for docs/mnist_table: every method's row from its records, the committed table.md."""
    import mnist_table

    def refit(*args):
        raise AssertionError("refitted a recorded run")

    monkeypatch.setattr(mnist_table, "fit_once", refit)
    monkeypatch.chdir(tmp_path)
    out = REPO / "docs" / "mnist_table"
    rows = [mnist_table.run(k, "unused", 200, out) for k in mnist_table.METHODS]
    assert all(not Path(r["ckpt"]).is_file() for r in rows)
    assert mnist_table.table(rows, 200) == (out / "table.md").read_text()
