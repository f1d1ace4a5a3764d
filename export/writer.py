"""Write an artifact folder: all or nothing.

Everything is written into a hidden temporary folder beside OUT and renamed into place at the
end, so an interrupted or failed export never leaves something that looks like an artifact.
SIGTERM unwinds like Ctrl-C (the temporary folder is removed); after a SIGKILL, the next export
into the same OUT removes the partial folders whose exporting process is gone. `force=True`
replaces only what is recognisably an artifact (or an empty folder), never anything else.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path

import onnx_ir as ir
from onnx_ir.serde import SerdeError

from zaya_edge import __version__
from zaya_edge import artifact as A
from zaya_edge.config import ZayaDims
from zaya_edge.errors import RequestError, ZayaEdgeError
from zaya_edge.manifest import Source
from zaya_edge.typed_json import json_object

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
    kv_cache: str | None = None,
    fused_moe: bool | None = None,
    force: bool = False,
    config=None,
    progress: bool = True,
) -> Path:
    """Export a ZAYA checkpoint (folder, live `ZayaForCausalLM`, or state_dict + config).

    `precision` int4/int8 quantizes projections, experts and the tied table (`block_size`
    default 32, symmetric unless `asymmetric`, `lm_head` int4/int8 for the table, default the
    precision's, `quant_method` rtn/mse). int4 is the default, as in the CLI: the point is a model
    that fits a laptop; fp32 is the exact reference. `kv_cache` fp16/fp32 is the key/value cache's
    dtype (default fp16 for int4/int8, fp32 for fp32). `fused_moe` (default
    options.DEFAULT_FUSED_MOE) emits int4 experts as ai.zaya::ExpertMoE nodes where the native
    kernel covers them; False keeps the stock QMoE / MatMulNBits graph. An existing `out` is
    replaced only if `force`.
    """
    out = Path(out)
    _check_replaceable(out, force)
    _remove_stale(out)
    with _sigterm_interrupts():
        ckpt = open_checkpoint(src, config)
        plan = plan_export(ckpt.dims, precision=precision, block_size=block_size, asymmetric=asymmetric,
                           lm_head=lm_head, quant_method=quant_method, all_logits=all_logits,
                           context_length=context_length, kv_cache=kv_cache, fused_moe=fused_moe)
        check_tensors(ckpt)
        model = DecoderGraphBuilder(ckpt, plan).build()
        _write_artifact(ckpt, model, plan, out, progress, force)
    return out


def _write_artifact(ckpt: Checkpoint, model: ir.Model, plan: ExportPlan, out: Path, progress: bool,
                    force: bool) -> None:
    """Everything into a temporary folder beside `out`, renamed into place only when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; an artifact is an ordinary folder
    try:
        (tmp / OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")
        _save_graph(model, tmp, ckpt.dims.num_layers, progress)
        _write_side_files(ckpt, tmp)
        _write_genai_config(ckpt, tmp, plan.context_length)
        manifest = _manifest(ckpt, model, plan, tmp)
        (tmp / A.MANIFEST_FILE).write_text(manifest.to_json())
        _check_replaceable(out, force)  # again: OUT may have appeared since the export began
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (out / OWNER_FILE).unlink(missing_ok=True)


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
    except SerdeError as exc:
        raise _cause(exc) from None
    finally:
        if bar is not None:
            bar.update(num_layers - 1 - done)
            bar.close()


def _cause(exc: SerdeError) -> BaseException:
    """onnx_ir wraps what a lazy weight raised in SerdeErrors (inline tensors only); a CheckpointError
    naming the tensor, or a full disk, is what the user should see, in one line."""
    cause = exc
    while isinstance(cause, SerdeError) and cause.__cause__ is not None:
        cause = cause.__cause__
    return cause if isinstance(cause, (ZayaEdgeError, OSError)) else exc


def _write_side_files(ckpt: Checkpoint, folder: Path) -> None:
    """config.json as parsed; generation_config and tokenizer files from the real paths the
    checkpoint confined (inside the source folder, regular files, bounded)."""
    (folder / A.CONFIG_FILE).write_text(json.dumps(ckpt.config, indent=2, sort_keys=True, default=str))
    if A.GENERATION_CONFIG_FILE not in ckpt.side_files:
        d = ckpt.dims
        gen_cfg = {"bos_token_id": d.bos_token_id, "eos_token_id": d.eos_token_id, "pad_token_id": d.pad_token_id}
        (folder / A.GENERATION_CONFIG_FILE).write_text(json.dumps(gen_cfg, indent=2))
    for name, real in ckpt.side_files.items():
        shutil.copyfile(real, folder / name)


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
    inputs, outputs = A.io_spec(ckpt.dims, plan.all_logits, plan.kv_dtype)
    files = {
        p.name: A.file_record(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in (A.MANIFEST_FILE, OWNER_FILE)
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
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        ops=_ops_used(model),
        files=files,
        source=source,
        versions=_versions(),
        kv_dtype=plan.kv_dtype,
    )


def _replace(tmp: Path, out: Path) -> None:
    """Atomically move the finished folder into place (replacing an existing OUT: force=True)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)  # one of a dead process that had this pid
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


# ---- what may be replaced, and what is left of dead exports ---------------------------------
OWNER_FILE = ".zaya_edge-export.pid"  # inside a partial folder: "pid host" of the export writing it


def _check_replaceable(out: Path, force: bool) -> None:
    """An existing OUT is replaced only with force=True and only if it is an artifact or an empty
    folder: a mistyped OUT must never delete someone's folder or file."""
    if not os.path.lexists(out):
        return
    if not force:
        raise RequestError(f"{out} already exists; replacing it needs force=True")
    if out.is_symlink() or not out.is_dir():
        raise RequestError(f"{out} is not a folder; force=True replaces only a zaya-edge artifact folder")
    try:
        empty = next(out.iterdir(), None) is None
    except OSError as exc:
        raise RequestError(f"cannot read {out}: {exc.strerror or exc}") from None
    if not empty and not _is_artifact(out):
        raise RequestError(
            f"{out} is not a zaya-edge artifact (no {A.MANIFEST_FILE} manifest); force=True replaces only "
            "an artifact or an empty folder, so nothing was deleted"
        )


def _is_artifact(folder: Path) -> bool:
    """The folder's manifest is a JSON object with a format_version (any version: an artifact of
    an older zaya-edge is still one to replace)."""
    manifest = folder / A.MANIFEST_FILE
    try:
        if manifest.is_symlink() or not manifest.is_file() or manifest.stat().st_size > A.MAX_MANIFEST_BYTES:
            return False
        data = json_object(manifest.read_bytes(), str(manifest))
    except (OSError, ZayaEdgeError):
        return False
    return "format_version" in data


def _remove_stale(out: Path) -> None:
    """Remove the `.OUT.partial-*` and `.OUT.old-PID` folders beside OUT whose export process is
    gone: a SIGKILL or a power cut leaves them and nothing else would. A live export's stay."""
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return
    for p in entries:
        if p.name.startswith(f".{out.name}.partial-"):
            pid = _owner(p)
        elif p.name.startswith(f".{out.name}.old-"):
            pid = _pid(p.name.rsplit("-", 1)[1])
        else:
            continue
        if pid is not None and not _alive(pid) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


def _owner(partial: Path) -> int | None:
    """The pid writing a partial folder when it is this host's (a disk may be shared); None, and
    the folder is left alone, when that is unknown."""
    try:
        with open(partial / OWNER_FILE, encoding="ascii") as f:
            pid, host = f.read(300).split()
    except (OSError, ValueError):  # ValueError: not two words, or not ASCII
        return None
    return _pid(pid) if host == socket.gethostname() else None


def _pid(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process, alive
        return True
    return True


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (kill, a service manager, a closing session) raises KeyboardInterrupt as Ctrl-C
    does, so a failed export's cleanup runs. Only the main thread may set a handler; the previous
    one is back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
