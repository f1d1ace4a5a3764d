"""The main job, end to end, on a model that can actually reason: the tiny reasoner.

examples/tiny-reasoner/checkpoint is a 2M-parameter ZayaForCausalLM (the real architecture,
shrunk) trained to add numbers with a short <think> trace — see examples/tiny-reasoner/train.py.
This exports it to int4, shows the artifact, answers a question with `zaya-edge run`, solves one
with Markovian RSA (`zaya-edge solve`), prints held-out accuracy (`zaya-edge eval`), and checks
that the runtime's greedy tokens equal transformers' own `generate` on the fp32 export. Each
command is echoed as a line that pastes (`$ zaya-edge …`), and the end says where the artifacts are.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads crawl on a busy machine
import torch  # noqa: E402

from zaya_edge.app import tiny_arith  # noqa: E402
from zaya_edge.export import export_model  # noqa: E402
from zaya_edge.runtime import Engine, Request, SamplingParams  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "examples" / "tiny-reasoner" / "checkpoint"
WORK = ROOT / ".cache" / "demo"
QUESTION = "What is 4837 + 2958?"
HARD = "What is 9786 + 5439?"
RSA = ["--population", "8", "--subset", "4", "--rounds", "2",
       "--budget", str(tiny_arith.BUDGET), "--tail", str(tiny_arith.TAIL)]


def shown(path: Path) -> str:
    """A path as the reader types it where the demo runs (`make demo`: the repository root)."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def zaya_edge(*args: str) -> None:
    """Run a command and echo it as a line the reader can paste (quoted, paths from where the demo runs)."""
    print(f"\n$ {shlex.join(['zaya-edge', *args])}", flush=True)
    subprocess.run([sys.executable, "-m", "zaya_edge", *args], check=True)


def where(int4: Path, fp32: Path) -> str:
    """The closing lines: where the artifacts are and what to try next."""
    here = "the repository root" if Path.cwd() == ROOT else str(Path.cwd())
    activate = "" if shutil.which("zaya-edge") else f", after . {shlex.quote(shown(Path(sys.executable).parent / 'activate'))}"
    return "\n".join([
        f"\nartifacts: {shown(int4)} (int4) and {shown(fp32)} (fp32)",
        f"the commands above paste as they are (from {here}{activate}); also try:",
        f"  $ {shlex.join(['zaya-edge', 'chat', shown(int4), '--temperature', '0'])}",
        f"  $ {shlex.join(['zaya-edge', 'quality', shown(int4), '--reference', shown(fp32)])}",
    ])


def parity(fp32: Path, problems: list[tiny_arith.Problem]) -> bool:
    """Greedy tokens of the fp32 artifact vs transformers' generate on the same checkpoint."""
    from transformers import ZayaForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    model = ZayaForCausalLM.from_pretrained(CHECKPOINT, dtype=torch.float32).eval()
    engine = Engine.load(fp32)
    params = SamplingParams(temperature=0, max_new_tokens=tiny_arith.BUDGET)
    prompts = [tuple(engine.codec.chat_prompt(p.text)) for p in problems]
    ours = engine.generate_batch([Request(p, params) for p in prompts])
    same = True
    for prompt, c in zip(prompts, ours):
        with torch.no_grad():
            ref = model.generate(torch.tensor([prompt]), max_new_tokens=tiny_arith.BUDGET, do_sample=False,
                                 eos_token_id=engine.eos_token_ids, pad_token_id=0)[0, len(prompt):].tolist()
        same &= c.tokens == ref
    return same


def main() -> None:
    int4, fp32 = shown(WORK / "tiny-reasoner-int4"), shown(WORK / "tiny-reasoner-fp32")
    zaya_edge("export", shown(CHECKPOINT), "-o", int4, "--precision", "int4", "--force", "--quiet")
    zaya_edge("inspect", int4)
    zaya_edge("run", int4, QUESTION, "--temperature", "0", "--max-new-tokens", str(tiny_arith.BUDGET), "--stats")
    zaya_edge("solve", int4, HARD, *RSA, "--seed", "0", "--quiet")
    zaya_edge("eval", int4, "--task", "tiny-arith", "--limit", "200", "--quiet")
    # sampling at temperature 1, once per problem and with Markovian RSA (the full figures over
    # all 500 problems: examples/tiny-reasoner/README.md)
    zaya_edge("eval", int4, "--task", "tiny-arith", "--limit", "30", "--temperature", "1", "--quiet")
    zaya_edge("eval", int4, "--task", "tiny-arith", "--limit", "30", "--strategy", "rsa", *RSA[:6], "--quiet")

    export_model(CHECKPOINT, fp32, precision="fp32", force=True, progress=False)
    same = parity(Path(fp32), tiny_arith.held_out_set(4))
    print(f"\nruntime (fp32 export) vs transformers greedy tokens on 4 problems: {'identical' if same else 'MISMATCH'}")
    print(where(WORK / "tiny-reasoner-int4", WORK / "tiny-reasoner-fp32"))
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
