"""Bad artifacts and bad requests: each a clear one-line error, and a torch-free runtime."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from zaya_edge import artifact as A
from zaya_edge.errors import ZayaEdgeError
from zaya_edge.runtime import Engine, SamplingParams


def test_missing_external_data(art):
    (art / A.DATA_FILE).unlink()
    with pytest.raises(ZayaEdgeError, match="model.onnx.data is missing"):
        Engine.load(art)


def test_truncated_external_data(art):
    data = art / A.DATA_FILE
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(ZayaEdgeError, match="truncated"):
        Engine.load(art)


def test_corrupted_model_detected_by_session(art):
    model = art / A.MODEL_FILE
    raw = bytearray(model.read_bytes())
    raw[100:4000] = bytes(3900)  # same size, garbage inside
    model.write_bytes(bytes(raw))
    with pytest.raises(ZayaEdgeError, match="corrupt"):
        Engine.load(art)


def test_corrupted_data_detected_by_verify(art):
    data = art / A.DATA_FILE
    raw = bytearray(data.read_bytes())
    raw[10:20] = b"x" * 10
    data.write_bytes(bytes(raw))
    Engine.load(art)  # sizes match: only the hash check can tell
    with pytest.raises(ZayaEdgeError, match="does not match its manifest hash"):
        Engine.load(art, verify=True)


def test_format_version_mismatch(art):
    m = json.loads((art / A.MANIFEST_FILE).read_text())
    m["format_version"] = A.FORMAT_VERSION + 1
    (art / A.MANIFEST_FILE).write_text(json.dumps(m))
    with pytest.raises(ZayaEdgeError, match="format version"):
        Engine.load(art)


def test_io_mismatch_between_manifest_and_graph(art):
    m = json.loads((art / A.MANIFEST_FILE).read_text())
    m["inputs"][0][0] = "token_ids"
    (art / A.MANIFEST_FILE).write_text(json.dumps(m))
    with pytest.raises(ZayaEdgeError, match="do not match the manifest"):
        Engine.load(art)


def test_not_an_artifact(tmp_path):
    with pytest.raises(ZayaEdgeError, match="not a zaya-edge artifact"):
        Engine.load(tmp_path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"top_k": -1}, "top_k"),
    ],
)
def test_bad_sampling_parameters(kwargs, message):
    with pytest.raises(ZayaEdgeError, match=message):
        SamplingParams(**kwargs)


def test_empty_prompt_and_prompt_over_context(tiny_artifact):
    engine = Engine.load(tiny_artifact[1])
    with pytest.raises(ZayaEdgeError, match="empty prompt"):
        engine.generate("   ")
    with pytest.raises(ZayaEdgeError, match="empty prompt"):
        engine.generate([])
    long = "word " * 2000
    with pytest.raises(ZayaEdgeError, match="exceeds the context length"):
        engine.generate(long, SamplingParams(max_new_tokens=10))
    with pytest.raises(ZayaEdgeError, match="exceeds the context length"):
        engine.generate([5, 6, 7], SamplingParams(max_new_tokens=engine.context_length))


def test_cli_run_errors_are_one_line(art):
    (art / A.DATA_FILE).unlink()
    proc = subprocess.run([sys.executable, "-m", "zaya_edge", "run", str(art), "hi"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


def test_runtime_runs_where_torch_cannot_be_imported(tiny_artifact):
    """Imports and generates in a process in which `import torch`/`transformers` fail."""
    script = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'transformers', 'onnx_ir', 'safetensors'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        try:
            import torch
            raise SystemExit('torch importable')
        except ImportError:
            pass
        import zaya_edge
        from zaya_edge.runtime import Engine, SamplingParams
        engine = Engine.load({str(tiny_artifact[1])!r})
        text = engine.generate('hello', SamplingParams(max_new_tokens=8, seed=0, ignore_eos=True)).text()
        assert not any(m.split('.')[0] in ('torch', 'transformers') or m.startswith('zaya_edge.export') for m in sys.modules)
        print('OK', len(text))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK")
