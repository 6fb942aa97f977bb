"""``Report.certificate_checks``: a point certified at L_2 radius r that an L_2 attack with eps <= r broke
is counted (and survives the JSON round trip and the merge of chunks); attacks with a larger eps or
another norm are not held to the certificate."""

from __future__ import annotations

import torch

from lit_robust.evaluation import Report, merge_reports


def report(first_index: int = 0) -> Report:
    t = lambda *v: torch.tensor(v, dtype=torch.bool)  # noqa: E731
    return Report(
        clean=t(1, 1, 1, 0),
        correct={"pgd-small": t(1, 0, 1, 0), "pgd-large": t(0, 0, 1, 0), "linf": t(0, 0, 0, 0)},
        seconds={"pgd-small": 1.0, "pgd-large": 1.0, "linf": 1.0},
        implementations=dict.fromkeys(("pgd-small", "pgd-large", "linf"), "lit_robust"),
        descriptions=dict.fromkeys(("pgd-small", "pgd-large", "linf"), "PGD()"),
        meta={"first_index": first_index, "ckpt_path": "c", "eps": 3.0, "norm": "2"},
        certified={0.5: t(1, 1, 0, 0), 1.0: t(1, 0, 0, 0)},
        certificate={"lipschitz": 1.0, "per_logit": True},
        balls={"pgd-small": ("2", 0.5), "pgd-large": ("2", 3.0), "linf": ("inf", 0.1)},
    )


def test_a_certified_point_an_attack_inside_the_radius_broke_is_counted():
    r = report()
    assert r.certificate_checks() == {"pgd-small@0.5": 1, "pgd-small@1": 0}
    data = r.to_dict()
    assert data["certified_but_broken"] == {"pgd-small@0.5": 1, "pgd-small@1": 0}
    assert "THE CERTIFICATE FAILED" in r.to_markdown()
    again = Report.from_dict(data)
    assert again.balls == r.balls and again.certificate_checks() == r.certificate_checks()
    merged = merge_reports([report(0), report(4)])
    assert merged.certificate_checks() == {"pgd-small@0.5": 2, "pgd-small@1": 0}
