"""Prepacked linear weights (handspring_models.runtime.kernels): the same maths as ``F.linear``."""

import pytest
import torch
import torch.nn.functional as F

from handspring_models.runtime import kernels

pytestmark = pytest.mark.skipif(not kernels.packs(torch.float32), reason="oneDNN cannot prepack fp32 weights here")


@pytest.mark.parametrize("rows", [1, 10, 50, 130])
@pytest.mark.parametrize("with_bias", [True, False])
def test_packed_linear_matches_dense(rows, with_bias):
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(384, 256, generator=generator) / 16
    bias = torch.randn(384, generator=generator) if with_bias else None
    x = torch.randn(2, rows, 256, generator=generator)
    packed = kernels.pack(weight)
    assert packed.is_mkldnn
    torch.testing.assert_close(kernels.linear(x, packed, bias), F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_packed_weight_keeps_its_values():
    weight = torch.randn(96, 40)
    assert torch.equal(kernels.pack(weight).to_dense(), weight)


def test_pack_linear_weights_replaces_every_weight_once():
    model = torch.nn.Sequential(kernels.Linear(16, 32), torch.nn.GELU(), kernels.Linear(32, 8))
    for layer in (model[0], model[2]):
        layer.weight.data.normal_()
        layer.bias.data.normal_()
    x = torch.randn(5, 16)
    expected = model(x)
    assert kernels.pack_linear_weights(model) == 2
    assert all(layer.weight.is_mkldnn for layer in (model[0], model[2]))
    assert kernels.pack_linear_weights(model) == 0  # already packed
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
