"""Train the tiny ZAYA reasoner: the demo model and the quality yardstick (issue 8).

    .venv/bin/python examples/tiny-reasoner/train.py            # writes examples/tiny-reasoner/checkpoint

A ZayaForCausalLM with the real architecture (CCA attention, ZAYA router with its skip class
and EDA state, SwiGLU experts), shrunk to ~2M parameters, learns tiny-arith (zaya_edge/app/tiny_arith.py):
column-by-column addition with the trace inside <think>…</think> and the answer in \\boxed{}.
A share of the examples are Markovian RSA aggregation prompts — the problem plus C candidate
solutions (some wrong) rendered with the runtime's own template and tail rule — whose target is
the correct solution, so the model learns to use aggregation rather than only to solve.

Everything is seeded and the step count is fixed, so a re-run gives the same weights (same torch
version and thread count). The committed checkpoint took 648 s on the 2-core machine while other
jobs shared it (checkpoint/training.json); results: README.md beside this file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads made
# every op ~100x slower whenever another process held a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from zaya_edge.app import tiny_arith as T
from zaya_edge.export.fixtures.tiny_tokenizer import CHAT_TEMPLATE, CORPUS, SPECIAL_TOKENS
from zaya_edge.runtime.rsa import default_template, render_prompt
from zaya_edge.runtime.tokenizer import Tokenizer

HERE = Path(__file__).resolve().parent
VOCAB = 512
TAIL = T.TAIL  # τ the aggregation examples are cut with, as `zaya-edge eval --strategy rsa` uses it
CONTEXT = 1024
TEMP_INIT = 3.0  # QK-norm key temperature at init (see new_model)
TEMP_LR = 5.0  # its learning rate, as a multiple of the others'
CONFIG = dict(
    vocab_size=VOCAB,
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    num_experts=4,
    moe_intermediate_size=256,
    router_hidden_size=64,
    max_position_embeddings=CONTEXT,
    rope_parameters={
        "hybrid": {"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.5},
        "hybrid_sliding": {"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.5},
    },
    initializer_range=0.02,
    tie_word_embeddings=True,
    pad_token_id=0,
    bos_token_id=2,
    eos_token_id=3,
)


# ---------------------------------------------------------------- tokenizer


def build_tokenizer(folder: Path) -> Tokenizer:
    """Byte-level BPE with the tiny tokenizer's special tokens (same ids) and one token per digit,
    trained on the task's own text so the aggregation template costs ~110 tokens, not ~600."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    solutions = []
    for p in T.problems(1, held_out=False):
        solutions.append(p.text + "\n" + T.solution(p) + "\n" + T.wrong_solution(p, rng))
        if len(solutions) == 400:
            break
    corpus = [default_template(4), default_template(1), "---- Solution 1 ----\n", "user\n", "assistant\n"] * 20
    corpus += solutions + CORPUS * 5

    tok = HFTokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<bos>", "eos_token": "<|im_end|>", "pad_token": "<pad>", "chat_template": CHAT_TEMPLATE}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    codec = Tokenizer.from_folder(folder)
    assert [codec.token_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    return codec


# ---------------------------------------------------------------- examples


def tail(codec: Tokenizer, text: str) -> str:
    """What Markovian RSA carries of a candidate: its last TAIL generated tokens, decoded."""
    ids = codec.encode(text)
    kept = codec.decode(ids[-TAIL:])
    return kept.lstrip("\ufffd") if len(ids) > TAIL else kept


def single_example(codec: Tokenizer, p: T.Problem) -> tuple[list[int], int]:
    """(token ids, index where the loss starts): chat prompt, then solution + EOS."""
    prompt = codec.chat_prompt(p.text)
    return prompt + codec.encode(T.solution(p)) + [CONFIG["eos_token_id"]], len(prompt)


def aggregate_example(codec: Tokenizer, p: T.Problem, rng: random.Random) -> tuple[list[int], int]:
    """The RSA aggregation prompt over C candidate tails (0..C of them wrong) -> the correct solution."""
    c = rng.choice([4, 4, 4, 3, 2])
    # Mostly agreeing candidates, as a ~95%-accurate sampler gives: the model must learn to trust
    # a majority (copying is more reliable than re-deriving) yet repair a minority of slips.
    wrong = rng.choices(range(c + 1), weights=[5, 3, 1, 0.5, 0.5][: c + 1])[0]
    cands = [T.wrong_solution(p, rng) for _ in range(wrong)] + [T.solution(p)] * (c - wrong)
    rng.shuffle(cands)
    text = render_prompt(default_template(c), p.text, [tail(codec, s) for s in cands])
    prompt = codec.chat_prompt(text)
    return prompt + codec.encode(T.solution(p)) + [CONFIG["eos_token_id"]], len(prompt)


def batch(examples: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask and labels (-100 outside the answer)."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.zeros(len(examples), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for r, (seq, start) in enumerate(examples):
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
        labels[r, start : len(seq)] = ids[r, start : len(seq)]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# ---------------------------------------------------------------- model and training


def mean_loss(model, examples: list[tuple[list[int], int]], buckets: int) -> torch.Tensor:
    """Mean next-token cross-entropy over all answer tokens of `examples`, run as `buckets`
    batches of similar length (less padding to compute)."""
    examples = sorted(examples, key=lambda e: len(e[0]))
    size = math.ceil(len(examples) / buckets)
    total, count = 0.0, 0
    for lo in range(0, len(examples), size):
        b = batch(examples[lo : lo + size])
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
        labels = b["labels"][:, 1:]
        total = total + torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum")
        count += int((labels != -100).sum())
    return total / count


def new_model(seed: int):
    from transformers import ZayaConfig, ZayaForCausalLM

    torch.manual_seed(seed)
    model = ZayaForCausalLM(ZayaConfig(**CONFIG))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("qk_norm.temp"):
                # transformers inits 0 (keys vanish, attention uniform). q and k are unit vectors
                # scaled to sqrt(head_dim), so temp caps how sharp attention can get: picking 4
                # candidate lines out of ~600 tokens needs ~3, more than Adam moves it from 1.
                p.fill_(TEMP_INIT)
    return model


class LoadBalancer:
    """Aux-loss-free balancing (the role of ZAYA's `balancing_biases` buffer): after each step,
    nudge every expert's bias toward equal load. The skip class keeps -1.0, as the loader sets it."""

    def __init__(self, model, rate: float = 1e-3):
        self.rate, self.counts = rate, {}
        for module in model.modules():
            if type(module).__name__ == "ZayaRouter":
                module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if module.training:
            idx = output[2].flatten()
            n = module.num_router_classes
            self.counts[module] = self.counts.get(module, 0) + torch.bincount(idx, minlength=n)[: n - 1]

    @torch.no_grad()
    def step(self) -> None:
        for module, counts in self.counts.items():
            load = counts.float() / counts.sum().clamp_min(1)
            module.balancing_biases[:-1] += self.rate * torch.sign(load.mean() - load)
            module.balancing_biases[-1] = -1.0
        self.counts = {}


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def train(args) -> None:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    codec = build_tokenizer(out)
    rng = random.Random(args.seed)
    stream = T.problems(args.seed, held_out=False)
    model = new_model(args.seed)
    model.train()
    balancer = LoadBalancer(model)
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if p.dim() >= 2], "weight_decay": 0.01, "scale": 1.0},
        {"params": [p for n, p in named if p.dim() < 2 and not n.endswith("qk_norm.temp")], "weight_decay": 0.0, "scale": 1.0},
        {"params": [p for n, p in named if n.endswith("qk_norm.temp")], "weight_decay": 0.0, "scale": TEMP_LR},
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f}M parameters; {args.steps} steps of {args.single} single + "
          f"{args.aggregate} aggregation examples", flush=True)
    start, smooth = time.perf_counter(), None
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = group["scale"] * lr_at(step, args.steps, args.lr, args.warmup)
        loss = mean_loss(model, [single_example(codec, next(stream)) for _ in range(args.single)], buckets=2)
        if step >= args.steps * args.aggregate_from:  # the two kinds weigh alike, whatever their token counts
            aggs = [aggregate_example(codec, next(stream), rng) for _ in range(args.aggregate)]
            loss = (loss + mean_loss(model, aggs, buckets=1)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        balancer.step()
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  smoothed {smooth:.4f}  "
                  f"{time.perf_counter() - start:6.0f} s", flush=True)
    elapsed = time.perf_counter() - start
    model.eval()
    model.save_pretrained(out)  # fp32 safetensors
    summary = {"steps": args.steps, "seed": args.seed, "final_loss": round(loss.item(), 5),
               "smoothed_loss": round(smooth, 5), "train_seconds": round(elapsed, 1), "threads": args.threads,
               "tail": TAIL, "parameters": n_params, "torch": torch.__version__}
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"trained in {elapsed:.0f} s; final loss {loss.item():.4f}; wrote {out}", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(HERE / "checkpoint"))
    ap.add_argument("--steps", type=int, default=650)
    ap.add_argument("--single", type=int, default=20, help="single-solution examples per step")
    ap.add_argument("--aggregate", type=int, default=6, help="aggregation examples per step")
    ap.add_argument("--aggregate-from", type=float, default=0.25,
                    help="share of the steps trained on single solutions before aggregation examples join")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    train(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
