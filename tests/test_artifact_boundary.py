"""An artifact folder is untrusted input: the manifest is typed, every file confined to the folder.

Each damaged folder must be one ArtifactError line from `Artifact.open` (or the first use), never
another exception type and never a file outside the folder read.
"""

from __future__ import annotations

import json
import random
import shutil
from types import SimpleNamespace
from typing import NamedTuple

import pytest

from fuzz_util import CRAFTED, edit_manifest, mutated

from zaya_edge import artifact as A
from zaya_edge.errors import ArtifactError
from zaya_edge.ort_session import _check_io
from zaya_edge.runtime.tokenizer import Tokenizer


@pytest.mark.parametrize("edit, needle", [
    (lambda m: [m], "expected an object, got a list"),
    (lambda m: m.update(files="model.onnx"), "files: expected an object, got a string"),
    (lambda m: m.update(context_length="4096"), "context_length: expected an integer, got a string"),
    (lambda m: m["dims"].update(num_layers=True), "dims.num_layers: expected an integer, got a boolean"),
    (lambda m: m.update(colour="blue"), "unknown field 'colour'"),
    (lambda m: {k: v for k, v in m.items() if k != "ops"}, "missing field 'ops'"),
    (lambda m: m["files"][A.DATA_FILE].update(bytes=-1), "malformed"),
    (lambda m: m["dims"].update(vocab_size=999), "do not match the manifest"),
])
def test_a_malformed_manifest_is_one_line(art, edit, needle):
    edit_manifest(art, edit)
    with pytest.raises(ArtifactError, match=needle) as info:
        A.Artifact.open(art)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/hostname", "sub/model.onnx", ".."])
def test_listed_names_must_be_plain_files_of_the_folder(art, name):
    edit_manifest(art, lambda m: m["files"].update({name: {"bytes": 1, "sha256": "0" * 64}}))
    with pytest.raises(ArtifactError, match="plain file name"):
        A.Artifact.open(art)


def test_a_symlink_leading_out_of_the_folder_is_refused(art, tmp_path):
    outside = tmp_path / "elsewhere.json"
    shutil.copyfile(art / A.CONFIG_FILE, outside)  # same size: only the confinement can tell
    (art / A.CONFIG_FILE).unlink()
    (art / A.CONFIG_FILE).symlink_to(outside)
    with pytest.raises(ArtifactError, match="leads outside"):
        A.Artifact.open(art)


def test_a_directory_in_place_of_a_listed_file_is_refused(art):
    (art / A.GENAI_CONFIG_FILE).unlink()
    (art / A.GENAI_CONFIG_FILE).mkdir()
    with pytest.raises(ArtifactError, match="not a regular file"):
        A.Artifact.open(art)


def test_an_unlisted_template_is_never_used(art):
    before = Tokenizer.from_artifact(A.Artifact.open(art)).chat_template
    (art / A.CHAT_TEMPLATE_FILE).write_text("{{ 'INJECTED' }}")
    artifact = A.Artifact.open(art, verify=True)  # the stray file is not the artifact's
    assert Tokenizer.from_artifact(artifact).chat_template == before
    with pytest.raises(ArtifactError, match="does not list"):
        artifact.path(A.CHAT_TEMPLATE_FILE)


def test_verify_refuses_a_manifest_that_lists_nothing(art):
    edit_manifest(art, lambda m: m.update(files={}))
    with pytest.raises(ArtifactError, match="lists no files"):
        A.Artifact.open(art, verify=True)


def test_an_oversized_manifest_is_refused_before_parsing(art):
    (art / A.MANIFEST_FILE).write_bytes(b" " * (A.MAX_MANIFEST_BYTES + 1))
    with pytest.raises(ArtifactError, match="more than"):
        A.Artifact.open(art)


def test_random_manifests_and_bytes_give_one_line_or_success(art):
    """A fuzz: 300 mutated manifests and 50 random byte strings; only ArtifactError may escape."""
    original = json.loads((art / A.MANIFEST_FILE).read_text())
    rng = random.Random(0)
    outcomes = {"ok": 0, "refused": 0}
    for trial in range(350):
        if trial < 300:
            text = json.dumps(mutated(original, rng))
            (art / A.MANIFEST_FILE).write_text(text)
        else:
            (art / A.MANIFEST_FILE).write_bytes(rng.randbytes(rng.randrange(1, 400)))
        try:
            A.Artifact.open(art)
            outcomes["ok"] += 1
        except ArtifactError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 250  # almost every mutation must be caught
    for text in CRAFTED:  # deep nesting and a 5000-digit number were a RecursionError / ValueError
        (art / A.MANIFEST_FILE).write_text(text, encoding="utf-8")
        with pytest.raises(ArtifactError) as info:
            A.Artifact.open(art)
        assert "\n" not in str(info.value)


def _logits_of_vocab(vocab):
    def edit(m):
        m["dims"]["vocab_size"] = vocab
        next(o for o in m["outputs"] if o[0] == A.LOGITS)[2][-1] = vocab
    return edit


def test_a_manifest_edited_consistently_is_refused_against_the_graph(art):
    """Dims and IO changed together pass the manifest's own check; the graph still tells (it did not)."""
    edit_manifest(art, _logits_of_vocab(999))
    artifact = A.Artifact.open(art)  # the manifest agrees with itself
    with pytest.raises(ArtifactError, match=r"graph output logits is float32 \['batch', 1, 999\] in the manifest but "
                                            r"tensor\(float\) \['batch', 1, \d+\] in model.onnx") as info:
        artifact.open_session()
    assert "\n" not in str(info.value)


class _Arg(NamedTuple):
    name: str
    type: str
    shape: list


def _fake_session(art, change):
    artifact = A.Artifact.open(art)
    types = {"int64": "tensor(int64)", "float32": "tensor(float)"}
    ins = [_Arg(s.name, types[s.dtype], list(s.shape)) for s in artifact.manifest.inputs]
    outs = [_Arg(s.name, types[s.dtype], list(s.shape)) for s in artifact.manifest.outputs]
    change(ins, outs)
    return SimpleNamespace(get_inputs=lambda: ins, get_outputs=lambda: outs), artifact.manifest


@pytest.mark.parametrize("change, needle", [
    (lambda i, o: None, None),
    (lambda i, o: i.__setitem__(0, i[0]._replace(type="tensor(int32)")), "graph input input_ids is int64"),
    (lambda i, o: o.__setitem__(1, o[1]._replace(shape=["batch", 3, "present_sequence", 32])), "output present.0"),
    (lambda i, o: i.__setitem__(2, i[2]._replace(shape=["batch", "heads", "past_sequence", 32])), "past_key_values.0"),
    (lambda i, o: o.__setitem__(0, o[0]._replace(shape=["batch", 1])), "graph output logits"),
    (lambda i, o: i.pop(), "missing"),
])
def test_graph_dtypes_and_static_dims_are_checked(art, change, needle):
    session, manifest = _fake_session(art, change)
    if needle is None:
        _check_io(session, manifest)
        return
    with pytest.raises(ArtifactError, match=needle):
        _check_io(session, manifest)


def test_a_manifest_promising_more_context_than_the_graph_holds_is_one_line(art):
    """context_length raised past the graph's RoPE tables: the run fails inside onnxruntime, and
    that reaches the caller as one ArtifactError, not onnxruntime's traceback."""
    from zaya_edge.runtime import Engine, SamplingParams

    real = A.Artifact.open(art).context_length
    edit_manifest(art, lambda m: m.update(context_length=real * 4))
    engine = Engine.load(art)
    with pytest.raises(ArtifactError, match="does not hold what its manifest says") as info:
        engine.generate([5] * (real + 8), SamplingParams(max_new_tokens=2)).text()
    assert "\n" not in str(info.value)


def test_quality_on_such_an_artifact_is_one_line_too(art):
    from zaya_edge.app.quality import quality

    real = A.Artifact.open(art).context_length
    edit_manifest(art, lambda m: m.update(context_length=real * 4))
    with pytest.raises(ArtifactError, match="does not hold what its manifest says"):
        quality(art, art, length=real + 8)
