"""Robustness evaluation: run a suite of attacks on a split and report per-attack and worst-case accuracy.

For every sample i and attack a, ``correct[a][i]`` is 1 when the sample is classified correctly clean AND
under attack a (attacks only run on the clean-correct points). The worst case over all attacks is

    robust_i = clean_i AND min_a correct[a][i],

so "robust accuracy over all attacks" is never above any single column. Reports are JSON (metadata,
per-attack accuracy and implementation, per-sample 0/1 vectors) and a Markdown table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from lit_robust.attacks import APGD, BETA, PGD, Attack, AutoAttack, CarliniWagnerL2
from lit_robust.diagnostics.gaps import certified_correct, net_certificate
from lit_robust.errors import ConfigError

OWN = "lit_robust"


def _suite_quick(norm: str) -> dict[str, Attack]:
    return {"pgd-20": PGD(steps=20), "apgd-ce": APGD(steps=100, loss="ce")}


def _suite_standard(norm: str) -> dict[str, Attack]:
    suite = {
        "pgd-20": PGD(steps=20),
        "pgd-50x5": PGD(steps=50, restarts=5),
        "apgd-ce": APGD(steps=100, loss="ce"),
        "apgd-t": APGD(steps=100, loss="dlr", targeted=True),
        "beta-10": BETA(steps=10),
    }
    if norm == "2":
        suite["cw-l2"] = CarliniWagnerL2()
    suite["autoattack"] = AutoAttack()
    return suite


def _suite_table(norm: str) -> dict[str, Attack]:
    """The columns of the README's method comparison: PGD-40, APGD-CE, BETA-10, AutoAttack."""
    return {
        "pgd-40": PGD(steps=40),
        "apgd-ce": APGD(steps=100, loss="ce"),
        "beta-10": BETA(steps=10),
        "autoattack": AutoAttack(),
    }


def _suite_l2nnn(norm: str) -> dict[str, Attack]:
    """L2NNN (flat nets with small gaps, where cross-entropy steps under-attack): each CE attack next to its
    margin-loss twin at the same budget, plus CW-L2 at the paper's two budgets (L_2 only)."""
    suite = {
        "pgd-20": PGD(steps=20),
        "pgd-20-margin": PGD(steps=20, loss="margin"),
        "apgd-ce": APGD(steps=100, loss="ce"),
        "apgd-t": APGD(steps=100, loss="dlr", targeted=True),
    }
    if norm == "2":
        suite.update({f"cw-l2-{steps}": CarliniWagnerL2(steps=steps) for steps in (100, 1000)})
    return suite


SUITES: dict[str, Callable[[str], dict[str, Attack]]] = {
    "quick": _suite_quick,
    "l2nnn": _suite_l2nnn,
    "standard": _suite_standard,
    "table": _suite_table,
}
"""Named attack suites; every attack inherits the evaluated model's eps and norm."""


def build_suite(
    suite: str, norm: str, extra: dict[str, Attack] | None = None, skip: Iterable[str] = ()
) -> dict:
    """The attacks of a named suite, plus ``extra`` (added, or replacing a same-named attack), minus
    ``skip``."""
    if suite not in SUITES:
        raise ConfigError(f"suite must be one of {sorted(SUITES)}, got {suite!r}")
    attacks = {**SUITES[suite](norm), **(extra or {})}
    unknown = [name for name in skip if name not in attacks]
    if unknown:
        raise ConfigError(
            f"skip names attacks that are not in the suite: {unknown} (suite has {list(attacks)})"
        )
    attacks = {k: v for k, v in attacks.items() if k not in set(skip)}
    for name, attack in attacks.items():
        if not isinstance(attack, Attack):
            raise ConfigError(
                f"attacks.{name} must be a lit_robust.attacks.Attack, got {type(attack).__name__}"
            )
    if not attacks:
        raise ConfigError("the evaluation has no attacks left")
    return attacks


def implementation(attack: Attack) -> str:
    """Who wrote an attack's code: lit_robust, or the external library an adapter calls."""
    return getattr(attack, "implementation", OWN)


@dataclass
class Report:
    """Per-sample results of one evaluation; ``correct`` maps each attack to a bool vector (N,)."""

    clean: torch.Tensor
    correct: dict[str, torch.Tensor]
    seconds: dict[str, float]
    implementations: dict[str, str]
    descriptions: dict[str, str]
    breakdowns: dict[str, dict[str, int]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    #: for nets with a Lipschitz certificate: radius -> correct and certified at that L_2 radius
    certified: dict[float, torch.Tensor] = field(default_factory=dict)
    certificate: dict = field(default_factory=dict)
    #: ``evaluate --checks``: diagnostics of :func:`lit_robust.diagnostics.run_checks`
    checks: dict = field(default_factory=dict)
    #: sanity-check findings per attack (the official AutoAttack's checks), in the order first seen
    warnings: dict[str, list[str]] = field(default_factory=dict)
    #: each attack's threat model: name -> (norm, eps)
    balls: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def worst_case(self) -> torch.Tensor:
        """Robust against every attack (and correct clean)."""
        out = self.clean.clone()
        for c in self.correct.values():
            out &= c
        return out

    def accuracies(self) -> dict[str, float]:
        """Accuracy in [0, 1] of clean, every attack and the worst case."""
        acc = {"clean": self.clean.float().mean().item()}
        acc.update({k: v.float().mean().item() for k, v in self.correct.items()})
        acc["worst_case"] = self.worst_case.float().mean().item()
        return acc

    def certificate_checks(self) -> dict[str, int]:
        """For every certified radius r and every L_2 attack with eps <= r, the points it broke that were
        certified at r (``"{attack}@{r}"`` -> count): a certificate holds only if every count is 0."""
        return {
            f"{name}@{r:g}": int((cert & ~self.correct[name]).sum())
            for r, cert in self.certified.items()
            for name, (norm, eps) in self.balls.items()
            if norm == "2" and eps <= r + 1e-9
        }

    def agreement(self, reference: str = "autoattack") -> dict[str, dict[str, int]]:
        """How ``reference`` (the official AutoAttack) and each other attack agree, over the clean-correct
        points: broken by both, only by the reference, only by the other. Empty without the reference."""
        if reference not in self.correct:
            return {}
        ref_broken = self.clean & ~self.correct[reference]
        out = {}
        for name, survived in self.correct.items():
            if name != reference:
                broken = self.clean & ~survived
                out[name] = {
                    "both": int((broken & ref_broken).sum()),
                    f"only {reference}": int((ref_broken & ~broken).sum()),
                    f"only {name}": int((broken & ~ref_broken).sum()),
                }
        others = [v for k, v in self.correct.items() if k != reference]
        if others:
            ours = self.clean & ~torch.stack(others).all(0)  # broken by at least one other attack
            out["all others (union)"] = {
                "both": int((ours & ref_broken).sum()),
                f"only {reference}": int((ref_broken & ~ours).sum()),
                "only the others": int((ours & ~ref_broken).sum()),
            }
        return out

    def to_dict(self) -> dict:
        acc = self.accuracies()
        return {
            "meta": {**self.meta, "n_samples": int(self.clean.numel())},
            "accuracy": acc,
            "attacks": {
                name: {
                    "accuracy": acc[name],
                    "implementation": self.implementations[name],
                    "attack": self.descriptions[name],
                    "seconds": round(self.seconds[name], 3),
                    **(
                        {"norm": self.balls[name][0], "eps": self.balls[name][1]}
                        if name in self.balls
                        else {}
                    ),
                    **({"broken_by_component": self.breakdowns[name]} if name in self.breakdowns else {}),
                }
                for name in self.correct
            },
            "per_sample": {
                "clean": self.clean.int().tolist(),
                **{k: v.int().tolist() for k, v in self.correct.items()},
                "worst_case": self.worst_case.int().tolist(),
                **{f"certified@{r:g}": v.int().tolist() for r, v in self.certified.items()},
            },
            **(
                {
                    "certified": {f"{r:g}": v.float().mean().item() for r, v in self.certified.items()},
                    "certificate": self.certificate,
                    "certified_but_broken": self.certificate_checks(),
                }
                if self.certified
                else {}
            ),
            **({"checks": self.checks} if self.checks else {}),
            **({"warnings": self.warnings} if self.warnings else {}),
            **({"agreement_with_autoattack": self.agreement()} if self.agreement() else {}),
        }

    def to_markdown(self) -> str:
        acc = self.accuracies()
        meta = self.meta
        lines = [
            f"# Robustness evaluation: {meta.get('model', '?')}",
            "",
            f"- checkpoint: `{meta.get('ckpt_path')}`",
            f"- threat model: L_{meta.get('norm')} eps = {meta.get('eps')}",
            f"- split: {meta.get('split')} ({self.clean.numel()} samples of {meta.get('data')})",
            "- accuracy counts a sample only if it is classified correctly clean and under the attack",
            "",
            "| attack | accuracy (%) | implementation | seconds |",
            "|---|---:|---|---:|",
            f"| clean | {100 * acc['clean']:.2f} | {OWN} | |",
        ]
        for name in self.correct:
            impl, secs = self.implementations[name], self.seconds[name]
            lines.append(f"| {name} | {100 * acc[name]:.2f} | {impl} | {secs:.1f} |")
        lines.append(
            f"| **worst case over all attacks (per sample)** | **{100 * acc['worst_case']:.2f}** | | |"
        )
        for name, messages in self.warnings.items():
            lines += ["", f"**Warnings of {name}'s sanity checks** (treat its number as suspect):", ""]
            lines += [f"- {m}" for m in messages]
        agreement = self.agreement()
        if agreement:
            lines += [
                "",
                "Points broken (of the clean-correct ones), the official AutoAttack against each attack:",
                "",
            ]
            lines += [
                "| attack | broken by both | only by AutoAttack | only by the attack |",
                "|---|---:|---:|---:|",
            ]
            for name, counts in agreement.items():
                both, only_ref, only_other = counts.values()
                lines.append(f"| {name} | {both} | {only_ref} | {only_other} |")
        if self.certified:
            lip, per_logit = self.certificate["lipschitz"], self.certificate["per_logit"]
            rule = f"gap / {'2' if per_logit else 'sqrt(2)'}" + ("" if lip == 1 else f" / {lip:.4g}")
            lines += [
                "",
                f"Certified accuracy (correct and L_2 radius {rule} > r; no attack can lower it):",
                "",
            ]
            lines += ["| radius r | certified (%) |", "|---:|---:|"]
            lines += [f"| {r:g} | {100 * v.float().mean().item():.2f} |" for r, v in self.certified.items()]
            if checks := self.certificate_checks():
                broken = ", ".join(f"{k}: {v}" for k, v in checks.items() if v)
                verdict = f"{broken}: THE CERTIFICATE FAILED" if broken else f"none ({', '.join(checks)})"
                lines += ["", f"Certified points broken by an L_2 attack inside the radius: {verdict}."]
        if self.checks:
            lines += [
                "",
                f"Diagnostics on the first {self.checks['n_samples']} samples (evaluate --checks):",
                "",
            ]
            lines += ["| diagnostic | value |", "|---|---:|"]
            for group in ("gaps", "lipschitz", "masking"):
                lines += [f"| {group}/{k} | {v:.4g} |" for k, v in self.checks[group].items()]
            raised = ", ".join(self.checks["flags"]) or "none"
            lines += ["", f"Gradient-masking flags raised: {raised}."]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        """The report that :meth:`to_dict` wrote (``evaluate``'s JSON); diagnostics (``checks``) and the
        agreement table are recomputed or left out, not read back."""
        per_sample = data["per_sample"]
        attacks = data["attacks"]
        certified = {
            float(k.split("@", 1)[1]): v for k, v in per_sample.items() if k.startswith("certified@")
        }
        return cls(
            clean=torch.tensor(per_sample["clean"], dtype=torch.bool),
            correct={name: torch.tensor(per_sample[name], dtype=torch.bool) for name in attacks},
            seconds={name: a["seconds"] for name, a in attacks.items()},
            implementations={name: a["implementation"] for name, a in attacks.items()},
            descriptions={name: a["attack"] for name, a in attacks.items()},
            breakdowns={
                name: a["broken_by_component"] for name, a in attacks.items() if "broken_by_component" in a
            },
            meta=dict(data["meta"]),
            certified={r: torch.tensor(v, dtype=torch.bool) for r, v in certified.items()},
            certificate=data.get("certificate", {}),
            warnings=data.get("warnings", {}),
            balls={name: (a["norm"], a["eps"]) for name, a in attacks.items() if "norm" in a},
        )

    def write(self, directory: str | Path, stem: str) -> tuple[Path, Path]:
        """Write ``{stem}.json`` and ``{stem}.md`` under ``directory``; returns both paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
        json_path.write_text(json.dumps(self.to_dict(), indent=1))
        md_path.write_text(self.to_markdown())
        return json_path, md_path


def run_attacks(
    net: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    attacks: dict[str, Attack],
    device: torch.device | str = "cpu",
    progress: bool = False,
    radii: Iterable[float] = (),
) -> Report:
    """Evaluate ``net`` (eval mode) on ``batches`` under every attack; attacks run on clean-correct points.

    For a net with a Lipschitz certificate (:func:`lit_robust.diagnostics.gaps.net_certificate`), also records
    which points are certified at each L_2 radius in ``radii``. ``progress`` shows a bar on a terminal (the
    attack running, images done of the total, the estimated time left)."""
    net.eval()
    certificate = net_certificate(net)
    radii = list(radii) if certificate is not None else []
    certified: list[torch.Tensor] = []
    clean: list[torch.Tensor] = []
    correct: dict[str, list[torch.Tensor]] = {k: [] for k in attacks}
    seconds = dict.fromkeys(attacks, 0.0)
    breakdowns: dict[str, dict[str, int]] = {}
    found_warnings: dict[str, list[str]] = {}
    total = len(batches.dataset) if hasattr(batches, "dataset") else None
    bar = tqdm(total=total, unit="img", disable=None if progress else True, dynamic_ncols=True, leave=False)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            logits = net(x)
        ok = logits.argmax(dim=1) == y
        clean.append(ok.cpu())
        if radii:
            certified.append(certified_correct(logits, y, radii, *certificate).cpu())
        idx = ok.nonzero().squeeze(1)
        for name, attack in attacks.items():
            bar.set_description(name)
            start = time.perf_counter()
            survived = torch.zeros_like(ok)
            if idx.numel():
                x_adv = attack(net, x[idx], y[idx])
                with torch.no_grad():
                    survived[idx] = net(x_adv).argmax(dim=1) == y[idx]
                verdict = getattr(attack, "last_robust", None)  # official AutoAttack resumed from its state
                if verdict is not None:
                    survived[idx] &= verdict.to(survived.device)
                for part, n in getattr(attack, "last_breakdown", {}).items():  # ensembles: who broke what
                    breakdowns.setdefault(name, {}).setdefault(part, 0)
                    breakdowns[name][part] += n
                for message in getattr(attack, "last_warnings", []):  # AutoAttack's sanity checks
                    if message not in found_warnings.setdefault(name, []):
                        found_warnings[name].append(message)
            correct[name].append(survived.cpu())
            seconds[name] += time.perf_counter() - start
        bar.update(len(y))
        bar.set_postfix({k: f"{torch.cat(v).float().mean():.3f}" for k, v in correct.items()})
    bar.close()
    if not clean:
        raise ConfigError("the evaluation split is empty")
    return Report(
        clean=torch.cat(clean),
        correct={k: torch.cat(v) for k, v in correct.items()},
        seconds=seconds,
        implementations={k: implementation(a) for k, a in attacks.items()},
        descriptions={k: repr(a) for k, a in attacks.items()},
        breakdowns=breakdowns,
        warnings=found_warnings,
        certified={r: c for r, c in zip(radii, torch.cat(certified).unbind(1), strict=True)} if radii else {},
        certificate={"lipschitz": certificate[0], "per_logit": certificate[1]} if radii else {},
        balls={k: (str(a.norm), float(a.eps)) for k, a in attacks.items() if a.eps is not None},
    )


def merge_reports(reports: list[Report]) -> Report:
    """One report from evaluations of consecutive chunks of a split (``data.test_offset``): the same
    checkpoint, threat model and attacks; the chunks, ordered by their first index, must tile the range
    without gaps or overlaps. Per-sample results are concatenated, seconds and component breakdowns added,
    warnings collected; accuracies follow from the merged per-sample results."""
    if not reports:
        raise ConfigError("merge_reports needs at least one report")
    reports = sorted(reports, key=lambda r: r.meta.get("first_index", 0))
    first = reports[0]
    keys = ("ckpt_path", "eps", "norm", "split", "model", "net")
    for r in reports[1:]:
        differ = [k for k in keys if r.meta.get(k) != first.meta.get(k)]
        if differ or list(r.correct) != list(first.correct):
            what = ", ".join(differ) or "the attacks"
            raise ConfigError(f"the reports to merge differ in {what}: they are not chunks of one evaluation")
    expected = first.meta.get("first_index", 0)
    for r in reports:
        start = r.meta.get("first_index", 0)
        if start != expected:
            raise ConfigError(
                f"the chunks do not tile the split: one starts at index {start}, the one before ended at "
                f"{expected}"
            )
        expected = start + r.clean.numel()

    def added(parts: list[dict[str, int]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in parts:
            for k, v in part.items():
                out[k] = out.get(k, 0) + v
        return out

    warnings_: dict[str, list[str]] = {}
    for r in reports:
        for name, messages in r.warnings.items():
            for message in messages:
                if message not in warnings_.setdefault(name, []):
                    warnings_[name].append(message)
    return Report(
        clean=torch.cat([r.clean for r in reports]),
        correct={k: torch.cat([r.correct[k] for r in reports]) for k in first.correct},
        seconds={k: sum(r.seconds[k] for r in reports) for k in first.correct},
        implementations=first.implementations,
        descriptions=first.descriptions,
        breakdowns={
            k: added([r.breakdowns[k] for r in reports if k in r.breakdowns]) for k in first.breakdowns
        },
        meta={
            **{k: v for k, v in first.meta.items() if k != "first_index"},
            "first_index": first.meta.get("first_index", 0),
            "chunks": len(reports),
        },
        certified={t: torch.cat([r.certified[t] for r in reports]) for t in first.certified},
        certificate=first.certificate,
        balls=first.balls,
        warnings=warnings_,
    )
