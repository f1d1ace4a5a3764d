"""Write a random ZAYA1-8B-shaped bf16 checkpoint (sharded safetensors) without holding it in memory.

Every tensor is generated in row slices and streamed to its shard, so the peak memory is one
slice (~256 MB) whatever the model size. The initialisation is perturbed like
`export/random_model.py`'s `perturb` (QK-norm temp 0.5..2, norm/scale weights 1±0.2, biases
±0.005, router MLP weights ×2, balancing biases that make the skip class reachable), so an
export of it exercises what a real checkpoint would.

    .venv/bin/python benchmarks/make_full_checkpoint.py                 # .cache/zaya1-random-40l
    .venv/bin/python benchmarks/make_full_checkpoint.py --layers 4      # .cache/zaya1-random-4l
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zaya_edge.config import ZayaDims  # noqa: E402
from zaya_edge.export.checkpoint import expected_tensors  # noqa: E402

INIT_STD = 0.02  # ZayaConfig.initializer_range
SLICE_ELEMENTS = 1 << 26  # 64 M values (256 MB of fp32) generated at a time


def zaya_config(layers: int) -> dict:
    """ZAYA1-8B's config.json with `layers` decoder layers (transformers' own defaults)."""
    from transformers import ZayaConfig

    cfg = ZayaConfig(num_hidden_layers=layers).to_dict()
    cfg["architectures"] = ["ZayaForCausalLM"]
    cfg["torch_dtype"] = "bfloat16"
    return cfg


def tensor_specs(dims: ZayaDims) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, safetensors dtype); the balancing biases are an fp32 buffer as in HF."""
    specs = {name: (shape, "BF16") for name, shape in expected_tensors(dims).items()}
    for i in range(dims.num_layers):
        specs[f"model.layers.{i}.mlp.gate.balancing_biases"] = ((dims.num_experts + 1,), "F32")
    return specs


def generate(name: str, shape: tuple[int, ...], rows: slice, rng: np.random.Generator) -> np.ndarray:
    """fp32 values of rows `rows` of tensor `name` (perturbed initialisation)."""
    sub = (rows.stop - rows.start,) + tuple(shape[1:])
    if name.endswith("qk_norm.temp"):
        return rng.uniform(0.5, 2.0, sub).astype(np.float32)
    if name.endswith("balancing_biases"):
        b = rng.uniform(-0.9, -0.85, sub).astype(np.float32)
        b[-1] = -1.0
        return b
    if name.endswith(("norm.weight", "_scale")):
        return rng.uniform(0.8, 1.2, sub).astype(np.float32)
    if name.endswith((".bias", "_bias")):
        return rng.uniform(-0.005, 0.005, sub).astype(np.float32)
    std = INIT_STD * (2.0 if ".gate.router_mlp." in name else 1.0)
    out = rng.standard_normal(sub, dtype=np.float32)
    out *= np.float32(std)
    return out


def to_bf16(x: np.ndarray) -> np.ndarray:
    """fp32 -> bf16 bits, rounding to nearest even (what torch's .to(bfloat16) does)."""
    u = x.view(np.uint32)
    rounding = ((u >> 16) & 1) + np.uint32(0x7FFF)
    u += rounding  # in place: x is a private buffer
    return (u >> 16).astype(np.uint16)


def _shards(specs: dict, shard_bytes: int) -> list[list[str]]:
    shards, current, size = [], [], 0
    for name, (shape, dtype) in specs.items():
        n = int(np.prod(shape)) * (2 if dtype == "BF16" else 4)
        if current and size + n > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += n
    if current:
        shards.append(current)
    return shards


def _write_shard(path: Path, names: list[str], specs: dict, seed: int) -> int:
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in names:
        shape, dtype = specs[name]
        n = int(np.prod(shape)) * (2 if dtype == "BF16" else 4)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name in names:
            shape, dtype = specs[name]
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            step = max(1, SLICE_ELEMENTS // row) if len(shape) > 1 else shape[0]
            for r0 in range(0, shape[0], step):
                values = generate(name, shape, slice(r0, min(shape[0], r0 + step)), rng)
                (to_bf16(values) if dtype == "BF16" else values).tofile(f)
    return offset


def make_checkpoint(out: Path, layers: int = 40, seed: int = 0, shard_gb: float = 2.0, force: bool = False) -> Path:
    out = Path(out)
    if out.exists():
        if not force:
            raise SystemExit(f"{out} exists; pass --force to replace it")
        shutil.rmtree(out)
    cfg = zaya_config(layers)
    dims = ZayaDims.from_dict(cfg)
    specs = tensor_specs(dims)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        shards = _shards(specs, int(shard_gb * 2**30))
        weight_map, total = {}, 0
        for k, names in enumerate(shards):
            fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            total += _write_shard(tmp / fname, names, specs, seed)
            weight_map.update({n: fname for n in names})
            print(f"  {fname}: {len(names)} tensors", flush=True)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="?", default=None, help="default: .cache/zaya1-random-<layers>l")
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-gb", type=float, default=2.0)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = args.out or Path(".cache") / f"zaya1-random-{args.layers}l"
    out = make_checkpoint(out, args.layers, args.seed, args.shard_gb, args.force)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out}: {args.layers} layers, {size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
