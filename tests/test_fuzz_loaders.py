"""A fuzz of every file the runtime reads: random bytes and randomly mutated JSON (or template text)
in generation_config.json, tokenizer.json, tokenizer_config.json, chat_template.jinja and an RSA
checkpoint. Each must load (and be used) or be refused with one ZayaEdgeError line — never another
exception type. Artifact files are listed in the manifest at their new size, so only content is wrong.
"""

from __future__ import annotations

import json
import random

import pytest

from fuzz_util import CRAFTED, mutated, write_listed
from rsa_fakes import PROBLEM, FakeEngine, rsa

from zaya_edge import artifact as A
from zaya_edge.app.files import JsonCheckpoint
from zaya_edge.errors import ZayaEdgeError
from zaya_edge.runtime import Engine
from zaya_edge.runtime.tokenizer import DEFAULT_CHAT_TEMPLATE, StreamDecoder, Tokenizer

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
FRAGMENTS = ["{%", "%}", "{{", "}}", "{#", "#}", " for m in messages ", " endfor ", " if ", " endif ", " else ",
             "|", "|join", "|tojson", "|length", "loop.", "index", "(", ")", "[", "]", "~", " * ", " ** ", " % ",
             "'x'", "10", "99999999", "range(", " macro f(a) ", " endmacro ", "f(", " set ns = namespace(a=1) ",
             "ns.a", "message['content']", ".upper()", "raise_exception('no')", " recursive ", "loop(", "\n", "-"]


def _outcome(label: str, trial: int, use) -> str:
    """'ok' or 'refused' (one ZayaEdgeError line); anything else fails the test, naming the trial."""
    try:
        use()
        return "ok"
    except ZayaEdgeError as exc:
        assert "\n" not in str(exc), f"{label} trial {trial}: a message of several lines: {exc!r}"
        return "refused"
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a Rust panic in tokenizers is a BaseException
        raise AssertionError(f"{label} trial {trial}: {type(exc).__name__}: {exc}") from exc


def _contents(original, rng, trials: int, garbage: int, crafted=CRAFTED):
    """`trials` mutated copies of a JSON value (1-3 changes each), `garbage` random byte strings, then
    the crafted JSON texts."""
    for trial in range(trials + garbage):
        if trial < trials:
            yield trial, json.dumps(mutated(original, rng, rng.randint(1, 3)))
        else:
            yield trial, rng.randbytes(rng.randrange(1, 300))
    yield from enumerate(crafted, trials + garbage)


def _use_tokenizer(folder):
    tok = Tokenizer.from_artifact(A.Artifact.open(folder))
    if tok is None:
        return
    ids = tok.chat_prompt("hi there")
    decoder = StreamDecoder(tok)
    "".join(decoder.push(i) for i in ids) + decoder.flush()
    tok.render_chat(MESSAGES)


@pytest.mark.parametrize("name, trials", [(A.TOKENIZER_FILE, 150), (A.TOKENIZER_CONFIG_FILE, 150)])
def test_tokenizer_files(art, name, trials):
    original = json.loads((art / name).read_text())
    rng = random.Random(f"{name}:0")
    seen = {"ok": 0, "refused": 0}
    for trial, content in _contents(original, rng, trials, 30):
        write_listed(art, name, content)
        seen[_outcome(name, trial, lambda: _use_tokenizer(art))] += 1
    assert seen["refused"] >= 30  # every garbage byte string at least


def test_generation_config(art):
    original = json.loads((art / A.GENERATION_CONFIG_FILE).read_text())
    rng = random.Random(1)
    seen = {"ok": 0, "refused": 0}
    for trial, content in _contents(original, rng, 150, 30):
        write_listed(art, A.GENERATION_CONFIG_FILE, content)
        if trial % 15 == 0:  # the whole load now and then; the eos ids (all it reads of the file) every time
            seen[_outcome("generation_config", trial, lambda: Engine.load(art))] += 1
        else:
            seen[_outcome("generation_config", trial, lambda: A.Artifact.open(art).eos_token_ids)] += 1
    assert seen["refused"] >= 30 and seen["ok"] > 0


def _mutated_template(rng) -> str:
    text = DEFAULT_CHAT_TEMPLATE
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(text) + 1)
        if rng.random() < 0.3:
            text = text[:at] + text[at + rng.randrange(1, 20):]
        else:
            text = text[:at] + rng.choice(FRAGMENTS) + text[at:]
    return text


def test_chat_template(art):
    rng = random.Random(2)
    seen = {"ok": 0, "refused": 0}
    for trial in range(230):
        content = _mutated_template(rng) if trial < 200 else rng.randbytes(rng.randrange(1, 300))
        write_listed(art, A.CHAT_TEMPLATE_FILE, content)
        seen[_outcome("chat_template", trial, lambda: _use_tokenizer(art))] += 1
    assert seen["refused"] >= 30 and seen["ok"] >= 20


def _resume(path):
    rsa(select="aggregate").solve(FakeEngine(), PROBLEM, checkpoint=JsonCheckpoint(path))


def _resume_each(path, contents) -> dict[str, int]:
    seen = {"ok": 0, "refused": 0}
    for trial, content in contents:
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        seen[_outcome("rsa checkpoint", trial, lambda: _resume(path))] += 1
    return seen


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "run.json"
    _resume(path)  # nothing there yet: a whole solve
    return path


def test_rsa_checkpoint(checkpoint):
    original = json.loads(checkpoint.read_text())
    seen = _resume_each(checkpoint, _contents(original, random.Random(3), 250, 30, crafted=()))
    assert seen["refused"] >= 200  # almost every change is caught: the record is typed through


def test_rsa_checkpoint_crafted_json(checkpoint):
    _resume_each(checkpoint, enumerate(CRAFTED))
