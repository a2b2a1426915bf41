"""Packed linear weights (handspring_models.runtime.kernels and its panel kernel): the same maths as
``F.linear``."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from handspring_models.runtime import kernels, panel_gemm

needs_onednn = pytest.mark.skipif(not kernels.onednn_packs(torch.float32),
                                  reason="oneDNN cannot prepack fp32 weights here")
needs_panels = pytest.mark.skipif(panel_gemm.library() is None,
                                  reason="the panel kernel is not built, or this CPU has no AVX2")

PACKERS = {"onednn": pytest.param(kernels.onednn_pack, marks=needs_onednn),
           "panels": pytest.param(panel_gemm.pack, marks=needs_panels)}


def weights(out_features: int, in_features: int, seed: int, with_bias: bool = True):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator) / in_features ** 0.5
    bias = torch.randn(out_features, generator=generator) if with_bias else None
    return weight, bias, generator


@pytest.mark.parametrize("packer", PACKERS.values(), ids=PACKERS.keys())
@pytest.mark.parametrize("rows", [1, 10, 50, 130])
@pytest.mark.parametrize("with_bias", [True, False])
def test_packed_linear_matches_dense(packer, rows, with_bias):
    weight, bias, generator = weights(384, 256, rows, with_bias)
    x = torch.randn(2, rows, 256, generator=generator)
    torch.testing.assert_close(kernels.linear(x, packer(weight), bias), F.linear(x, weight, bias),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [*range(1, 26), 95, 96, 97, 200])
def test_panel_kernel_matches_dense_for_every_tile_size_and_across_chunks(isa, rows):
    # 1-25 rows: every tile height of both builds (AVX2: 6, then 1-5 left over; AVX-512: 12, then
    # 1-11), with 2048 inputs in several k slices; a chunk is 96 rows. 48 outputs are 3 panels: an
    # AVX-512 tile takes two, and the third alone.
    weight, bias, generator = weights(48, 2048, rows)
    x = torch.randn(rows, 2048, generator=generator)
    torch.testing.assert_close(panel_gemm.linear(x, panel_gemm.pack(weight), bias), F.linear(x, weight, bias),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 7, 200])
def test_panel_kernel_gives_the_same_bits_on_any_number_of_threads(isa, rows):
    # Threads split the output columns, never a sum: each output is one sum over k in order.
    weight, bias, generator = weights(96, 2048, rows)
    x, packed = torch.randn(rows, 2048, generator=generator), panel_gemm.pack(weight)
    threads = torch.get_num_threads()
    try:
        outputs = []
        for n in (1, 2, 5):
            torch.set_num_threads(n)
            outputs.append(panel_gemm.linear(x, packed, bias))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(out, outputs[0]) for out in outputs[1:])


@pytest.mark.parametrize("rows", [1, 13, 200])
def test_panel_kernel_builds_give_the_same_bits(rows):
    # Both sum each output over k in order with FMA, bias first: the build changes the speed only.
    if panel_gemm.native_isa() != "avx512":
        pytest.skip("one build runs here")
    weight, bias, generator = weights(80, 1000, rows)
    x, packed = torch.randn(rows, 1000, generator=generator), panel_gemm.pack(weight)
    residual = torch.randn(rows, 80, generator=generator)
    outputs = []
    for build in panel_gemm.ISAS:
        panel_gemm.isa_override = build
        try:
            outputs.append([panel_gemm.linear(x, packed, bias), panel_gemm.linear(10 * x, packed, bias, "quick_gelu"),
                            panel_gemm.linear(x, packed, bias, residual=residual)])
        finally:
            panel_gemm.isa_override = None
    assert all(torch.equal(a, b) for a, b in zip(*outputs))


@pytest.mark.parametrize("rows", [1, 13, 200])
def test_panel_kernel_applies_quick_gelu_as_pytorch_does(isa, rows):
    # Outputs from about -150 to 150: both tails of the sigmoid, where its exp is clamped.
    # Against PyTorch's QuickGELU on the kernel's own sums, so that only the activation differs.
    weight, bias, generator = weights(96, 512, rows)
    x, packed = 40 * torch.randn(rows, 512, generator=generator), panel_gemm.pack(weight)
    sums = panel_gemm.linear(x, packed, bias)
    assert sums.abs().max() > 100 and (sums < -60).any()
    torch.testing.assert_close(panel_gemm.linear(x, packed, bias, "quick_gelu"), kernels.quick_gelu(sums),
                               rtol=3e-7, atol=1e-30)


@pytest.mark.parametrize("rows", [1, 13, 200])
def test_panel_kernel_adds_the_residual_as_pytorch_does_bit_for_bit(isa, rows):
    weight, bias, generator = weights(96, 512, rows)
    x, residual, packed = torch.randn(2, rows, 512, generator=generator), torch.randn(2, rows, 96), panel_gemm.pack(weight)
    assert torch.equal(panel_gemm.linear(x, packed, bias, residual=residual), residual + panel_gemm.linear(x, packed, bias))


@pytest.mark.parametrize("packer", [None, *PACKERS.values()], ids=["dense", *PACKERS.keys()])
def test_linear_applies_the_activation_then_the_residual_on_every_kernel(packer):
    weight, bias, generator = weights(64, 48, 1)
    x, residual = torch.randn(5, 48, generator=generator), torch.randn(5, 64, generator=generator)
    packed = weight if packer is None else packer(weight)
    dense = F.linear(x, weight, bias)
    torch.testing.assert_close(kernels.linear(x, packed, bias, "quick_gelu"), kernels.quick_gelu(dense),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernels.linear(x, packed, bias, residual=residual), residual + dense, rtol=1e-5, atol=1e-5)


@needs_panels
def test_panel_kernel_refuses_an_unknown_activation_or_a_residual_that_does_not_fit():
    weight, bias, _ = weights(32, 64, 0)
    packed, x = panel_gemm.pack(weight), torch.zeros(3, 64)
    with pytest.raises(ValueError, match="applies"):
        panel_gemm.linear(x, packed, bias, "swish")
    with pytest.raises(ValueError, match="does not fit"):
        panel_gemm.linear(x, packed, bias, residual=torch.zeros(3, 16))
    with pytest.raises(TypeError, match="float32 residual"):
        panel_gemm.linear(x, packed, bias, residual=torch.zeros(3, 32, dtype=torch.float64))


@needs_panels
def test_panel_kernel_refuses_a_build_this_cpu_cannot_run(monkeypatch):
    monkeypatch.setattr(panel_gemm, "isa_override", "avx1024")
    weight, bias, _ = weights(32, 64, 0)
    with pytest.raises(ValueError, match="this CPU runs"):
        panel_gemm.linear(torch.zeros(2, 64), panel_gemm.pack(weight), bias)


def test_panel_kernel_takes_strided_and_empty_inputs(isa):
    weight, bias, generator = weights(32, 64, 0)
    packed = panel_gemm.pack(weight)
    x = torch.randn(64, 9, generator=generator).t()  # [9, 64], not contiguous
    torch.testing.assert_close(panel_gemm.linear(x, packed, bias), F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    assert panel_gemm.linear(torch.empty(3, 0, 64), packed, bias).shape == (3, 0, 32)


@needs_panels
def test_panel_kernel_refuses_inputs_that_do_not_fit_the_weight():
    # The C side would read past the end of x or the bias: checked before it runs.
    weight, bias, _ = weights(32, 64, 0)
    packed = panel_gemm.pack(weight)
    with pytest.raises(ValueError, match="do not fit"):
        panel_gemm.linear(torch.zeros(2, 32), packed, bias)
    with pytest.raises(ValueError, match="do not fit"):
        panel_gemm.linear(torch.zeros(2, 64), packed, bias[:16])


@needs_panels
def test_panel_kernel_refuses_other_dtypes():
    weight, bias, _ = weights(32, 64, 0)
    with pytest.raises(TypeError, match="float32"):
        panel_gemm.linear(torch.zeros(2, 64, dtype=torch.bfloat16), panel_gemm.pack(weight), bias)


OPENMP_RUNTIMES = """
import re
from pathlib import Path
import torch
from handspring_models.runtime import panel_gemm
assert panel_gemm.library() is not None
maps = Path("/proc/self/maps").read_text().splitlines()
print(sorted({line.split()[-1] for line in maps if re.search(r"/libgomp[^/]*[.]so", line)}))
"""


@needs_panels
def test_panel_kernel_shares_pytorchs_openmp_runtime():
    # Two OpenMP runtimes would each keep a team of threads spinning on the same cores. (A fresh
    # process: other libraries in the test session load their own copies.)
    done = subprocess.run([sys.executable, "-c", OPENMP_RUNTIMES], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    runtimes = ast.literal_eval(done.stdout.strip())
    assert len(runtimes) == 1 and Path(runtimes[0]).parent == Path(torch.__file__).parent / "lib", runtimes


@pytest.mark.parametrize("packer", PACKERS.values(), ids=PACKERS.keys())
def test_packed_weight_keeps_its_values(packer):
    weight = torch.randn(96, 40)
    assert torch.equal(kernels.unpack(packer(weight)), weight)


@needs_panels
def test_pack_gives_fp32_weights_to_the_panel_kernel_where_their_shape_fits():
    assert panel_gemm.is_packed(kernels.pack(torch.randn(64, 24)))
    if kernels.onednn_packs(torch.float32):
        assert kernels.pack(torch.randn(40, 24)).is_mkldnn  # 40 output columns: not whole panels


@needs_onednn
def test_pack_leaves_the_panel_kernel_out_when_told(monkeypatch):
    monkeypatch.setattr(kernels, "use_panel_kernel", False)
    assert kernels.pack(torch.randn(64, 24)).is_mkldnn


@pytest.mark.skipif(not kernels.packs(torch.float32), reason="no faster fp32 kernel here")
def test_pack_linear_weights_replaces_every_weight_once():
    model = torch.nn.Sequential(kernels.Linear(16, 32), torch.nn.GELU(), kernels.Linear(32, 8))
    for layer in (model[0], model[2]):
        layer.weight.data.normal_()
        layer.bias.data.normal_()
    x = torch.randn(5, 16)
    expected = model(x)
    assert kernels.pack_linear_weights(model) == 2
    counts = kernels.linear_kernels(model)
    assert counts["dense"] == 0 and counts["panel"] + counts["onednn"] == 2
    assert kernels.pack_linear_weights(model) == 0  # already packed
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_patch_projection_is_the_convolution(dtype):
    """A stride-equals-kernel convolution run as a linear layer over flattened patches, on whichever
    kernel packs it here: the convolution's tokens, in the same order."""
    if not kernels.packs(dtype):
        pytest.skip(f"no kernel packs {dtype} weights here")
    generator = torch.Generator().manual_seed(7)
    conv = kernels.PatchProjection(3, 32, kernel_size=8, stride=8, bias=False)
    conv.weight = torch.nn.Parameter((torch.randn(32, 3, 8, 8, generator=generator) / 14).to(dtype))
    pixels = torch.randn(2, 3, 19, 24, generator=generator).to(dtype)  # a 2 x 3 grid, and 3 rows left out
    with torch.inference_mode():
        dense = conv(pixels)
        assert dense.shape == (2, 6, 32)
        reference = F.conv2d(pixels.float(), conv.weight.float(), stride=8).flatten(2).transpose(1, 2)
        assert kernels.pack_linear_weights(conv) == 1
        packed = conv(pixels)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2 ** -7, "atol": 1e-2}
    torch.testing.assert_close(packed.float(), reference, **tolerance)
    torch.testing.assert_close(dense.float(), reference, **tolerance)


def test_a_patch_projection_strides_by_its_kernel():
    with pytest.raises(ValueError, match="stride is its kernel"):
        kernels.PatchProjection(3, 16, kernel_size=8, stride=4)
