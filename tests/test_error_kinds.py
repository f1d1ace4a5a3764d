"""An embedding app can tell mistakes apart by type: bad artifact, bad checkpoint, bad request,
context full — each still a ZayaEdgeError, so `except ZayaEdgeError` keeps catching all of them."""

from __future__ import annotations

import json

import pytest

from zaya_edge.errors import ArtifactError, CheckpointError, ContextFullError, RequestError, ZayaEdgeError
from zaya_edge.runtime import Engine, Request, SamplingParams


def test_the_kinds_are_project_errors():
    for kind in (ArtifactError, CheckpointError, RequestError, ContextFullError):
        assert issubclass(kind, ZayaEdgeError)
    assert issubclass(ContextFullError, RequestError)


def test_runtime_errors_have_their_kind(tiny_artifact, tmp_path):
    with pytest.raises(ArtifactError):
        Engine.load(tmp_path)
    engine = Engine.load(tiny_artifact[1])
    with pytest.raises(RequestError):
        engine.generate("   ")
    with pytest.raises(RequestError):
        engine.generate([engine.dims.vocab_size + 5])
    with pytest.raises(RequestError):
        SamplingParams(temperature=-1)
    with pytest.raises(ContextFullError):
        engine.generate([5, 6, 7], SamplingParams(max_new_tokens=engine.context_length))


def test_export_errors_have_their_kind(tiny_checkpoint, tmp_path):
    pytest.importorskip("torch")
    from zaya_edge.export import export_model

    not_zaya = tmp_path / "llama"
    not_zaya.mkdir()
    (not_zaya / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError):
        export_model(not_zaya, tmp_path / "out", precision="fp32", progress=False)
    with pytest.raises(RequestError):
        export_model(tiny_checkpoint[1], tmp_path / "out", precision="int3", progress=False)


def test_the_python_api_validates_like_the_cli(tiny_artifact):
    """generate_batch and chat get the checks generate has (ids were once computed on silently)."""
    engine = Engine.load(tiny_artifact[1])
    vocab = engine.dims.vocab_size
    for ids in [(5, vocab), (5, -1), (5, 2.0), (True, 5)]:
        with pytest.raises(RequestError, match="outside the vocabulary"):
            engine.generate_batch([Request((4, 5)), Request(ids)])
    with pytest.raises(ContextFullError):
        engine.generate_batch([Request((4, 5), SamplingParams(max_new_tokens=engine.context_length))])
    assert len(engine.generate_batch([Request((4, 5), SamplingParams(max_new_tokens=2))])[0].tokens) <= 2


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -0.5])
def test_a_temperature_must_be_finite(value):
    with pytest.raises(RequestError, match="temperature"):
        SamplingParams(temperature=value)
