"""precision="int8": the int8 kernel (handspring_models.runtime.int8_gemm) against a PyTorch reference
of the same quantization, bit for bit; its place in the models; and how close it stays to fp32."""

import numpy as np
import pytest
import torch
from torch import nn

import handspring_models
from handspring_models.clip.model import CLIP
from handspring_models.runtime import int8_gemm, kernels, precision
from tests.conftest import encode
from tests.test_model_fidelity import TEXTS, cosines

needs_int8 = pytest.mark.skipif(not int8_gemm.available(), reason="this CPU has no AVX512-VNNI, or the kernels are not built")


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The kernel's maths in PyTorch, in its order of fp32 operations: per-row asymmetric uint8
    activations over a range holding 0, per-channel symmetric int8 weights, exact integer sums."""
    q, s_n = int8_gemm.quantize_weight(weight)
    lo = x.amin(-1, keepdim=True).clamp_max(0)
    hi = x.amax(-1, keepdim=True).clamp_min(0)
    s_m = (hi - lo) / 255
    s_m = torch.where(s_m > 0, s_m, torch.ones_like(s_m))
    zero = torch.round(-lo / s_m)
    u = (torch.round(x * (1 / s_m)) + zero).clamp(0, 255)
    sums = (u.double() @ q.double().T).to(torch.int64)  # exact: every sum is below 2^53
    exact = (sums - zero.to(torch.int64) * q.sum(1, dtype=torch.int64)).to(torch.int32)
    y = exact.float() * (s_m * s_n)
    return y if bias is None else y + bias


def layer(out_features: int, in_features: int, seed: int, with_bias: bool = True):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator) / in_features ** 0.5
    bias = torch.randn(out_features, generator=generator) if with_bias else None
    return weight, bias, generator


# ---------------------------------------------------------------- the kernel

@needs_int8
@pytest.mark.parametrize("rows", [*range(1, 14), 25, 700])  # tiles of 1-12 rows; 700: two chunks of rows
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_gives_the_bits_of_the_reference(rows, threads, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    weight, bias, generator = layer(48, 768, seed=rows)  # 3 panels: a pair and a single one
    x = torch.randn(rows, 768, generator=generator)
    assert torch.equal(int8_gemm.linear(x, int8_gemm.quantize(weight), bias), reference(x, weight, bias))


@needs_int8
@pytest.mark.parametrize("in_features", [1, 3, 4, 13, 17, 100])  # k padded to a multiple of 4; row tails under 16
def test_kernel_pads_odd_input_widths(in_features):
    weight, bias, generator = layer(32, in_features, seed=in_features)
    x = torch.randn(5, in_features, generator=generator)
    assert torch.equal(int8_gemm.linear(x, int8_gemm.quantize(weight), bias), reference(x, weight, bias))


@needs_int8
def test_kernel_without_bias_and_with_leading_dimensions():
    weight, _, generator = layer(64, 96, seed=3, with_bias=False)
    x = torch.randn(2, 3, 96, generator=generator)
    y = int8_gemm.linear(x, int8_gemm.quantize(weight), None)
    assert y.shape == (2, 3, 64)
    assert torch.equal(y, reference(x.reshape(6, 96), weight, None).reshape(2, 3, 64))


@needs_int8
def test_rows_of_one_sign_and_of_zeros():
    """A row's range always holds 0, so zeros stay exactly 0 and a row of zeros gives the bias."""
    weight, bias, generator = layer(16, 64, seed=4)
    x = torch.stack([torch.rand(64, generator=generator) + 1, -torch.rand(64, generator=generator) - 1, torch.zeros(64)])
    y = int8_gemm.linear(x, int8_gemm.quantize(weight), bias)
    assert torch.equal(y, reference(x, weight, bias))
    assert torch.equal(y[2], bias)


@needs_int8
def test_kernel_stays_near_the_fp32_layer():
    weight, bias, generator = layer(768, 768, seed=5)
    x = torch.randn(20, 768, generator=generator)
    exact = x @ weight.T + bias
    y = int8_gemm.linear(x, int8_gemm.quantize(weight), bias)
    assert torch.nn.functional.cosine_similarity(y, exact).min() > 0.9995
    assert not torch.equal(y, exact)  # an approximation, not the fp32 sums


@needs_int8
@pytest.mark.parametrize("rows", [1, 12, 30])
def test_kernel_applies_quick_gelu_then_the_residual(rows):
    weight, bias, generator = layer(32, 64, seed=rows)
    x = 4 * torch.randn(rows, 64, generator=generator)
    residual = torch.randn(rows, 32, generator=generator)
    packed, sums = int8_gemm.quantize(weight), reference(x, weight, bias)
    assert torch.equal(int8_gemm.linear(x, packed, bias, residual=residual), residual + sums)
    torch.testing.assert_close(int8_gemm.linear(x, packed, bias, "quick_gelu"), kernels.quick_gelu(sums),
                               rtol=3e-7, atol=1e-30)
    torch.testing.assert_close(int8_gemm.linear(x, packed, bias, "quick_gelu", residual),
                               residual + kernels.quick_gelu(sums), rtol=3e-7, atol=1e-6)


@needs_int8
def test_kernel_refuses_what_does_not_fit():
    weight, bias, _ = layer(32, 64, seed=6)
    packed = int8_gemm.quantize(weight)
    with pytest.raises(ValueError, match="do not fit"):
        int8_gemm.linear(torch.zeros(2, 63), packed, bias)
    with pytest.raises(ValueError, match="do not fit"):
        int8_gemm.linear(torch.zeros(2, 64), packed, bias[:16])
    with pytest.raises(TypeError, match="float32"):
        int8_gemm.linear(torch.zeros(2, 64, dtype=torch.float64), packed, bias)
    with pytest.raises(ValueError, match="applies"):
        int8_gemm.linear(torch.zeros(2, 64), packed, bias, "relu")
    with pytest.raises(ValueError, match="residual"):
        int8_gemm.linear(torch.zeros(2, 64), packed, bias, residual=torch.zeros(2, 16))


def test_kernel_refuses_to_run_where_it_is_not_available(monkeypatch):
    weight, bias, _ = layer(16, 8, seed=7)
    packed = int8_gemm.quantize(weight)
    monkeypatch.setattr(int8_gemm, "available", lambda: False)
    with pytest.raises(RuntimeError, match="not available"):
        int8_gemm.linear(torch.zeros(1, 8), packed, bias)


# ---------------------------------------------------------------- quantized weights

def test_weights_are_quantized_per_channel_to_half_a_step():
    weight, _, _ = layer(32, 40, seed=8)
    weight[3] *= 100  # one loud channel does not coarsen the others
    weight[5] = 0
    q, scale = int8_gemm.quantize_weight(weight)
    assert q.dtype == torch.int8 and q.abs().max() == 127
    assert torch.all((q.float() * scale[:, None] - weight).abs() <= scale[:, None] / 2 + 1e-7)
    assert scale[5] == 1 and torch.all(q[5] == 0)
    assert scale[3] > 50 * scale[2]


def test_packed_weight_unpacks_to_what_the_kernel_multiplies():
    weight, _, _ = layer(48, 13, seed=9)  # k 13 -> 16, padded with zero weights
    packed = int8_gemm.quantize(weight)
    q, scale = int8_gemm.quantize_weight(weight)
    assert packed.shape == (48, 13) and packed.panels.shape == (3, 4, 64)
    assert torch.equal(int8_gemm.dequantize(packed), q.float() * scale[:, None])
    assert torch.equal(kernels.unpack(packed), int8_gemm.dequantize(packed))
    assert torch.equal(packed.sums, q.sum(1, dtype=torch.int32))
    assert packed.nbytes == 3 * 4 * 64 + 48 * 4 * 2  # a quarter of fp32's bytes, and two per-channel vectors


@pytest.mark.skipif(int8_gemm._quantizer() is None, reason="the kernels are not built")
@pytest.mark.parametrize("shape", [(16, 1), (32, 13), (48, 768), (768, 3072)])
def test_the_c_quantizer_gives_the_bits_of_pytorchs(shape, monkeypatch):
    weight, _, _ = layer(*shape, seed=shape[1])
    weight[1] = 0
    weight[2, 0] = 1e-30  # a tiny channel: a tiny scale, the same rounding
    fast = int8_gemm.quantize(weight)
    monkeypatch.setattr(int8_gemm, "_quantizer", lambda: None)
    slow = int8_gemm.quantize(weight)
    assert torch.equal(fast.panels, slow.panels) and torch.equal(fast.sums, slow.sums)
    assert torch.equal(fast.scale, slow.scale)


# ---------------------------------------------------------------- in the models

class TwoBlocks(nn.Module):
    INT8_KEEPS_PRECISE = ("blocks.0.",)

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleDict({"fc": kernels.Linear(64, 32)}) for _ in range(2))
        self.head = kernels.Linear(32, 8)  # 8 outputs: not a whole panel, stays as it is


def test_quantize_linear_weights_keeps_the_named_modules_precise():
    model = TwoBlocks()
    for module in model.modules():
        if isinstance(module, kernels.Linear):
            module.weight = nn.Parameter(torch.randn(module.out_features, module.in_features))
    assert kernels.quantize_linear_weights(model) == 1
    assert isinstance(model.blocks[1]["fc"].weight, int8_gemm.Int8Weight)
    assert isinstance(model.blocks[0]["fc"].weight, torch.Tensor)
    assert isinstance(model.head.weight, torch.Tensor)
    counts = kernels.linear_kernels(model)
    assert counts["int8"] == 1 and sum(counts.values()) == 3
    kernels.pack_linear_weights(model)  # packs the others, leaves the quantized one as it is
    assert isinstance(model.blocks[1]["fc"].weight, int8_gemm.Int8Weight)
    assert kernels.linear_kernels(model)["int8"] == 1


def test_a_model_not_measured_in_int8_is_refused():
    model = nn.Sequential(kernels.Linear(16, 16))
    with pytest.raises(precision.PrecisionUnavailableError, match="no int8 mode"):
        kernels.quantize_linear_weights(model)


def test_clip_names_real_blocks_to_keep_precise(tiny_clip):
    modules = dict(tiny_clip.model.named_modules())
    for prefix in CLIP.INT8_KEEPS_PRECISE:
        assert prefix.endswith(".") and prefix[:-1] in modules


def test_int8_is_refused_where_the_cpu_cannot_run_it(monkeypatch):
    monkeypatch.setattr(int8_gemm, "available", lambda: False)
    with pytest.raises(precision.PrecisionUnavailableError, match="AVX512-VNNI"):
        precision.resolve("int8")


def test_auto_never_picks_int8():
    assert precision.resolve("auto") in ("fp32", "bf16")


@needs_int8
def test_int8_runs_on_the_torch_backend_only(tiny_weights):
    with pytest.raises(precision.PrecisionUnavailableError, match="torch backend"):
        handspring_models.load("clip_vit_b_32", tiny_weights, precision="int8", backend="openvino")


@needs_int8
def test_int8_load_quantizes_all_but_the_first_blocks(tiny_weights):
    emb = handspring_models.load("clip_vit_b_32", tiny_weights, precision="int8")
    assert emb.precision == "int8" and emb.runs_precision == "int8"
    counts = emb.linear_kernels
    assert counts["int8"] > 0 and counts["dense"] == 0
    for name, module in emb.model.named_modules():
        for attribute in ("weight", "in_proj_weight"):
            weight = getattr(module, attribute, None)
            if attribute == "weight" and not isinstance(module, kernels.Linear) or weight is None:
                continue
            precise = (name + ".").startswith(CLIP.INT8_KEEPS_PRECISE)
            assert isinstance(weight, int8_gemm.Int8Weight) != precise, f"{name}.{attribute}"


@needs_int8
def test_int8_load_quantizes_each_weight_as_it_is_read(tiny_weights, monkeypatch):
    """No quantized weight is ever held in fp32 beside the others: what a component's read hands
    back is already int8, so the load's peak is near the int8 model's size."""
    from handspring_models import embedder

    read = {}

    def recording(*args, **kwargs):
        tensors = load_component(*args, **kwargs)
        read.update(tensors)
        return tensors

    load_component = embedder.load_component
    monkeypatch.setattr(embedder, "load_component", recording)
    emb = handspring_models.load("clip_vit_b_32", tiny_weights, precision="int8")
    quantized = {name for name, value in read.items() if isinstance(value, int8_gemm.Int8Weight)}
    assert len(quantized) == emb.linear_kernels["int8"] > 0
    with torch.device("meta"):
        assert quantized == set(kernels.int8_targets(emb._build_model()))


@needs_int8
def test_quantizing_as_read_gives_the_bits_of_quantizing_the_loaded_model(tiny_weights, photos):
    as_read = handspring_models.load("clip_vit_b_32", tiny_weights, precision="int8")
    after = handspring_models.load("clip_vit_b_32", tiny_weights, precision="int8")
    after.model = after.dense_model()  # the fp32 model, loaded whole, then quantized
    assert kernels.quantize_linear_weights(after.model) == as_read.linear_kernels["int8"]
    kernels.pack_linear_weights(after.model)
    items = {"text": ["a photo of a cat", "two dogs on a sofa"], "image": list(photos.values())[:2]}
    for modality, inputs in items.items():
        prepared = [as_read.prepare(modality, item) for item in inputs]
        assert np.array_equal(as_read.encode(modality, prepared), after.encode(modality, prepared))


@needs_int8
def test_a_misshapen_weight_is_reported_on_an_int8_load(tiny_weights, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from handspring_models.weights import WeightsError, read_config

    folder = tmp_path / "weights"
    shutil.copytree(tiny_weights, folder)
    filename = read_config(folder)["components"]["text"]
    state = load_file(folder / filename)
    name = next(k for k in state if k.endswith("mlp.c_fc.weight") and ".resblocks.1." in k)
    state[name] = state[name][:, :-1].contiguous()
    save_file(state, folder / filename)
    with pytest.raises(WeightsError, match="do not fit"):
        handspring_models.load("clip_vit_b_32", folder, precision="int8")


@needs_int8
@pytest.mark.slow
def test_int8_stays_close_to_fp32(full_weights, photos):
    """The issue's bar, on the full-size random ViT-B/32: cosine >= 0.999 on photos (decoded as each
    mode decodes them) and texts."""
    exact = handspring_models.load("clip_vit_b_32", full_weights, precision="fp32")
    fast = handspring_models.load("clip_vit_b_32", full_weights, precision="int8")
    images = [encode(p.convert("RGB"), "JPEG", quality=95) for p in photos.values()]
    assert cosines(fast.embed_images(images), exact.embed_images(images)).min() >= 0.999
    assert cosines(fast.embed_texts(TEXTS), exact.embed_texts(TEXTS)).min() >= 0.999
