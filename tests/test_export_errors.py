"""Bad input to `zaya-edge export`: one clear line, exit code != 0, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # noqa: E402

from zaya_edge.export import export_model  # noqa: E402
from zaya_edge.export.fixtures.random_model import tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    tiny_model(seed=7, num_hidden_layers=2).save_pretrained(folder)
    return folder


def _copy(ckpt, dst):
    dst.mkdir()
    for f in ckpt.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def run_cli(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "zaya_edge", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    return proc.returncode, proc.stderr.strip()


def assert_one_line_error(rc, err, *needles):
    assert rc != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_not_a_zaya_config(ckpt, tmp_path):
    src = _copy(ckpt, tmp_path / "llama")
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "llama"
    (src / "config.json").write_text(json.dumps(cfg))
    rc, err = run_cli("export", src, "-o", tmp_path / "out")
    assert_one_line_error(rc, err, "not a ZAYA config", "llama")


def test_missing_tensor_is_named(ckpt, tmp_path):
    src = _copy(ckpt, tmp_path / "missing")
    tensors = load_file(src / "model.safetensors")
    del tensors["model.layers.1.self_attn.o_proj.weight"]
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    rc, err = run_cli("export", src, "-o", tmp_path / "out")
    assert_one_line_error(rc, err, "missing tensor", "model.layers.1.self_attn.o_proj.weight")
    assert not (tmp_path / "out").exists()


def test_shape_mismatch_names_tensor_and_shapes(ckpt, tmp_path):
    src = _copy(ckpt, tmp_path / "shape")
    tensors = load_file(src / "model.safetensors")
    tensors["model.layers.0.mlp.gate.down_proj.weight"] = torch.zeros(31, 64)
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    rc, err = run_cli("export", src, "-o", tmp_path / "out")
    assert_one_line_error(rc, err, "model.layers.0.mlp.gate.down_proj.weight", "[31, 64]", "[32, 64]")


def test_pickle_only_checkpoint_is_refused(ckpt, tmp_path):
    src = tmp_path / "pickle"
    src.mkdir()
    (src / "config.json").write_text((ckpt / "config.json").read_text())
    torch.save(load_file(ckpt / "model.safetensors"), src / "pytorch_model.bin")
    rc, err = run_cli("export", src, "-o", tmp_path / "out")
    assert_one_line_error(rc, err, "pickle", "safetensors")


@pytest.mark.parametrize("precision", ["int3", "bf16"])
def test_unsupported_precision(ckpt, tmp_path, precision):
    rc, err = run_cli("export", ckpt, "-o", tmp_path / "out", "--precision", precision)
    assert_one_line_error(rc, err, precision)


def test_existing_output_needs_force(ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, err = run_cli("export", ckpt, "-o", out)
    assert_one_line_error(rc, err, "already exists", "--force")
    assert (out / "keep.txt").read_text() == "mine"
    # --force replaces an artifact or an empty folder, never a folder of someone else's files
    rc, err = run_cli("export", ckpt, "-o", out, "--force", "--quiet")
    assert_one_line_error(rc, err, "not a zaya-edge artifact")
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    rc, err = run_cli("export", ckpt, "-o", out, "--force", "--quiet")
    assert rc == 0, err
    assert (out / "zaya_edge.json").exists()
    rc, err = run_cli("export", ckpt, "-o", out, "--force", "--quiet")  # over the artifact it just wrote
    assert rc == 0, err


def test_debug_shows_traceback(ckpt, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "zaya_edge", "--debug", "export", str(tmp_path / "nope"), "-o", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_failed_export_leaves_nothing(ckpt, tmp_path, monkeypatch):
    """A failure while weights are being written leaves no artifact and no temporary folder."""
    from zaya_edge.export import checkpoint

    calls = {"n": 0}
    real_read = checkpoint.FolderCheckpoint.read

    def failing_read(self, name):
        calls["n"] += 1
        if calls["n"] == 10:
            raise OSError("disk on fire")
        return real_read(self, name)

    monkeypatch.setattr(checkpoint.FolderCheckpoint, "read", failing_read)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk on fire"):
        export_model(ckpt, out, progress=False)
    assert calls["n"] == 10
    assert list(tmp_path.iterdir()) == []


def test_the_cli_names_its_flags_where_the_library_names_arguments(ckpt, tmp_path):
    """The library says `block_size=32`; a person who typed flags reads `--block-size 32`."""
    rc, err = run_cli("export", ckpt, "-o", tmp_path / "o", "--precision", "fp32", "--block-size", "32")
    assert_one_line_error(rc, err, "--block-size 32")
    assert "block_size=" not in err
