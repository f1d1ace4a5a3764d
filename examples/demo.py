"""The main job, end to end: a small random ZAYA model -> ONNX artifact -> generated text.

Builds a perturbed random ZayaForCausalLM with a small chat tokenizer (real weights cannot be
downloaded here, so the text is gibberish), saves it as a Hugging Face checkpoint, exports it
with `zaya-edge export`, shows it with `zaya-edge inspect`, generates with `zaya-edge run`,
and checks the runtime's greedy tokens against transformers' own `generate`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from zaya_edge.export.random_model import tiny_model
from zaya_edge.export.tiny_tokenizer import save_tokenizer
from zaya_edge.runtime import Engine, SamplingParams

WORK = Path(__file__).resolve().parent.parent / ".cache" / "demo"
PROMPT = "What is 12 + 30?"


def zaya_edge(*args: str) -> None:
    print(f"\n$ zaya-edge {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "zaya_edge.cli", *args], check=True)


def main() -> None:
    ckpt, art = WORK / "checkpoint", WORK / "artifact"
    model = tiny_model(seed=0, hidden_size=128, num_hidden_layers=4, moe_intermediate_size=128)
    model.save_pretrained(ckpt)
    save_tokenizer(ckpt)
    print(f"random ZAYA checkpoint: {ckpt}")

    zaya_edge("export", str(ckpt), "-o", str(art), "--precision", "fp32", "--force")
    zaya_edge("inspect", str(art))
    zaya_edge("run", str(art), PROMPT, "--temperature", "0", "--max-new-tokens", "24", "--stats")

    engine = Engine.load(art)
    prompt = engine.encode_prompt(PROMPT)
    ours = engine.generate(prompt, SamplingParams(temperature=0, max_new_tokens=24, ignore_eos=True))
    ours.text()
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    same = ours.tokens == ref
    print(f"\nruntime vs transformers greedy tokens: {'identical' if same else 'MISMATCH'} ({len(ref)} tokens)")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
