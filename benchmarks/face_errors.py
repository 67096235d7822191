"""Where a glyph generalist's errors are: its top-1 on each face of each split.

A dataset imported with ``specens data glyphs --font ...`` renders sample ``j`` of every class from
face ``j mod (the split's faces)`` (``specens.data.render``), so a sample's key names its face.
Scoring the generalist face by face says whether it is face-limited (near-perfect on the faces it
trained on, its errors on some unseen faces) or capacity-limited (errors spread over every face,
the training faces included), which is what decides whether specialists fine-tuned on the
training faces have anything to learn (issue 27).

    python benchmarks/face_errors.py --run runs/generalists/hanzi1000/r8 \
        --data runs/generalists/hanzi1000/data --record
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
from _results import markdown_table, record

from specens.data.shards import iter_split
from specens.generalist.checkpoint import load_generalist


@torch.no_grad()
def by_face(model: torch.nn.Module, data: str, split: str, faces: list[str]) -> dict[str, list[int]]:
    """{face: [examples, right top-1, right top-5]} over ``split``."""
    tally = defaultdict(lambda: [0, 0, 0])
    for b in iter_split(data, split, 512):
        top5 = model(b.inputs).topk(5, 1).indices
        for key, y, t in zip(b.keys, b.labels.tolist(), top5.tolist(), strict=True):
            row = tally[faces[int(key.rsplit("_", 1)[1]) % len(faces)]]
            row[0] += 1
            row[1] += t[0] == y
            row[2] += y in t
    return dict(tally)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run directory with generalist/")
    ap.add_argument("--data", required=True, help="a glyph dataset imported from font files")
    ap.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()

    source = json.loads((Path(args.data) / "dataset.json").read_text())["source"] or {}
    missing = [s for s in args.splits if s not in source.get("faces", {})]
    if missing:
        raise SystemExit(f"{args.data}/dataset.json: no faces recorded for split(s) {missing} (import it with --font)")
    model = load_generalist(Path(args.run) / "generalist").model.eval()
    rows = []
    for split in args.splits:
        faces = [f["name"] for f in source["faces"][split]]
        tally = by_face(model, args.data, split, faces)
        errors = sum(n - r for n, r, _ in tally.values())
        for face in faces:
            n, r1, r5 = tally[face]
            rows.append([split, face, n, f"{r1 / n:.4f}", f"{r5 / n:.4f}", f"{(n - r1) / max(errors, 1):.0%}"])
        n, r1 = sum(v[0] for v in tally.values()), sum(v[1] for v in tally.values())
        rows.append([split, "**all**", n, f"**{r1 / n:.4f}**", "", "100%"])
    table = markdown_table(["split", "face", "examples", "top-1", "top-5", "share of the split's errors"], rows)
    print(table)
    if args.record:
        record("face_errors", f"python benchmarks/face_errors.py --run {args.run} --data {args.data}", table)


if __name__ == "__main__":
    main()
