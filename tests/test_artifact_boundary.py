"""An artifact folder is untrusted input: the manifest is typed, every file confined to the folder.

Each damaged folder must be one ArtifactError line from `Artifact.open` (or the first use), never
another exception type and never a file outside the folder read.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest

from zaya_edge import artifact as A
from zaya_edge.errors import ArtifactError
from zaya_edge.runtime.tokenizer import Tokenizer


@pytest.fixture
def art(tiny_artifact, tmp_path):
    dst = tmp_path / "art"
    shutil.copytree(tiny_artifact[1], dst)
    return dst


def _edit_manifest(folder, edit):
    path = folder / A.MANIFEST_FILE
    data = json.loads(path.read_text())
    data = edit(data) or data
    path.write_text(json.dumps(data))


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
    _edit_manifest(art, edit)
    with pytest.raises(ArtifactError, match=needle) as info:
        A.Artifact.open(art)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/hostname", "sub/model.onnx", ".."])
def test_listed_names_must_be_plain_files_of_the_folder(art, name):
    _edit_manifest(art, lambda m: m["files"].update({name: {"bytes": 1, "sha256": "0" * 64}}))
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
    _edit_manifest(art, lambda m: m.update(files={}))
    with pytest.raises(ArtifactError, match="lists no files"):
        A.Artifact.open(art, verify=True)


def test_an_oversized_manifest_is_refused_before_parsing(art):
    (art / A.MANIFEST_FILE).write_bytes(b" " * (A.MAX_MANIFEST_BYTES + 1))
    with pytest.raises(ArtifactError, match="more than"):
        A.Artifact.open(art)


def _mutate(value, rng):
    """One random change somewhere in a JSON value: a type swap, a deletion or garbage."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        if rng.random() < 0.2:
            del value[key]
        else:
            value[key] = _mutate(value[key], rng)
        return value
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        value[i] = _mutate(value[i], rng)
        return value
    return rng.choice([None, True, -1, 0, 2**70, 1.5, float("inf"), "", "x" * 50, [], {}, [1, "a"], {"a": 1}])


def test_random_manifests_and_bytes_give_one_line_or_success(art):
    """A fuzz: 300 mutated manifests and 50 random byte strings; only ArtifactError may escape."""
    original = json.loads((art / A.MANIFEST_FILE).read_text())
    rng = random.Random(0)
    outcomes = {"ok": 0, "refused": 0}
    for trial in range(350):
        if trial < 300:
            text = json.dumps(_mutate(json.loads(json.dumps(original)), rng))
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
