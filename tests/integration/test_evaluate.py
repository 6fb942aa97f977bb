"""`python -m lit_robust evaluate` end to end on a tiny PGD-trained MNIST model: tables written, parsed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import run_error, tiny  # tests/integration is on sys.path (rootdir-relative imports)

from lit_robust.cli import main

# AutoAttack with the original components but tiny budgets, so that the test takes seconds
SMALL_AA = (
    '--attacks={"autoattack": {"class_path": "lit_robust.attacks.AutoAttack", '
    '"init_args": {"steps": 5, "square_queries": 20}}}'
)


@pytest.fixture(scope="module")
def checkpoint(mnist_root, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("logs")
    cli = main(["fit", *tiny(mnist_root, save_dir, "--data.init_args.test_subset=100")])
    return cli.trainer.checkpoint_callback.best_model_path, save_dir


def test_evaluate_writes_json_and_markdown_tables(checkpoint, mnist_root, tmp_path):
    ckpt, save_dir = checkpoint
    args = tiny(mnist_root, save_dir, "--data.init_args.test_subset=100")
    main(["evaluate", *args, f"--ckpt_path={ckpt}", "--suite=quick", SMALL_AA, f"--output_dir={tmp_path}"])
    report = json.loads((tmp_path / f"eval_{Path(ckpt).stem}.json").read_text())
    acc = report["accuracy"]
    assert list(report["attacks"]) == ["pgd-20", "apgd-ce", "autoattack"]
    assert report["meta"]["n_samples"] == 100 and report["meta"]["eps"] == 0.3
    assert report["attacks"]["pgd-20"]["implementation"] == "lit_robust"
    assert report["attacks"]["autoattack"]["implementation"].startswith(
        "official AutoAttack (pyautoattack 0.2.0"
    )
    broken = report["attacks"]["autoattack"]["broken_by_component"]
    assert list(broken) == ["apgd-ce", "apgd-t", "fab-t", "square"] and "last_" not in str(report["attacks"])
    assert sum(broken.values()) == sum(report["per_sample"]["clean"]) - sum(
        report["per_sample"]["autoattack"]
    )
    per_sample = report["per_sample"]
    assert all(len(v) == 100 for v in per_sample.values())
    # the worst case is the per-sample AND of clean and every attack, so it is below every column
    for i in range(100):
        assert per_sample["worst_case"][i] == min(per_sample[k][i] for k in per_sample if k != "worst_case")
    assert acc["worst_case"] <= min(acc[k] for k in acc if k != "worst_case")
    assert acc["worst_case"] < acc["clean"]
    for name in ("pgd-20", "apgd-ce", "autoattack"):  # attacks only count clean-correct points
        assert all(a <= c for a, c in zip(per_sample[name], per_sample["clean"], strict=True))
    table = (tmp_path / f"eval_{Path(ckpt).stem}.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    parsed = {r.split("|")[1].strip(): r.split("|")[2].strip() for r in rows[1:]}
    assert float(parsed["clean"]) == pytest.approx(100 * acc["clean"], abs=0.01)
    assert float(parsed["autoattack"]) == pytest.approx(100 * acc["autoattack"], abs=0.01)
    assert "official AutoAttack" in table and "worst case" in table
    # agreement of the official AutoAttack with each attack, from the per-sample vectors
    agree = report["agreement_with_autoattack"]
    aa_broken = {i for i in range(100) if per_sample["clean"][i] and not per_sample["autoattack"][i]}
    for name in ("pgd-20", "apgd-ce"):
        broken = {i for i in range(100) if per_sample["clean"][i] and not per_sample[name][i]}
        assert agree[name] == {
            "both": len(broken & aa_broken),
            "only autoattack": len(aa_broken - broken),
            f"only {name}": len(broken - aa_broken),
        }
    assert "only by AutoAttack" in table


def test_evaluate_default_output_is_next_to_the_checkpoints(checkpoint, mnist_root):
    ckpt, save_dir = checkpoint
    args = tiny(mnist_root, save_dir, "--data.init_args.test_subset=40")
    main(["evaluate", *args, f"--ckpt_path={ckpt}", "--suite=quick", "--skip=[apgd-ce]"])
    out = Path(ckpt).parent.parent / "evaluation" / f"eval_{Path(ckpt).stem}.json"
    assert list(json.loads(out.read_text())["attacks"]) == ["pgd-20"]


def test_evaluate_checks_reports_diagnostics(checkpoint, mnist_root, tmp_path):
    """``--checks N``: gaps, Lipschitz estimates and masking checks of the first N test images, in the JSON
    and the Markdown table; the masking check's white-box accuracy is the evaluation attack's (PGD-5)."""
    ckpt, save_dir = checkpoint
    args = tiny(mnist_root, save_dir, "--data.init_args.test_subset=40")
    main(
        ["evaluate", *args, f"--ckpt_path={ckpt}", "--suite=quick", "--checks=20", f"--output_dir={tmp_path}"]
    )
    report = json.loads((tmp_path / f"eval_{Path(ckpt).stem}.json").read_text())
    checks = report["checks"]
    assert checks["n_samples"] == 20
    assert checks["gaps"]["mean_correct_gap_adv"] < checks["gaps"]["mean_correct_gap"]
    assert not [k for k in checks["gaps"] if "certified" in k]  # SmallCNN has no proven certificate
    lip = checks["lipschitz"]
    assert 0 < lip["lower_bound"] == max(lip["jacobian_max"], lip["attack_pair_max"])
    masking = checks["masking"]
    assert masking["acc_whitebox"] <= masking["acc_clean"] and masking["num_flags"] == len(checks["flags"])
    table = (tmp_path / f"eval_{Path(ckpt).stem}.md").read_text()
    assert "| masking/acc_whitebox |" in table and "| lipschitz/lower_bound |" in table
    assert "Gradient-masking flags raised:" in table


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ckpt_path=/nowhere/model.ckpt"], "--ckpt_path '/nowhere/model.ckpt' is not a file"),
        ([], "evaluate needs --ckpt_path"),
        (["--suite=strongest"], "suite must be one of"),
        (["--skip=[fab]"], "skip names attacks that are not in the suite"),
        (["--checks=-1"], "--checks must be an integer >= 0"),
    ],
)
def test_evaluate_bad_input(checkpoint, mnist_root, capsys, extra, message):
    ckpt, save_dir = checkpoint
    if "--ckpt_path" not in " ".join(extra) and "needs" not in message:
        extra = [f"--ckpt_path={ckpt}", *extra]
    err = run_error(["evaluate", *tiny(mnist_root, save_dir), *extra], capsys)
    assert message in err


def test_evaluations_in_chunks_merge_into_the_whole(checkpoint, mnist_root, tmp_path):
    """Three chunks (test_offset 0, 40, 70) evaluated separately and merged by scripts/merge_evaluations.py
    give the per-sample results, accuracies and agreement of one evaluation of all 100 images (seeded,
    deterministic attacks); a gap between chunks is refused."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from merge_evaluations import main as merge

    ckpt, save_dir = checkpoint
    attacks = (
        '--attacks={"pgd": {"class_path": "lit_robust.attacks.PGD", "init_args": {"steps": 5, "seed": 0, '
        '"random_start": false}}, "autoattack": {"class_path": "lit_robust.attacks.AutoAttack", '
        '"init_args": {"steps": 5, "square_queries": 20}}}'
    )

    def evaluate(out, *data):
        args = tiny(mnist_root, save_dir, *data)
        main(
            [
                "evaluate",
                *args,
                f"--ckpt_path={ckpt}",
                "--suite=quick",
                "--skip=[pgd-20,apgd-ce]",
                attacks,
                f"--output_dir={out}",
            ]
        )

    evaluate(tmp_path / "whole", "--data.init_args.test_subset=100")
    chunks = []
    for offset, size in ((0, 40), (40, 30), (70, 30)):
        evaluate(
            tmp_path / "chunks",
            f"--data.init_args.test_offset={offset}",
            f"--data.init_args.test_subset={size}",
        )
        chunks.append(
            tmp_path / "chunks" / (f"eval_{Path(ckpt).stem}" + (f"_from{offset}" if offset else "") + ".json")
        )
    merged = json.loads(
        merge([str(c) for c in reversed(chunks)] + ["--out", str(tmp_path / "merged")]).read_text()
    )
    whole = json.loads((tmp_path / "whole" / f"eval_{Path(ckpt).stem}.json").read_text())
    assert merged["per_sample"] == whole["per_sample"]
    assert merged["accuracy"] == pytest.approx(whole["accuracy"])
    assert merged["agreement_with_autoattack"] == whole["agreement_with_autoattack"]
    assert merged["meta"]["chunks"] == 3 and merged["meta"]["n_samples"] == 100
    with pytest.raises(Exception, match="do not tile the split: one starts at index 70"):
        merge([str(chunks[0]), str(chunks[2]), "--out", str(tmp_path / "gap")])
