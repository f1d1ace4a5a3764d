"""The artifact's tokenizer as a transformers fast tokenizer, for pipelines and chat templates.

Built from the files the manifest lists (Artifact.tokenizer_files), never from whatever else
lies in the folder; the special tokens and chat template are the ones the runtime reads.
"""

from __future__ import annotations

import os

from zaya_edge import artifact as A
from zaya_edge.errors import ArtifactError

from .extra import extra
from zaya_edge.runtime.tokenizer import Tokenizer


def load_tokenizer(artifact_dir: str | os.PathLike | A.Artifact):
    """A left-padding fast tokenizer over the artifact's tokenizer.json (generation pads left)."""
    artifact = artifact_dir if isinstance(artifact_dir, A.Artifact) else A.Artifact.open(artifact_dir)
    codec = Tokenizer.from_artifact(artifact)
    if codec is None:
        raise ArtifactError(f"{artifact.folder} has no {A.TOKENIZER_FILE}: pass token ids instead")
    tokenizer = extra("transformers").PreTrainedTokenizerFast(
        tokenizer_file=str(artifact.tokenizer_files[A.TOKENIZER_FILE]),
        bos_token=codec.bos_token,
        eos_token=codec.eos_token,
        padding_side="left",
    )
    pad = artifact.dims.pad_token_id
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad) if pad is not None else codec.eos_token
    tokenizer.chat_template = codec.chat_template
    return tokenizer
