"""make bench's catalog (section (e)) measures SigLIP against transformers: here its quick mode,
on a tiny SigLIP 2, to prove the section works (the numbers mean nothing)."""

import math

import pytest


@pytest.mark.timeout(600)
def test_catalog_measures_a_siglip_model_against_transformers(tmp_path):
    from bench import catalog

    result = catalog.run(tmp_path, ["fp32"], quick=True, models=["siglip2_base_patch16_224"], log=lambda m: None)
    entry = result["models"]["siglip2_base_patch16_224"]
    assert "rows" in entry, entry
    seen = {(r["modality"], r["batch"]) for r in entry["rows"]}
    assert seen == {(m, b) for m in ("image", "text") for b in result["batch_sizes"]}
    assert all(math.isfinite(r["ratio"]) and r["ratio"] > 0 for r in entry["rows"])
