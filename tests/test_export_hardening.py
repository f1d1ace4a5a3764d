"""A checkpoint folder is untrusted input and an export can be killed: refuse, lose nothing, leave nothing.

Every file read from a checkpoint resolves inside it, safetensors headers are checked before a
tensor is read, weights are finite floats, `force=True` replaces only an artifact, SIGTERM cleans
up like Ctrl-C and the next export removes what a SIGKILL left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # noqa: E402

from zaya_edge import artifact as A  # noqa: E402
from zaya_edge.errors import CheckpointError, RequestError  # noqa: E402
from zaya_edge.export import export_model  # noqa: E402
from zaya_edge.export.fixtures.random_model import tiny_model  # noqa: E402

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=13, num_hidden_layers=2)


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sharded(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sharded") / "tiny"
    model.save_pretrained(folder, max_shard_size="200KB")
    return folder


def _export(src, tmp_path, **kw):
    return export_model(src, tmp_path / "out", precision=kw.pop("precision", "fp32"), progress=False, **kw)


def _refused(src, tmp_path, *needles, error=CheckpointError, **kw) -> None:
    """One line naming what is wrong, and neither OUT nor a partial folder beside it."""
    with pytest.raises(error) as exc:
        _export(src, tmp_path, **kw)
    message = str(exc.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def _header(path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_safetensors(path, header, data: bytes) -> None:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


# ---- files of the checkpoint folder ---------------------------------------------------------
def test_symlink_out_of_the_folder_is_refused_but_hub_blobs_are_read(ckpt, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"not": "a tokenizer"}')
    src = shutil.copytree(ckpt, tmp_path / "src")
    (src / "tokenizer.json").symlink_to(secret)
    _refused(src, tmp_path, "tokenizer.json", "outside the checkpoint folder")
    # a Hugging Face cache snapshot links every file to ../../blobs/: that is the checkpoint itself
    repo = tmp_path / "models--zaya"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "rev0"
    snapshot.mkdir(parents=True)
    for f in [*ckpt.iterdir(), secret]:
        name = "tokenizer.json" if f == secret else f.name
        shutil.copyfile(f, repo / "blobs" / f"blob-{name}")
        (snapshot / name).symlink_to(f"../../blobs/blob-{name}")
    out = export_model(snapshot, tmp_path / "hub", precision="fp32", progress=False)
    assert (out / "tokenizer.json").read_text() == secret.read_text()


@pytest.mark.parametrize("how", ["parent", "absolute", "symlink"])
def test_index_cannot_name_a_shard_outside_the_folder(sharded, tmp_path, how):
    src = shutil.copytree(sharded, tmp_path / "src")
    index = json.loads((src / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    shutil.move(src / shard, tmp_path / shard)
    if how == "symlink":
        (src / shard).symlink_to(tmp_path / shard)
    else:
        name = f"../{shard}" if how == "parent" else str(tmp_path / shard)
        index["weight_map"] = {k: name if v == shard else v for k, v in index["weight_map"].items()}
        (src / "model.safetensors.index.json").write_text(json.dumps(index))
    _refused(src, tmp_path, shard, "outside the checkpoint folder")


@pytest.mark.parametrize("name,kind", [("tokenizer.json", "fifo"), (WEIGHTS, "dir"), ("generation_config.json", "dir")])
def test_a_special_file_in_place_of_a_file_is_refused(ckpt, tmp_path, name, kind):
    src = shutil.copytree(ckpt, tmp_path / "src")
    (src / name).unlink(missing_ok=True)
    os.mkfifo(src / name) if kind == "fifo" else (src / name).mkdir()
    _refused(src, tmp_path, name, "not a regular file")


def test_json_files_are_bounded_and_must_be_objects(sharded, tmp_path):
    src = shutil.copytree(sharded, tmp_path / "src")
    (src / "model.safetensors.index.json").write_text("[]")
    _refused(src, tmp_path, "model.safetensors.index.json", "not a JSON object")
    config = (sharded / "config.json").read_text()
    (src / "config.json").write_text(config[:-1] + " " * (9 << 20) + "}")  # valid JSON, 9 MiB
    _refused(src, tmp_path, "config.json", "MiB")


# ---- safetensors headers ---------------------------------------------------------------------
@pytest.mark.parametrize("case", ["huge", "past_the_end", "garbage", "list"])
def test_safetensors_header_is_bounded_and_parsed(ckpt, tmp_path, case):
    src = shutil.copytree(ckpt, tmp_path / "src")
    raw = (ckpt / WEIGHTS).read_bytes()
    if case in ("huge", "past_the_end"):
        n = 200 << 20 if case == "huge" else len(raw)
        (src / WEIGHTS).write_bytes(struct.pack("<Q", n) + raw[8:])
    else:
        _write_safetensors(src / WEIGHTS, b"\xff" * 16 if case == "garbage" else b"[]", b"")
    _refused(src, tmp_path, WEIGHTS, "header")


@pytest.mark.parametrize("case,needle", [("overlap", "overlap"), ("outside", "outside the file"),
                                         ("shape", "need")])
def test_tensor_offsets_must_fit_their_file_and_not_overlap(ckpt, tmp_path, case, needle):
    header, data = _header(ckpt / WEIGHTS)
    spans = sorted((e["data_offsets"], name) for name, e in header.items() if name != "__metadata__")
    (start, end), name = spans[1] if case == "overlap" else spans[-1]
    if case == "shape":
        header[name]["shape"] = [2 * header[name]["shape"][0]] + header[name]["shape"][1:]
    else:
        shift = -4 if case == "overlap" else 4096
        header[name]["data_offsets"] = [start + shift, end + shift]
    src = shutil.copytree(ckpt, tmp_path / "src")
    _write_safetensors(src / WEIGHTS, header, data)
    _refused(src, tmp_path, WEIGHTS, name, needle)


# ---- the weights themselves ------------------------------------------------------------------
def _tampered(source, ckpt, model, tmp_path, name, change):
    """(src, config) of a folder or a state_dict whose tensor `name` is `change(tensor)`."""
    if source == "state_dict":
        sd = dict(model.state_dict())
        sd[name] = change(sd[name].clone())
        return sd, model.config
    src = shutil.copytree(ckpt, tmp_path / "src")
    tensors = load_file(src / WEIGHTS)
    tensors[name] = change(tensors[name].clone())
    save_file(tensors, src / WEIGHTS, metadata={"format": "pt"})
    return src, None


@pytest.mark.parametrize("source,dtype", [("folder", "I32"), ("state_dict", "torch.int64")])
def test_integer_weights_are_refused(ckpt, model, tmp_path, source, dtype):
    name = "model.layers.1.post_attention_layernorm.weight"
    change = (lambda t: t.to(torch.int32)) if source == "folder" else (lambda t: t.to(torch.int64))
    src, config = _tampered(source, ckpt, model, tmp_path, name, change)
    _refused(src, tmp_path, name, dtype, config=config)


@pytest.mark.parametrize("name", ["model.layers.1.mlp.experts.down_proj", "model.norm.weight"])  # external, inline
@pytest.mark.parametrize("precision", ["fp32", "int4"])
@pytest.mark.parametrize("source", ["folder", "state_dict"])
def test_non_finite_weights_are_refused(ckpt, model, tmp_path, source, precision, name):
    def poison(t):
        t.view(-1)[7] = float("nan") if source == "folder" else float("inf")
        return t

    src, config = _tampered(source, ckpt, model, tmp_path, name, poison)
    _refused(src, tmp_path, name, "NaN or infinite", config=config, precision=precision)


# ---- what force=True may replace ---------------------------------------------------------------
def test_force_replaces_only_an_artifact_or_an_empty_folder(ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(RequestError, match="not a zaya-edge artifact.*force=True"):
        _export(ckpt, tmp_path, force=True)
    assert (out / "thesis.tex").read_text() == "years of work"
    shutil.rmtree(out)
    out.write_text("a file")
    with pytest.raises(RequestError, match="not a folder"):
        _export(ckpt, tmp_path, force=True)
    assert out.read_text() == "a file"
    out.unlink()
    out.mkdir()
    _export(ckpt, tmp_path, force=True)  # an empty folder
    (out / "stray.txt").write_text("")
    _export(ckpt, tmp_path, force=True)  # an artifact (strays and all)
    assert A.Artifact.open(out, verify=True) and not (out / "stray.txt").exists()
    assert not list(tmp_path.glob(".out.*"))


# ---- interrupted exports -----------------------------------------------------------------------
_SLOW_EXPORT = """
import sys, time
from zaya_edge.export import checkpoint
read = checkpoint.FolderCheckpoint.read
checkpoint.FolderCheckpoint.read = lambda self, name: (time.sleep(0.05), read(self, name))[1]
from zaya_edge.app.cli import main
main(["export", sys.argv[1], "-o", sys.argv[2], "--precision", "fp32", "--quiet"])
"""


def _kill_mid_export(ckpt, out, sig) -> subprocess.CompletedProcess:
    """Start a (slowed) CLI export, send `sig` once its partial folder is being written."""
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_EXPORT, str(ckpt), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any((p / A.DATA_FILE).exists() for p in out.parent.glob(f".{out.name}.partial-*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_sigterm_mid_export_leaves_nothing(ckpt, tmp_path):
    done = _kill_mid_export(ckpt, tmp_path / "out", signal.SIGTERM)
    assert done.returncode == 130 and done.stderr.strip() == "interrupted", done
    assert list(tmp_path.iterdir()) == []


def test_the_export_after_a_sigkill_removes_its_partial_but_no_live_one(ckpt, tmp_path):
    out = tmp_path / "out"
    assert _kill_mid_export(ckpt, out, signal.SIGKILL).returncode == -signal.SIGKILL
    assert len(list(tmp_path.glob(".out.partial-*"))) == 1
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / f".out.old-{gone.pid}").mkdir()  # set aside by a replacement that was killed
    live = tmp_path / ".out.partial-live"  # a concurrent export, still running: this process
    live.mkdir()
    (live / ".zaya_edge-export.pid").write_text(f"{os.getpid()} {socket.gethostname()}\n")
    _export(ckpt, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial-live", "out"]
    assert ".zaya_edge-export.pid" not in os.listdir(out)
    A.Artifact.open(out, verify=True)
