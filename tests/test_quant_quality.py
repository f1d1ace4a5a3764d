"""`zaya-edge quality`: teacher-forced comparison against an fp32 artifact or a checkpoint folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from zaya_edge.errors import ZayaEdgeError  # noqa: E402
from zaya_edge.export import export_model  # noqa: E402
from zaya_edge.export.fixtures.random_model import tiny_model  # noqa: E402
from zaya_edge.app.quality import quality  # noqa: E402


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    model = tiny_model(seed=2, num_hidden_layers=2)
    model.save_pretrained(root / "ckpt")
    export_model(model, root / "fp32", precision="fp32", progress=False)  # last position only: one call per token
    export_model(model, root / "fp32_all", precision="fp32", all_logits=True, progress=False)
    export_model(model, root / "int4", precision="int4", all_logits=True, progress=False)
    return root


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "zaya_edge", *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stdout, proc.stderr.strip()


def test_identical_models_agree_exactly(arts):
    r = quality(arts / "fp32", arts / "fp32_all", length=64)
    assert r.positions == 64
    assert r.top1_agreement == 1.0 and r.max_abs_logit_diff < 1e-4 and r.mean_kl < 1e-8
    assert r.perplexity_artifact == pytest.approx(r.perplexity_reference, rel=1e-5)


def test_against_checkpoint_folder(arts):
    r = quality(arts / "fp32_all", arts / "ckpt", length=40)
    assert r.max_abs_logit_diff <= 1e-4 and r.top1_agreement == 1.0


def test_int4_differs_measurably(arts):
    r = quality(arts / "int4", arts / "fp32", length=256)
    assert r.positions == 256
    assert 0.3 < r.top1_agreement < 1.0
    assert 0 < r.mean_kl < 0.1 and r.max_abs_logit_diff > 1e-3
    assert r.perplexity_artifact > 1 and r.perplexity_reference > 1


def test_cli_table_json_and_no_overwrite(arts, tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("5, 9 17\n100 7 8 42")
    out = tmp_path / "report.json"
    rc, stdout, err = run_cli("quality", arts / "int4", "--reference", arts / "fp32", "--tokens", tokens, "--json", out)
    assert rc == 0, err
    assert "top-1 agreement" in stdout and "perplexity" in stdout
    report = json.loads(out.read_text())
    assert report["positions"] == 7 and report["tokens"].startswith("tokens from")
    rc, _, err = run_cli("quality", arts / "int4", "--reference", arts / "fp32", "--tokens", tokens, "--json", out)
    assert rc != 0 and "already exists" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "content,needle",
    [("5 9 99999", "token ids must lie in [0, 384)"), ("5 nine", "not a list of integer token ids"), ("7", "at least 2 tokens")],
)
def test_bad_token_files(arts, tmp_path, content, needle):
    tokens = tmp_path / "t.txt"
    tokens.write_text(content)
    with pytest.raises(ZayaEdgeError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        quality(arts / "int4", arts / "fp32", tokens_file=tokens)


def test_text_needs_a_tokenizer(arts):
    with pytest.raises(ZayaEdgeError, match="tokenizer.json"):
        quality(arts / "int4", arts / "fp32", text="hello")


def test_reference_must_be_artifact_or_checkpoint(arts, tmp_path):
    with pytest.raises(ZayaEdgeError, match="neither a zaya-edge artifact nor a Hugging Face checkpoint"):
        quality(arts / "int4", tmp_path)


def test_artifact_reference_does_not_import_torch(arts):
    code = (
        "import sys; from zaya_edge.app.quality import quality; "
        f"r = quality({str(arts / 'int4')!r}, {str(arts / 'fp32')!r}, length=8); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(r.positions)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "8"


def test_longer_than_the_context_is_one_clear_error(arts):
    from zaya_edge import artifact as A

    limit = A.Artifact.open(arts / "int4").manifest.context_length
    with pytest.raises(ZayaEdgeError, match=f"is {limit + 1} tokens; .* holds at most {limit}"):
        quality(arts / "int4", arts / "fp32", length=limit + 1)
