"""Merge evaluations of consecutive chunks of a test set into one report.

A long evaluation (e.g. the official AutoAttack on all 10,000 MNIST test images, hours on a CPU) runs as
chunks, each its own ``evaluate`` with ``--data.init_args.test_offset=K --data.init_args.test_subset=N``
(separate runs, sessions or machines); this script checks that the chunks are of one checkpoint, threat
model and suite and tile the range, concatenates their per-sample results and writes the merged JSON and
Markdown (accuracies, worst case, AutoAttack's agreement and warnings recomputed from the samples).

    python scripts/merge_evaluations.py EVAL.json [EVAL.json ...] --out DIR [--stem merged]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lit_robust.evaluation import Report, merge_reports


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="evaluate's JSON reports of the chunks")
    parser.add_argument("--out", required=True, help="folder of the merged report")
    parser.add_argument("--stem", default="merged", help="file name of the merged report (without suffix)")
    args = parser.parse_args(argv)
    merged = merge_reports([Report.from_dict(json.loads(Path(p).read_text())) for p in args.reports])
    json_path, md_path = merged.write(args.out, args.stem)
    print(merged.to_markdown())
    print(
        f"merged {len(args.reports)} chunks ({merged.clean.numel()} samples): wrote {json_path} and {md_path}"
    )
    return json_path


if __name__ == "__main__":
    main()
