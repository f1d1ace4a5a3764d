"""Export a full-width random ZAYA1 checkpoint and report wall time, peak RSS and artifact size.

The export runs as a child process (the `zaya-edge export` CLI), so its peak RSS is the child's
own ru_maxrss, not this script's. The checkpoint is made by make_full_checkpoint.py when missing.

    # issue 3: the full ZAYA1-8B shape at int4 (acceptance: peak < 6 GB, artifact <= 4.8 GB)
    .venv/bin/python benchmarks/export_full.py
    # issue 2: 4 layers of full width at fp32 (peak < 2 x largest tensor + 1 GB)
    .venv/bin/python benchmarks/export_full.py --layers 4 --precision fp32
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from make_full_checkpoint import make_checkpoint  # noqa: E402

GB, GIB = 1e9, 2**30


def largest_tensor(ckpt: Path) -> tuple[str, int, int]:
    """(name, bytes as stored, bytes as fp32) of the checkpoint's largest tensor."""
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"]
    best = ("", 0, 0)
    for shard in sorted(set(index.values())):
        with open(ckpt / shard, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for name, e in header.items():
            if name == "__metadata__":
                continue
            stored = e["data_offsets"][1] - e["data_offsets"][0]
            count = 1
            for s in e["shape"]:
                count *= s
            if stored > best[1]:
                best = (name, stored, 4 * count)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: .cache/zaya1-random-<layers>l")
    ap.add_argument("--out", type=Path, default=None, help="default: .cache/export-<precision>-<layers>l")
    ap.add_argument("--precision", default="int4")
    ap.add_argument("--quant-method", default=None)
    ap.add_argument("--block-size", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the artifact (default: delete it afterwards)")
    args = ap.parse_args(argv)

    ckpt = args.checkpoint or ROOT / ".cache" / f"zaya1-random-{args.layers}l"
    if not (ckpt / "config.json").exists():
        print(f"making {ckpt} ({args.layers} layers)...", flush=True)
        make_checkpoint(ckpt, layers=args.layers)
    out = args.out or ROOT / ".cache" / f"export-{args.precision}-{args.layers}l"
    cmd = [sys.executable, "-m", "zaya_edge", "export", str(ckpt), "-o", str(out),
           "--precision", args.precision, "--force", "--quiet"]
    if args.quant_method:
        cmd += ["--quant-method", args.quant_method]
    if args.block_size:
        cmd += ["--block-size", str(args.block_size)]

    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"export failed ({proc.returncode})")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports kB
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    name, stored, fp32 = largest_tensor(ckpt)

    print(f"checkpoint        {ckpt} ({sum(p.stat().st_size for p in ckpt.iterdir()) / GB:.2f} GB)")
    method = f" --quant-method {args.quant_method}" if args.quant_method else ""
    print(f"export            --precision {args.precision}{method}")
    print(f"wall time         {wall:.0f} s")
    print(f"peak RSS          {peak / GB:.2f} GB ({peak / GIB:.2f} GiB)")
    print(f"artifact size     {size / GB:.3f} GB ({size / GIB:.3f} GiB, {size} bytes)")
    print(f"largest tensor    {name}: {stored / GB:.2f} GB stored, {fp32 / GB:.2f} GB as fp32")
    print(f"2 x largest + 1GB {(2 * stored + GB) / GB:.2f} GB (stored dtype), {(2 * fp32 + GB) / GB:.2f} GB (fp32)")
    if not args.keep:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
