"""The attention kernel (handspring_models.runtime.attention): self-attention read from a fused q/k/v
projection's output, against float64 attention; and where the models use it."""

import pytest
import torch

import handspring_models
from handspring_models.runtime import attention, kernels, layers

needs_kernel = pytest.mark.skipif(not attention.available(), reason="this CPU has no AVX2, or the kernels are not built")
BF16_ULP = 2.0 ** -7  # relative spacing of bf16 values, at most


def exact(qkv: torch.Tensor, heads: int, causal: bool) -> torch.Tensor:
    """Attention in float64, from the same (possibly bf16) inputs: [b, n, 3 d] -> [b, n, d]."""
    b, n, width3 = qkv.shape
    d = width3 // 3
    q, k, v = qkv.double().view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # [b, h, n, dh] each
    scores = q @ k.transpose(-1, -2) / (d // heads) ** 0.5
    if causal:
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)


def projection(batch: int, tokens: int, heads: int, head_width: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    # scaled so that the softmax is neither flat nor one-hot
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, tokens, 3 * heads * head_width, generator=generator) * 1.5).to(dtype)


@needs_kernel
@pytest.mark.parametrize("tokens", [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 50, 77, 200])  # blocks of 8 queries, 16/32 keys
@pytest.mark.parametrize("head_width", [16, 64, 80])  # 80: a 64-wide and a 16-wide piece of the output
@pytest.mark.parametrize("causal", [False, True])
def test_fp32_attention_matches_exact_attention(tokens, head_width, causal, isa):
    qkv = projection(2, tokens, 3, head_width, torch.float32, seed=tokens * head_width)
    got = attention.self_attention(qkv, 3, causal)
    assert got.dtype == torch.float32 and got.shape == (2, tokens, 3 * head_width)
    torch.testing.assert_close(got.double(), exact(qkv, 3, causal), rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("tokens", [1, 9, 50, 77])
@pytest.mark.parametrize("causal", [False, True])
def test_bf16_attention_is_rounded_once_from_fp32_sums(tokens, causal, isa):
    qkv = projection(2, tokens, 4, 64, torch.bfloat16, seed=tokens)
    got = attention.self_attention(qkv, 4, causal)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), exact(qkv, 4, causal), rtol=BF16_ULP, atol=1e-6)
    assert (got != exact(qkv, 4, causal).bfloat16()).float().mean() < 0.01


@needs_kernel
def test_causal_attention_ignores_later_tokens(isa):
    qkv = projection(1, 20, 2, 32, torch.float32, seed=5)
    changed = qkv.clone()
    changed[:, 12:] = torch.randn_like(changed[:, 12:])
    assert torch.equal(attention.self_attention(qkv, 2, causal=True)[:, :12],
                       attention.self_attention(changed, 2, causal=True)[:, :12])


@needs_kernel
def test_the_result_is_the_same_whatever_the_threads_and_batch(isa, monkeypatch):
    qkv = projection(5, 50, 3, 64, torch.float32, seed=3)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    alone = torch.cat([attention.self_attention(qkv[i:i + 1], 3) for i in range(5)])
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert torch.equal(attention.self_attention(qkv, 3), alone)


@needs_kernel
def test_bf16_rounding_keeps_nan(isa):
    qkv = projection(1, 4, 1, 16, torch.bfloat16, seed=1)
    qkv[0, :, 32] = float("nan")  # the first value of every v: output column 0
    out = attention.self_attention(qkv, 1)
    assert out[..., 0].isnan().all() and out[..., 1:].isfinite().all()


@needs_kernel
def test_both_builds_agree_in_bf16_and_to_rounding_in_fp32(monkeypatch):
    from handspring_models.runtime import panel_gemm

    if panel_gemm.native_isa() != "avx512":
        pytest.skip("this CPU does not run the avx512 build")
    qkv = projection(3, 50, 4, 64, torch.float32, seed=9)
    results = {}
    for build in ("avx2", "avx512"):
        monkeypatch.setattr(panel_gemm, "isa_override", build)
        results[build] = attention.self_attention(qkv, 4), attention.self_attention(qkv.bfloat16(), 4)
    torch.testing.assert_close(results["avx2"][0], results["avx512"][0], rtol=1e-6, atol=1e-6)
    assert (results["avx2"][1] != results["avx512"][1]).float().mean() < 0.01


@pytest.mark.parametrize("shape, heads", [((2, 5, 3 * 24), 1), ((2, 5, 3 * 64), 3), ((2, 5, 100), 1), ((10, 3 * 64), 1)])
def test_shapes_the_kernel_cannot_take_are_refused(shape, heads):
    qkv = torch.zeros(shape)
    assert not attention.fits(qkv, heads)
    if attention.available():
        with pytest.raises(ValueError, match="attention kernel takes"):
            attention.self_attention(qkv, heads)


def test_other_dtypes_are_refused():
    assert not attention.fits(torch.zeros(1, 2, 96, dtype=torch.float16), 1)
    assert attention.fits(torch.zeros(1, 2, 96), 1) and attention.fits(torch.zeros(1, 2, 96, dtype=torch.bfloat16), 2)


# ---------------------------------------------------------------- in the models

@needs_kernel
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_loaded_model_runs_its_attention_on_the_kernel(tiny_weights, precision, monkeypatch):
    emb = handspring_models.load("clip_vit_b_32", tiny_weights, precision=precision)
    if not kernels.is_prepared(emb.model.transformer.resblocks[0].attn.in_proj_weight):
        pytest.skip(f"{precision} weights are not packed on this CPU")
    calls = []
    kernel = attention.self_attention
    monkeypatch.setattr(attention, "self_attention", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    emb.embed_texts(["a photo of a cat"])
    assert calls


@needs_kernel
def test_a_dense_model_what_exporters_trace_stays_on_pytorchs_attention(tiny_weights, monkeypatch):
    emb = handspring_models.load("clip_vit_b_32", tiny_weights, precision="fp32")
    dense = emb.dense_model()

    def refuse(*args, **kwargs):
        raise AssertionError("the dense model called the attention kernel")

    monkeypatch.setattr(layers.attention, "self_attention", refuse)
    dense.visual(torch.rand(1, 3, emb.image_size, emb.image_size))


@needs_kernel
def test_the_kernel_keeps_the_fp32_model_exact(tiny_weights, monkeypatch):
    """The same vectors, to fp32 rounding, with the kernel as with PyTorch's attention."""
    emb = handspring_models.load("clip_vit_b_32", tiny_weights, precision="fp32")
    texts = ["a photo of a cat", "an astronaut riding a horse on the moon at night"]
    images = [torch.rand(3, emb.image_size, emb.image_size) for _ in range(3)]
    ours = emb.encode("text", [emb.prepare("text", t) for t in texts]), emb.encode("image", images)
    monkeypatch.setattr(attention, "available", lambda: False)
    theirs = emb.encode("text", [emb.prepare("text", t) for t in texts]), emb.encode("image", images)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-5, atol=1e-6)
