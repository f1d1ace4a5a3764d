"""Write an artifact folder: all or nothing.

Everything is written into a hidden temporary folder beside OUT and renamed into place at the
end, so an interrupted or failed export never leaves something that looks like an artifact.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import onnx_ir as ir

from zaya_edge import __version__
from zaya_edge import artifact as A
from zaya_edge.config import ZayaDims
from zaya_edge.errors import RequestError
from zaya_edge.manifest import Source, TensorSpec

from .checkpoint import Checkpoint, check_tensors, open_checkpoint
from .graph import DecoderGraphBuilder
from .options import DEFAULT_PRECISION
from .plan import ExportPlan, plan_export


def export_model(
    src,
    out: str | os.PathLike,
    *,
    precision: str = DEFAULT_PRECISION,
    block_size: int | None = None,
    asymmetric: bool = False,
    lm_head: str | None = None,
    quant_method: str | None = None,
    all_logits: bool = False,
    context_length: int | None = None,
    force: bool = False,
    config=None,
    progress: bool = True,
) -> Path:
    """Export a ZAYA checkpoint (folder, live `ZayaForCausalLM`, or state_dict + config).

    `precision` int4/int8 quantizes projections, experts and the tied table (`block_size`
    default 32, symmetric unless `asymmetric`, `lm_head` int4/int8 for the table, default the
    precision's, `quant_method` rtn/mse). int4 is the default, as in the CLI: the point is a model
    that fits a laptop; fp32 is the exact reference. An existing `out` is replaced only if `force`.
    """
    out = Path(out)
    if out.exists() and not force:
        raise RequestError(f"{out} already exists; replacing it needs force=True")
    ckpt = open_checkpoint(src, config)
    plan = plan_export(ckpt.dims, precision=precision, block_size=block_size, asymmetric=asymmetric,
                       lm_head=lm_head, quant_method=quant_method, all_logits=all_logits,
                       context_length=context_length)
    check_tensors(ckpt)
    model = DecoderGraphBuilder(ckpt, plan).build()
    _write_artifact(ckpt, model, plan, out, progress)
    return out


def _write_artifact(ckpt: Checkpoint, model: ir.Model, plan: ExportPlan, out: Path, progress: bool) -> None:
    """Everything into a temporary folder beside `out`, renamed into place only when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; an artifact is an ordinary folder
    try:
        _save_graph(model, tmp, ckpt.dims.num_layers, progress)
        _write_side_files(ckpt, tmp)
        _write_genai_config(ckpt, tmp, plan.context_length)
        manifest = _manifest(ckpt, model, plan, tmp)
        (tmp / A.MANIFEST_FILE).write_text(manifest.to_json())
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save_graph(model: ir.Model, folder: Path, num_layers: int, progress: bool) -> None:
    """Serialize; lazy weights are read, converted and written one at a time."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_layers, unit="layer", desc="export", dynamic_ncols=True)
    layer_re = re.compile(r"model\.layers\.(\d+)\.")
    done = -1

    def callback(tensor, info) -> None:
        nonlocal done
        m = layer_re.search(tensor.name or "")
        if bar is not None and m and int(m.group(1)) > done:
            bar.update(int(m.group(1)) - done)
            done = int(m.group(1))

    try:
        ir.save(model, folder / A.MODEL_FILE, external_data=A.DATA_FILE, callback=callback, max_workers=1)
    finally:
        if bar is not None:
            bar.update(num_layers - 1 - done)
            bar.close()


def _write_side_files(ckpt: Checkpoint, folder: Path) -> None:
    (folder / A.CONFIG_FILE).write_text(json.dumps(ckpt.config, indent=2, sort_keys=True, default=str))
    src = ckpt.folder
    gen = src / A.GENERATION_CONFIG_FILE if src else None
    if gen and gen.exists():
        shutil.copyfile(gen, folder / A.GENERATION_CONFIG_FILE)
    else:
        d = ckpt.dims
        gen_cfg = {"bos_token_id": d.bos_token_id, "eos_token_id": d.eos_token_id, "pad_token_id": d.pad_token_id}
        (folder / A.GENERATION_CONFIG_FILE).write_text(json.dumps(gen_cfg, indent=2))
    if src:
        for name in A.TOKENIZER_FILES:
            if (src / name).exists():
                shutil.copyfile(src / name, folder / name)


def _write_genai_config(ckpt: Checkpoint, folder: Path, context_length: int) -> None:
    """onnxruntime-genai can drive the same folder (plain decoding, no Markovian RSA)."""
    d = ckpt.dims
    model = {
        "bos_token_id": d.bos_token_id,
        "context_length": context_length,
        "eos_token_id": d.eos_token_ids if len(d.eos_token_ids) != 1 else d.eos_token_ids[0],
        "pad_token_id": d.pad_token_id if d.pad_token_id is not None else 0,
        "vocab_size": d.vocab_size,
        "type": "decoder",
        "decoder": _genai_decoder(d),
    }
    cfg = {"model": model, "search": _genai_greedy_search(context_length)}
    (folder / A.GENAI_CONFIG_FILE).write_text(json.dumps(cfg, indent=2))


def _genai_decoder(d: ZayaDims) -> dict:
    """The graph file, its shape and its IO names, as onnxruntime-genai's decoder section."""
    return {
        "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
        "filename": A.MODEL_FILE,
        "head_size": d.head_dim,
        "hidden_size": d.hidden_size,
        "num_attention_heads": d.num_heads,
        "num_hidden_layers": d.num_layers,
        "num_key_value_heads": d.num_kv_heads,
        "inputs": {
            "input_ids": A.INPUT_IDS,
            "attention_mask": A.ATTENTION_MASK,
            "past_key_names": A.PAST_KEY,
            "past_value_names": A.PAST_VALUE,
            "past_conv_names": A.PAST_CONV,
            "past_recurrent_names": A.PAST_RECURRENT,
        },
        "outputs": {
            "logits": A.LOGITS,
            "present_key_names": A.PRESENT_KEY,
            "present_value_names": A.PRESENT_VALUE,
            "present_conv_names": A.PRESENT_CONV,
            "present_recurrent_names": A.PRESENT_RECURRENT,
        },
    }


def _genai_greedy_search(context_length: int) -> dict:
    return {
        "do_sample": False,
        "max_length": context_length,
        "min_length": 0,
        "num_beams": 1,
        "num_return_sequences": 1,
        "past_present_share_buffer": False,
        "repetition_penalty": 1.0,
        "temperature": 1.0,
        "top_k": 1,
        "top_p": 1.0,
    }


def _ops_used(model: ir.Model) -> dict:
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for node in model.graph:
        counts[node.domain or "ai.onnx"][node.op_type] += 1
    return {dom: dict(sorted(c.items())) for dom, c in sorted(counts.items())}


def _versions() -> dict:
    import onnxruntime

    v = {"zaya_edge": __version__, "onnx_ir": ir.__version__, "onnxruntime": onnxruntime.__version__}
    with contextlib.suppress(ImportError):
        import transformers

        v["transformers"] = transformers.__version__
    return v


def _manifest(ckpt: Checkpoint, model: ir.Model, plan: ExportPlan, folder: Path) -> A.Manifest:
    """What the exporter promises about the folder it just wrote (hashes of every file in it)."""
    inputs, outputs = A.io_spec(ckpt.dims, plan.all_logits)
    files = {
        p.name: A.file_record(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != A.MANIFEST_FILE
    }
    if ckpt.folder is not None:
        source = Source("folder", str(ckpt.folder), {p.name: A.file_record(p) for p in ckpt.files})
    else:
        source = Source("module")
    return A.Manifest(
        format_version=A.FORMAT_VERSION,
        precision=plan.precision,
        quantization=plan.record(),
        all_logits=plan.all_logits,
        context_length=plan.context_length,
        dims=ckpt.dims,
        inputs=tuple(TensorSpec(n, t, tuple(s)) for n, t, s in inputs),
        outputs=tuple(TensorSpec(n, t, tuple(s)) for n, t, s in outputs),
        ops=_ops_used(model),
        files=files,
        source=source,
        versions=_versions(),
    )


def _replace(tmp: Path, out: Path) -> None:
    """Atomically move the finished folder into place (replacing an existing OUT: force=True)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
