"""A chat template is code from the artifact: its rendering is bounded in time and size, each way it
fails is one error line, and a prompt that cannot fit is refused before it is tokenized."""

from __future__ import annotations

import shutil
import time

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from fuzz_util import write_listed

from zaya_edge import artifact as A
from zaya_edge.errors import ArtifactError, ContextFullError, RequestError, ZayaEdgeError
from zaya_edge.runtime import Engine, chat_template
from zaya_edge.runtime.chat_template import TEMPLATE_SECONDS, ChatTemplate
from zaya_edge.runtime.tokenizer import DEFAULT_CHAT_TEMPLATE, Tokenizer

LIMIT = 1 << 22
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": "2+2?"}]
DAG = "{% set s = ['x'] %}" + "{% set s = [s, s] %}" * 60  # 2**60 items by shared references

HOSTILE = {
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "nested loops printing": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "loops over a literal": "{% for a in 'y' * 4000000 %}{% for b in 'y' * 4000000 %}{% endfor %}{% endfor %}",
    "a huge repeat": "{{ 'x' * 10**9 }}",
    "a huge power": "{{ 9 ** (9 ** 9) }}",
    "squaring a number": "{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}"
                         "{% endfor %}{{ ns.x }}",
    "a recursive macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "a doubling recursive macro": "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('x') }}",
    "doubling by ~": "{% set s = 'x' %}" + "{% set s = s ~ s %}" * 40 + "{{ s|length }}",
    "doubling a namespace": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                            "{% endfor %}",
    "printing shared references": DAG + "{{ s }}",
    "serializing shared references": DAG + "{{ s|tojson }}",
    "a wide filter": "{{ 'x'|center(999999999) }}",
    "a wide method": "{{ 'x'.ljust(999999999) }}",
    "a wide format": "{{ '{:>999999999}'.format(1) }}",
    "a wide printf": "{{ '%*d' % (999999999, 1) }}",
    "an expanding replace": "{% set s = 'x' * 1000 %}{{ s.replace('', s * 1000) }}",
    "an expanding map": "{{ range(1000)|map('center', 4000000)|join }}",
    "an expanding indent": "{{ ('x\n' * 1000000)|indent(1000) }}",
    "huge bytes": "{{ (5).to_bytes(999999999, 'big') }}",
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_template_fails_fast_with_one_line(source, monkeypatch):
    monkeypatch.setattr(chat_template, "TEMPLATE_SECONDS", 0.5)  # the real 2 s: the test below
    start = time.monotonic()
    with pytest.raises(ZayaEdgeError) as info:
        ChatTemplate(source, LIMIT, "exceeds the context").render(messages=MESSAGES, add_generation_prompt=True)
    assert time.monotonic() - start < 1.5
    assert "\n" not in str(info.value) and str(info.value).startswith("the ")


def test_the_bounds_name_what_was_exceeded():
    def error(source):
        with pytest.raises(ZayaEdgeError) as info:
            ChatTemplate(source, LIMIT, "exceeds the context").render(messages=MESSAGES)
        return info.value

    start = time.monotonic()
    assert str(error(HOSTILE["nested loops"])) == "the chat template took longer than 2 s to render"
    assert time.monotonic() - start < TEMPLATE_SECONDS + 1
    assert "would repeat a value to more than 4194304 characters" in str(error(HOSTILE["a huge repeat"]))
    assert str(error(HOSTILE["a recursive macro"])) == "the chat template recursed too deeply"
    printed = error("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}")
    assert isinstance(printed, ContextFullError)  # output past the limit can never fit the context
    assert str(printed) == ("the rendered chat prompt is more than 4194304 characters: it exceeds the context; "
                            "shorten the messages")
    assert isinstance(error("{% for %}"), ArtifactError) and "cannot be compiled" in str(error("{% for %}"))
    assert isinstance(error("{{ foo() }}"), ArtifactError) and "'foo' is undefined" in str(error("{{ foo() }}"))
    refused = error("{{ raise_exception('Conversation roles must alternate user/assistant') }}")
    assert isinstance(refused, RequestError) and "roles must alternate" in str(refused)


TEMPLATES = [
    DEFAULT_CHAT_TEMPLATE,
    "{{ bos_token }}{% for m in messages %}{% if loop.first and m.role == 'system' %}[{{ m.content|trim }}]"
    "{% else %}{{ loop.index }}/{{ loop.length }} {{ m['role']|upper }}: {{ m.content ~ '!' }}{% endif %}"
    "{% if not loop.last %}\n{% endif %}{% endfor %}",
    "{% set ns = namespace(n=0, text='') %}{% for m in messages|selectattr('role', 'equalto', 'user') %}"
    "{% set ns.n = ns.n + 1 %}{% set ns.text = ns.text ~ m.content %}{% endfor %}{{ ns.n }} {{ ns.text }} "
    "{{ messages|map(attribute='content')|join(' | ') }} {{ '%s=%05d' % ('n', 42) }} {{ '{:>6}'.format('r') }}"
    "{{ messages|tojson }} {{ (messages|length) * 2 }} {{ 'ab' * 3 }} {{ [1, 2] + [3] }} {{ 2 ** 10 }}",
    "{%- for m in messages[::-1] %}{{ (messages|length - 1) - loop.index0 }}{{ m.content.split('?')[0].lstrip('h') }}"
    "{% endfor %}{% macro tree(items) %}{% for i in items recursive %}[{{ i.name }}{% if i.kids %}{{ loop(i.kids) }}"
    "{% endif %}]{% endfor %}{% endmacro %}{{ tree(tree_items) }}{% set block %}{% for m in messages if m.role == "
    "'user' %}{{ m.content|upper }}{% endfor %}{% endset %}{{ block|length }}{% filter upper %}"
    "{{ messages|map(attribute='role')|join(',') }}{% endfilter %}",
]


@pytest.mark.parametrize("source", TEMPLATES)
def test_ordinary_templates_render_as_the_plain_sandbox_does(source):
    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    tree = [{"name": "a", "kids": [{"name": "b", "kids": []}]}, {"name": "c", "kids": []}]
    values = dict(messages=MESSAGES, add_generation_prompt=True, bos_token="<s>", eos_token="</s>", tree_items=tree)
    assert ChatTemplate(source, LIMIT, "x").render(**values) == plain.from_string(source).render(**values)


@pytest.fixture
def engine(tiny_artifact):
    return Engine.load(tiny_artifact[1])


@pytest.fixture
def no_tokenizing(monkeypatch):
    calls = []
    monkeypatch.setattr(Tokenizer, "encode", lambda self, text, add_special_tokens=False: calls.append(text) or [5])
    return calls


def test_a_prompt_that_cannot_fit_is_refused_before_tokenizing(engine, no_tokenizing):
    tok = engine.codec
    assert tok.max_prompt_chars == engine.context_length * tok.longest_token_chars
    too_long = "w" * (tok.max_prompt_chars + 1)
    with pytest.raises(ContextFullError, match=f"exceeds the context length {engine.context_length} however"):
        engine.encode_prompt(too_long, chat=False)
    with pytest.raises(ContextFullError, match="exceeds the context length"):
        engine.encode_prompt(too_long)
    session = engine.chat()
    with pytest.raises(ContextFullError, match="exceeds the context length"):
        session.send(too_long)
    assert no_tokenizing == [] and session.messages == []


def test_a_listed_template_is_bounded_through_the_engine(tiny_artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact[1], art)
    write_listed(art, A.CHAT_TEMPLATE_FILE, HOSTILE["a recursive macro"])
    engine = Engine.load(art, verify=True)
    with pytest.raises(ArtifactError, match="recursed too deeply"):
        engine.generate("hi")
    write_listed(art, A.CHAT_TEMPLATE_FILE, "{% for x in %}")
    with pytest.raises(ArtifactError, match="cannot be compiled"):
        Engine.load(art).generate("hi")


def test_text_that_is_not_unicode_is_one_request_error(engine):
    lone = r"the text to tokenize is not valid Unicode \(a lone surrogate at character \d+\)"
    with pytest.raises(RequestError, match=lone):
        engine.generate("hi \ud800 there")
    with pytest.raises(RequestError, match="not valid Unicode"):
        engine.encode_prompt("hi \udfff", chat=False)
