"""Benchmark data: a bigger hospital from copies of a generated one, each with its own ids.

    .venv/bin/python benchmarks/replicate_hospital.py SRC DST --copies 10

Generating 1M patients with fhir_cohort.synth takes hours here; ten copies of the cached
100k hospital take minutes. Copy k of every NDJSON file of SRC gets every resource id and every
reference to one prefixed with ``r<k>-`` (``"id":"X"`` -> ``"id":"r3-X"``,
``"reference":"Patient/X"`` -> ``"reference":"Patient/r3-X"``), so the copies are distinct
patients with the same records: screening DST gives each copy the answers SRC's patients get.
The rewrite is on bytes and exact for what the generator writes (compact JSON, one top-level
id right after the resourceType, references ``Type/id`` or ``#contained``): both are checked,
and anything else stops the copy. The files of copy
k are numbered after SRC's (``Observation.000`` .. ``.003`` of copy 0, ``.004`` .. of copy 1),
and DST/.benchmark.json records the patients and files per type for
``benchmarks/screen_ndjson.py --dir``. Not a test: nothing here asserts on answers.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path

# The top-level id: the key after the resourceType that starts the line (a contained
# resource's id, and the "#id" that references it, are local to the resource: kept).
_ID = re.compile(rb'^(\{"resourceType":"[A-Za-z]+","id":")', re.MULTILINE)
_REF = re.compile(rb'"reference":"([A-Za-z]+)/')
_ANY_REF = b'"reference":"'
_LOCAL_REF = b'"reference":"#'
BLOCK = 64 * 1024 * 1024


def _rewrite(block: bytes, prefix: bytes) -> bytes:
    out, ids = _ID.subn(rb"\1" + prefix, block)
    out, refs = _REF.subn(rb'"reference":"\1/' + prefix, out)
    if ids != block.count(b"\n") or refs + block.count(_LOCAL_REF) != block.count(_ANY_REF):
        raise SystemExit("a line that does not start with its id, or a reference of another form")
    return out


def _blocks(path: Path) -> Iterator[bytes]:
    """Blocks of whole lines (the last newline added if the file lacks it)."""
    with path.open("rb") as fh:
        carry = b""
        while True:
            data = fh.read(BLOCK)
            if not data:
                if carry:
                    yield carry if carry.endswith(b"\n") else carry + b"\n"
                return
            data = carry + data
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                yield data[:cut]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--copies", type=int, default=10)
    args = ap.parse_args()
    meta = json.loads((args.src / ".benchmark.json").read_text())
    per_type = int(meta["files_per_type"])
    args.dst.mkdir(parents=True, exist_ok=False)
    files = sorted(args.src.glob("*.ndjson"))
    for path in files:
        rtype, number, _ = path.name.split(".")
        outs = [
            (args.dst / f"{rtype}.{k * per_type + int(number):03d}.ndjson").open("wb")
            for k in range(args.copies)
        ]
        try:
            for block in _blocks(path):
                for k, fh in enumerate(outs):
                    fh.write(_rewrite(block, b"r%d-" % k))
        finally:
            for fh in outs:
                fh.close()
        print(f"{path.name}: {args.copies} copies", flush=True)
    meta = {
        **meta,
        "patients": meta["patients"] * args.copies,
        "files_per_type": per_type * args.copies,
        "replicated_from": str(args.src),
        "copies": args.copies,
    }
    (args.dst / ".benchmark.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    main()
