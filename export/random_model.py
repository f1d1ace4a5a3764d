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
