"""Random ZAYA models that actually exercise the architecture.

A plain transformers init has QK-norm temp = 0 (keys vanish, attention is uniform, RoPE is
untested) and a skip class that is never chosen, so tests built on it prove little. `perturb`
moves every ones/zeros-initialised tensor off its default and makes the skip class reachable.
"""

from __future__ import annotations

TINY = dict(
    vocab_size=384,
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    num_experts=4,
    moe_intermediate_size=64,
    router_hidden_size=32,
    initializer_range=0.1,
    max_position_embeddings=512,
    pad_token_id=0,
    bos_token_id=2,
    eos_token_id=3,
)


def perturb(model, seed: int = 0, skip_bias: float = -1.0, expert_bias: tuple[float, float] = (-0.9, -0.85)) -> None:
    """In place: temp 0.5..2, norm/scale weights 1±0.2, biases ±0.005, router weights ×2,
    balancing biases that let the skip class win for some tokens."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def u(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("qk_norm.temp"):
                p.copy_(u(p.shape, 0.5, 2.0))
            elif name.endswith(("norm.weight", "_scale", "residual_scale", "hidden_states_scale", "router_states_scale")):
                p.copy_(u(p.shape, 0.8, 1.2))
            elif name.endswith(("_bias", "residual_bias")) or name.endswith(".bias"):
                p.copy_(u(p.shape, -0.005, 0.005))
            elif ".gate.router_mlp." in name and name.endswith("weight"):
                p.mul_(2.0)
        for module in model.modules():
            if hasattr(module, "balancing_biases"):
                b = module.balancing_biases
                b[:-1] = u(b[:-1].shape, *expert_bias)
                b[-1] = skip_bias


def tiny_model(seed: int = 0, dtype=None, **overrides):
    """A perturbed tiny `ZayaForCausalLM` (fp32 unless `dtype`), eval mode."""
    import torch
    from transformers import ZayaConfig, ZayaForCausalLM

    torch.manual_seed(seed)
    config = ZayaConfig(**{**TINY, **overrides})
    model = ZayaForCausalLM(config).eval()
    perturb(model, seed)
    if dtype is not None:
        model = model.to(dtype)
    return model


class MarkovLanguage:
    """A synthetic language: every token has one likely successor (probability `follow`)."""

    def __init__(self, vocab_size: int, seed: int = 0, follow: float = 0.8, first: int = 4):
        import numpy as np

        self.vocab_size, self.follow, self.first = vocab_size, follow, first
        self.successor = np.random.default_rng(seed).integers(first, vocab_size, vocab_size)

    def sample(self, batch: int, length: int, seed: int):
        import numpy as np

        rng = np.random.default_rng(seed)
        ids = np.empty((batch, length), np.int64)
        ids[:, 0] = rng.integers(self.first, self.vocab_size, batch)
        for t in range(1, length):
            noise = rng.integers(self.first, self.vocab_size, batch)
            ids[:, t] = np.where(rng.random(batch) < self.follow, self.successor[ids[:, t - 1]], noise)
        return ids


def train_briefly(model, language: MarkovLanguage, steps: int = 40, lr: float = 1e-2, seed: int = 0):
    """A few Adam steps on `language`, in place; returns the model in eval mode.

    A random model's next-token distribution is nearly flat (tiny top-1 margins), so any weight
    noise flips its argmax; after a little training its predictions are confident like a real
    LM's, which is what quantization quality should be judged on.
    """
    import torch

    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        ids = torch.as_tensor(language.sample(8, 32, seed=seed * 100_003 + step))
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
