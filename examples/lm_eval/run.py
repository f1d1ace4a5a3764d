"""An evaluation harness nobody here wrote, against `zaya-edge serve`: lm-eval's accuracy on the tiny
reasoner's held-out problems beside `zaya-edge eval`'s on the same problems (greedy, same budget).

    python examples/lm_eval/run.py ARTIFACT [--limit 500] [--python PATH] [--num-concurrent 8]

--python names an interpreter with lm-eval installed (`pip install lm-eval`); it only talks HTTP to
the server, so it may be a separate virtual environment (lm-eval brings datasets, pandas, scipy...).
The server runs on 127.0.0.1 at a free port and stops at the end. Exit status 1 if the two differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from zaya_edge.app.serve.process import ServerProcess  # noqa: E402

TASK, MODEL = "zaya_tiny_arith", "tiny-reasoner"


def zaya_edge_eval(artifact: str, limit: int, work: Path) -> float:
    """`zaya-edge eval ARTIFACT --task tiny-arith --limit N` (greedy, the task's budget): its accuracy."""
    out = work / "zaya-edge-eval.json"
    subprocess.run([sys.executable, "-m", "zaya_edge", "eval", artifact, "--task", "tiny-arith", "--limit", str(limit),
                    "--quiet", "--json", str(out)], check=True)
    return json.loads(out.read_text())["accuracy"]


def lm_eval(python: str, base_url: str, limit: int, num_concurrent: int, work: Path) -> float:
    """lm-eval's local-chat-completions model on examples/lm_eval/tiny_arith.yaml: exact_match of the boxed answer."""
    model_args = (f"model={MODEL},base_url={base_url}/chat/completions,num_concurrent={num_concurrent},"
                  f"max_retries=1,tokenized_requests=False")
    cmd = [python, "-m", "lm_eval", "run", "--model", "local-chat-completions", "--model_args", model_args,
           "--tasks", TASK, "--include_path", str(HERE), "--apply_chat_template", "--limit", str(limit),
           "--output_path", str(work / "lm-eval"), "--batch_size", "1"]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(cmd, check=True, env=env, cwd=work)
    results = sorted((work / "lm-eval").rglob("results_*.json"))
    return json.loads(results[-1].read_text())["results"][TASK]["exact_match,boxed"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact")
    ap.add_argument("--limit", type=int, default=500, help="The first N held-out problems (at most 500).")
    ap.add_argument("--python", default=os.environ.get("LM_EVAL_PYTHON", sys.executable),
                    help="An interpreter with lm-eval installed.  [default: $LM_EVAL_PYTHON or this one]")
    ap.add_argument("--num-concurrent", type=int, default=8, help="Requests lm-eval keeps in flight.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="zaya-lm-eval-") as tmp:
        work = Path(tmp)
        ours = zaya_edge_eval(args.artifact, args.limit, work)
        flags = ["--model-name", MODEL, "--max-batch", str(args.num_concurrent)]
        with ServerProcess(args.artifact, *flags, log=work / "server.log") as server:
            theirs = lm_eval(args.python, server.base_url, args.limit, args.num_concurrent, work)
    n = args.limit
    print(f"tiny-arith, {n} held-out problems, greedy, 160 new tokens:")
    print(f"  zaya-edge eval                              {ours:.4f} ({round(ours * n)}/{n})")
    print(f"  lm-eval local-chat-completions via serve    {theirs:.4f} ({round(theirs * n)}/{n})")
    same = abs(ours - theirs) < 0.5 / n
    print("  the same" if same else "  DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
