import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A perturbed tiny ZAYA checkpoint folder with a test tokenizer (needs torch)."""
    pytest.importorskip("torch")
    from zaya_edge.export.fixtures.random_model import tiny_model
    from zaya_edge.export.fixtures.tiny_tokenizer import save_tokenizer

    model = tiny_model(seed=11)
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    model.save_pretrained(folder)
    save_tokenizer(folder)
    return model, folder


@pytest.fixture(scope="session")
def tiny_artifact(tiny_checkpoint, tmp_path_factory):
    """(HF model, fp32 artifact folder exported from its checkpoint)."""
    from zaya_edge.export import export_model

    model, folder = tiny_checkpoint
    out = tmp_path_factory.mktemp("art") / "tiny-fp32"
    export_model(folder, out, precision="fp32", progress=False)
    return model, out


@pytest.fixture
def art(tiny_artifact, tmp_path):
    """A private copy of the tiny fp32 artifact that a test may damage."""
    return Path(shutil.copytree(tiny_artifact[1], tmp_path / "art"))


@pytest.fixture
def ckpt_copy(tiny_checkpoint, tmp_path):
    """A private copy of the tiny checkpoint folder that a test may damage."""
    return Path(shutil.copytree(tiny_checkpoint[1], tmp_path / "ckpt"))
