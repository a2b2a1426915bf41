"""The bf16 panel kernel (handspring_models.runtime.bf16_gemm): fp32 sums of bf16 products, the
activation and residual on those sums, one rounding to bf16; and its place in bf16 models."""

import pytest
import torch
import torch.nn.functional as F

import handspring_models
from handspring_models.runtime import bf16_gemm, kernels

needs_bf16_panels = pytest.mark.skipif(not bf16_gemm.available(),
                                       reason="this CPU has no AVX512-BF16, or the kernels are not built")
BF16_ULP = 2.0 ** -7  # relative spacing of bf16 values, at most


def layer(out_features: int, in_features: int, seed: int, with_bias: bool = True):
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(out_features, in_features, generator=generator) / in_features ** 0.5).bfloat16()
    bias = torch.randn(out_features, generator=generator).bfloat16() if with_bias else None
    return weight, bias, generator


def exact(x, weight, bias):
    """The products summed in float64: what one rounding to bf16 should be nearest to."""
    y = x.double() @ weight.double().T
    return y if bias is None else y + bias.double()


@needs_bf16_panels
@pytest.mark.parametrize("rows", [*range(1, 14), 25, 700])  # tiles of 1-12 rows; 700: several chunks
def test_kernel_rounds_the_sums_once(rows):
    weight, bias, generator = layer(48, 768, seed=rows)  # 3 panels: a pair and a single one
    x = torch.randn(rows, 768, generator=generator).bfloat16()
    y = bf16_gemm.linear(x, bf16_gemm.pack(weight), bias)
    assert y.dtype == torch.bfloat16 and y.shape == (rows, 48)
    # fp32 sums, rounded once: within one bf16 step of the exact sum, and equal to its rounding
    # almost everywhere (an fp32 sum can fall on the other side of a rounding boundary)
    torch.testing.assert_close(y.double(), exact(x, weight, bias), rtol=BF16_ULP, atol=1e-6)
    assert (y != exact(x, weight, bias).bfloat16()).float().mean() < 0.01


@needs_bf16_panels
@pytest.mark.parametrize("threads", [1, 2])
def test_every_output_is_the_same_whatever_the_rows_and_threads(threads, monkeypatch):
    """Each output sums over k in order, from the bias: neither the tile it falls in nor the thread
    count changes a bit of it."""
    weight, bias, generator = layer(64, 512, seed=11)
    x = torch.randn(30, 512, generator=generator).bfloat16()
    packed = bf16_gemm.pack(weight)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    whole = bf16_gemm.linear(x, packed, bias)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert torch.equal(whole, torch.cat([bf16_gemm.linear(x[i:i + 1], packed, bias) for i in range(30)]))


@needs_bf16_panels
@pytest.mark.parametrize("rows", [1, 12, 30])
def test_kernel_applies_quick_gelu_then_the_residual_before_rounding(rows):
    weight, bias, generator = layer(32, 64, seed=rows)
    x = (4 * torch.randn(rows, 64, generator=generator)).bfloat16()
    residual = torch.randn(rows, 32, generator=generator).bfloat16()
    packed, sums = bf16_gemm.pack(weight), exact(x, weight, bias)
    gelu = sums * torch.sigmoid(1.702 * sums)
    torch.testing.assert_close(bf16_gemm.linear(x, packed, bias, "quick_gelu").double(), gelu, rtol=BF16_ULP, atol=1e-6)
    torch.testing.assert_close(bf16_gemm.linear(x, packed, bias, residual=residual).double(), sums + residual.double(),
                               rtol=BF16_ULP, atol=1e-6)
    torch.testing.assert_close(bf16_gemm.linear(x, packed, bias, "quick_gelu", residual).double(),
                               gelu + residual.double(), rtol=BF16_ULP, atol=1e-6)


@needs_bf16_panels
def test_kernel_without_bias_with_leading_dimensions_and_strided_input():
    weight, _, generator = layer(16, 96, seed=12, with_bias=False)
    x = torch.randn(3, 96, 2, generator=generator).bfloat16()[..., 0]  # not contiguous
    y = bf16_gemm.linear(x, bf16_gemm.pack(weight), None)
    assert y.shape == (3, 16)
    assert torch.equal(y, bf16_gemm.linear(x.contiguous(), bf16_gemm.pack(weight), None))
    torch.testing.assert_close(y.double(), exact(x, weight, None), rtol=BF16_ULP, atol=1e-6)


@needs_bf16_panels
def test_kernel_refuses_what_does_not_fit():
    weight, bias, _ = layer(32, 64, seed=13)
    packed = bf16_gemm.pack(weight)
    with pytest.raises(TypeError, match="bfloat16"):
        bf16_gemm.linear(torch.zeros(2, 64), packed, bias)
    with pytest.raises(ValueError, match="do not fit"):
        bf16_gemm.linear(torch.zeros(2, 62, dtype=torch.bfloat16), packed, bias)
    with pytest.raises(ValueError, match="residual"):
        bf16_gemm.linear(torch.zeros(2, 64, dtype=torch.bfloat16), packed, bias,
                         residual=torch.zeros(2, 16, dtype=torch.bfloat16))


def test_kernel_refuses_to_run_where_it_is_not_available(monkeypatch):
    weight, bias, _ = layer(16, 8, seed=14)
    monkeypatch.setattr(bf16_gemm, "available", lambda: False)
    with pytest.raises(RuntimeError, match="not available"):
        bf16_gemm.linear(torch.zeros(1, 8, dtype=torch.bfloat16), bf16_gemm.pack(weight), bias)


def test_pack_unpacks_to_the_same_weight():
    weight, _, _ = layer(48, 10, seed=15)
    packed = bf16_gemm.pack(weight)
    assert packed.shape == (3, 5, 16, 2) and bf16_gemm.is_packed(packed)
    assert torch.equal(bf16_gemm.unpack(packed), weight)
    assert torch.equal(kernels.unpack(packed), weight)


def test_odd_input_widths_and_other_dtypes_do_not_fit():
    assert bf16_gemm.fits(torch.zeros(16, 10, dtype=torch.bfloat16))
    assert not bf16_gemm.fits(torch.zeros(16, 9, dtype=torch.bfloat16))  # k in pairs
    assert not bf16_gemm.fits(torch.zeros(8, 10, dtype=torch.bfloat16))  # whole panels
    assert not bf16_gemm.fits(torch.zeros(16, 10))


@needs_bf16_panels
def test_kernels_linear_runs_packed_bf16_weights_on_the_panel_kernel():
    weight, bias, generator = layer(32, 64, seed=16)
    x = torch.randn(5, 64, generator=generator).bfloat16()
    packed = kernels.pack(weight)
    assert bf16_gemm.is_packed(packed)
    assert torch.equal(kernels.linear(x, packed, bias, "quick_gelu"), bf16_gemm.linear(x, packed, bias, "quick_gelu"))
    torch.testing.assert_close(kernels.linear(x, packed, bias).float(), F.linear(x, weight, bias).float(),
                               rtol=BF16_ULP, atol=1e-2)


@needs_bf16_panels
def test_ab_switch_packs_bf16_for_onednn(monkeypatch):
    weight, _, _ = layer(32, 64, seed=17)
    monkeypatch.setattr(kernels, "use_panel_kernel", False)
    if kernels.onednn_packs(torch.bfloat16):
        assert kernels.pack(weight).is_mkldnn


@needs_bf16_panels
def test_bf16_model_runs_its_linear_layers_on_the_panel_kernel(tiny_weights):
    emb = handspring_models.load("clip_vit_b_32", tiny_weights, precision="bf16")
    counts = emb.linear_kernels
    assert counts["panel"] > 0 and counts["onednn"] == 0 and counts["dense"] == 0
    assert emb.panel_kernel_build == "avx512"


@needs_bf16_panels
def test_packing_twice_leaves_packed_bf16_weights_alone():
    model = torch.nn.Sequential(kernels.Linear(64, 32), kernels.PatchProjection(3, 16, kernel_size=4, stride=4))
    with torch.no_grad():
        model[0].weight = torch.nn.Parameter(torch.randn(32, 64).bfloat16())
        model[1].weight = torch.nn.Parameter(torch.randn(16, 3, 4, 4).bfloat16())
    assert kernels.pack_linear_weights(model) == 2
    before = [model[0].weight, model[1].weight]
    assert kernels.pack_linear_weights(model) == 0
    assert model[0].weight is before[0] and model[1].weight is before[1]
    assert kernels.linear_kernels(model)["panel"] == 2
