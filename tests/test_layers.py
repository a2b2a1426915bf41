"""Shared building blocks (handspring_models.runtime.layers) and CLIP's block computed at one
position per row: the same numbers as the full causal pass read at that position."""

import pytest
import torch

from handspring_models.clip.model import ResidualAttentionBlock
from handspring_models.runtime.kernels import pack_linear_weights
from handspring_models.runtime.layers import MultiheadAttention


def _randomized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) / param.shape[-1] ** 0.5)
    return module.eval()


@pytest.mark.parametrize("packed", [False, True])
def test_attention_at_one_position_equals_the_causal_pass_there(packed):
    attn = _randomized(MultiheadAttention(64, 4), seed=1)
    if packed:
        pack_linear_weights(attn)
    x = torch.randn(3, 9, 64)
    index = torch.tensor([8, 0, 4])
    with torch.inference_mode():
        full = attn(x, causal=True)[torch.arange(3), index]
        torch.testing.assert_close(attn.causal_at(x, index), full, rtol=1e-5, atol=1e-6)


def test_later_positions_do_not_reach_an_earlier_one():
    attn = _randomized(MultiheadAttention(32, 2), seed=2)
    x = torch.randn(1, 6, 32)
    changed = x.clone()
    changed[0, 3:] = torch.randn(3, 32)
    index = torch.tensor([2])
    with torch.inference_mode():
        torch.testing.assert_close(attn.causal_at(changed, index), attn.causal_at(x, index))


def test_clip_block_at_one_position_equals_the_causal_pass_there():
    block = _randomized(ResidualAttentionBlock(64, 4, "quick_gelu", 1e-5), seed=3)
    x = torch.randn(2, 7, 64)
    index = torch.tensor([6, 2])
    with torch.inference_mode():
        full = block(x, causal=True)[torch.arange(2), index]
        torch.testing.assert_close(block.causal_at(x, index), full, rtol=1e-5, atol=1e-5)


def test_attention_with_bias_kv_refuses_one_position():
    attn = MultiheadAttention(32, 2, add_bias_kv=True)
    with pytest.raises(NotImplementedError):
        attn.causal_at(torch.zeros(1, 3, 32), torch.tensor([1]))
