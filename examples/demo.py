"""The main job, end to end: a small random ZAYA model -> ONNX artifact -> greedy tokens.

Builds a perturbed random ZayaForCausalLM (real weights cannot be downloaded here), saves it
as a Hugging Face checkpoint, exports it with `zaya-edge export`, runs greedy decoding in
onnxruntime and checks the tokens against transformers' own `generate`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from zaya_edge import artifact as A
from zaya_edge.export.random_model import tiny_model

WORK = Path(__file__).resolve().parent.parent / ".cache" / "demo"
NEW_TOKENS = 16


def main() -> None:
    ckpt, art = WORK / "checkpoint", WORK / "artifact"
    model = tiny_model(seed=0, hidden_size=128, num_hidden_layers=4, moe_intermediate_size=128)
    model.save_pretrained(ckpt)
    print(f"checkpoint: {ckpt}")
    subprocess.run([sys.executable, "-m", "zaya_edge.cli", "export", str(ckpt), "-o", str(art), "--force"], check=True)

    manifest = A.read_manifest(art)
    dims = manifest.model_dims
    session = ort.InferenceSession(str(art / A.MODEL_FILE), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    prompt = np.array([[2, 17, 42, 99, 7, 256, 31]], np.int64)
    state = {
        A.PAST_NAMES[k] % i: np.zeros(A.state_shape(dims, k, 1, 0), np.float32)
        for i in range(dims.num_layers) for k in A.STATE_KINDS
    }
    ids, tokens = prompt, []
    for _ in range(NEW_TOKENS):
        mask = np.ones((1, prompt.shape[1] + len(tokens)), np.int64)
        out = dict(zip(names, session.run(None, {A.INPUT_IDS: ids, A.ATTENTION_MASK: mask, **state})))
        state = {A.PAST_NAMES[k] % i: out[A.PRESENT_NAMES[k] % i] for i in range(dims.num_layers) for k in A.STATE_KINDS}
        tokens.append(int(out[A.LOGITS][0, -1].argmax()))
        ids = np.array([[tokens[-1]]], np.int64)
    print("onnxruntime greedy :", tokens)

    with torch.no_grad():
        ref = model.generate(torch.as_tensor(prompt), max_new_tokens=NEW_TOKENS, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[0, prompt.shape[1]:].tolist()
    print("transformers greedy:", ref)
    print("identical" if ref == tokens else "MISMATCH")
    sys.exit(0 if ref == tokens else 1)


if __name__ == "__main__":
    main()
