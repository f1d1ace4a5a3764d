"""How much does an artifact's prediction differ from a reference's? Teacher-forced, per position.

The reference is an fp32 artifact (onnxruntime, no torch) or a Hugging Face checkpoint folder
(transformers, imported only then). Both see the same tokens; at every position we compare the
next-token distributions:

    top-1 agreement   argmax equal
    mean KL           KL(reference ‖ artifact), nats, averaged over positions
    max |logit diff|  over all positions and vocabulary entries
    perplexity        exp(mean NLL of the actual next token), for each model

Positions are streamed one at a time, so memory holds two logit rows, not two [T, V] arrays.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import numpy as np

from zaya_edge import artifact as A
from zaya_edge.errors import CheckpointError, RequestError, ZayaEdgeError
from zaya_edge.ort_session import run_failure
from zaya_edge.runtime.tokenizer import Tokenizer

DEFAULT_LENGTH = 256
_CHUNK = 64  # tokens per call when an artifact returns all positions' logits


@dataclasses.dataclass
class QualityReport:
    artifact: str
    reference: str
    tokens: str  # where the tokens came from
    positions: int
    top1_agreement: float
    mean_kl: float
    max_abs_logit_diff: float
    perplexity_artifact: float
    perplexity_reference: float

    def table(self) -> str:
        rows = [
            ("top-1 agreement", f"{100 * self.top1_agreement:.2f}%", ""),
            ("mean KL(ref||art)", f"{self.mean_kl:.5f}", ""),
            ("max |logit diff|", f"{self.max_abs_logit_diff:.4f}", ""),
            ("perplexity", f"{self.perplexity_artifact:.3f}", f"{self.perplexity_reference:.3f}"),
        ]
        lines = [
            f"{self.artifact} vs {self.reference}: {self.positions} positions, {self.tokens}",
            f"{'':<20}{'artifact':>12}{'reference':>12}",
        ]
        lines += [f"{name:<20}{a:>12}{r:>12}" for name, a, r in rows]
        return "\n".join(lines)


# ---- tokens ------------------------------------------------------------------------------------
def load_tokens(
    vocab_size: int,
    *,
    tokens_file: str | Path | None = None,
    text: str | None = None,
    tokenizer_dirs: tuple[Path, ...] = (),
    length: int = DEFAULT_LENGTH,
    seed: int = 0,
) -> tuple[np.ndarray, str]:
    """Token ids and a description: a token file (.npy or integers), text, or random tokens."""
    if tokens_file is not None and text is not None:
        raise ZayaEdgeError("give either a token file or text, not both")
    if not (isinstance(seed, int) and seed >= 0):
        raise RequestError(f"seed must be an integer >= 0, got {seed!r}")
    if tokens_file is not None:
        ids, what = _read_token_file(Path(tokens_file)), f"tokens from {tokens_file}"
    elif text is not None:
        ids, what = _tokenize(text, tokenizer_dirs), f"{len(text)} characters of text"
    else:
        if length < 2:
            raise ZayaEdgeError(f"need at least 2 tokens to compare, got length {length}")
        rng = np.random.default_rng(seed)
        ids, what = rng.integers(4 if vocab_size > 8 else 0, vocab_size, length), f"random tokens (seed {seed})"
    ids = np.asarray(ids, np.int64).reshape(-1)
    if ids.size < 2:
        raise ZayaEdgeError(f"need at least 2 tokens to compare, got {ids.size}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ZayaEdgeError(f"token ids must lie in [0, {vocab_size}); got {ids.min()}..{ids.max()}")
    return ids, what


def _read_token_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ZayaEdgeError(f"no token file at {path}")
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            raise ZayaEdgeError(f"{path} is not a .npy array of token ids") from None
    try:
        return np.array([int(t) for t in path.read_text().replace(",", " ").split()], np.int64)
    except ValueError:
        raise ZayaEdgeError(f"{path} is not a list of integer token ids (whitespace or comma separated)") from None


def _tokenize(text: str, dirs: tuple[Path, ...]) -> np.ndarray:
    """With the first tokenizer found: an artifact's (the files it lists) or a checkpoint folder's."""
    for d in dirs:
        if (d / A.MANIFEST_FILE).is_file():
            tokenizer = Tokenizer.from_artifact(A.Artifact.open(d))
        else:
            tokenizer = Tokenizer.from_folder(d) if (d / A.TOKENIZER_FILE).is_file() else None
        if tokenizer is not None:
            return np.array(tokenizer.encode(text), np.int64)
    raise ZayaEdgeError("text needs a tokenizer.json in the artifact or reference folder; pass a token file instead")


# ---- logit sources -----------------------------------------------------------------------------
class ArtifactLogits:
    """Next-token logits of an artifact, position by position (onnxruntime, fp32 state)."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        self.folder = Path(folder)
        self.artifact = A.Artifact.open(self.folder)
        self.manifest = self.artifact.manifest
        self.dims = self.artifact.dims
        self.session = self.artifact.open_session(threads=threads).session
        self.outputs = [o.name for o in self.session.get_outputs()]

    @property
    def vocab_size(self) -> int:
        return self.dims.vocab_size

    def rows(self, ids: np.ndarray) -> Iterator[np.ndarray]:
        """Teacher forcing: chunks when every position's logits come out, else one call per token."""
        state = A.zero_state(self.dims, 1, self.manifest.kv_dtype)
        step = _CHUNK if self.manifest.all_logits else 1
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step][None]
            feed = {A.INPUT_IDS: chunk, A.ATTENTION_MASK: np.ones((1, start + chunk.shape[1]), np.int64), **state}
            try:
                out = dict(zip(self.outputs, self.session.run(None, feed)))
            except Exception as exc:  # onnxruntime's own error types
                raise run_failure(exc, self.artifact) from None
            state = A.next_state(self.dims, out)
            yield from out[A.LOGITS][0]


def open_reference(path: str | Path, threads: int | None = None):
    """An fp32 (or any) artifact folder, or a Hugging Face checkpoint folder."""
    path = Path(path)
    if (path / A.MANIFEST_FILE).is_file():
        return ArtifactLogits(path, threads)
    if (path / A.CONFIG_FILE).is_file():
        try:  # the export side owns everything that needs torch
            from zaya_edge.export.hf_logits import HFLogits
        except ImportError as exc:
            raise ZayaEdgeError(f"a checkpoint reference needs the export extra (torch, transformers): {exc}") from None
        try:
            return HFLogits(path)
        except (OSError, ValueError) as exc:  # transformers' words for a malformed or unreadable folder
            raise CheckpointError(f"cannot load the reference checkpoint {path}: {exc}") from None
    raise ZayaEdgeError(f"{path} is neither a zaya-edge artifact nor a Hugging Face checkpoint folder")


# ---- the comparison ----------------------------------------------------------------------------
def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def compare(art, ref, ids: np.ndarray) -> dict:
    """Stream both models over `ids`; metrics as in the module docstring."""
    if art.vocab_size != ref.vocab_size:
        raise ZayaEdgeError(f"vocabularies differ: artifact {art.vocab_size}, reference {ref.vocab_size}")
    agree, kl, max_diff, nll_a, nll_r, n = 0, 0.0, 0.0, 0.0, 0.0, 0
    for t, (a, r) in enumerate(zip(art.rows(ids), ref.rows(ids))):
        la, lr = _log_softmax(a), _log_softmax(r)
        agree += int(a.argmax() == r.argmax())
        kl += float(np.exp(lr) @ (lr - la))
        max_diff = max(max_diff, float(np.abs(a.astype(np.float64) - r).max()))
        if t + 1 < len(ids):
            nll_a -= la[ids[t + 1]]
            nll_r -= lr[ids[t + 1]]
        n += 1
    targets = max(n - 1, 1)
    return {
        "positions": n,
        "top1_agreement": agree / n,
        "mean_kl": kl / n,
        "max_abs_logit_diff": max_diff,
        "perplexity_artifact": float(np.exp(nll_a / targets)),
        "perplexity_reference": float(np.exp(nll_r / targets)),
    }


def quality(
    artifact: str | Path,
    reference: str | Path,
    *,
    tokens_file: str | Path | None = None,
    text: str | None = None,
    length: int = DEFAULT_LENGTH,
    seed: int = 0,
    threads: int | None = None,
) -> QualityReport:
    art = ArtifactLogits(artifact, threads)
    ref = open_reference(reference, threads)
    ids, what = load_tokens(
        art.vocab_size, tokens_file=tokens_file, text=text, length=length, seed=seed,
        tokenizer_dirs=(Path(artifact), Path(reference)),
    )
    limit = art.manifest.context_length
    if len(ids) > limit:
        raise ZayaEdgeError(f"{what} is {len(ids)} tokens; {artifact} holds at most {limit} (pass a shorter text or fewer tokens)")
    return QualityReport(artifact=str(artifact), reference=str(reference), tokens=what, **compare(art, ref, ids))
