"""CLIP texts go in passes of similar lengths (handspring_models.clip.embedder.length_groups)."""

import itertools
import random

import numpy as np
import pytest

from handspring_models.clip.embedder import length_groups


def rows(lengths, groups, context=77):
    return sum(len(g) * min(max(lengths[i] for i in g) + max(lengths[i] for i in g) % 2, context) for g in groups)


def test_one_long_text_among_short_ones_goes_in_a_pass_of_its_own():
    groups = length_groups([12] * 31 + [77], 77)
    assert groups == [list(range(31)), [31]]
    assert rows([12] * 31 + [77], groups) == 31 * 12 + 77


def test_texts_of_one_width_stay_in_one_pass():
    assert length_groups([10, 9, 10, 9], 77) == [[1, 3, 0, 2]]  # 9 and 10 both pad to 10


def test_close_lengths_are_not_worth_another_pass():
    assert len(length_groups([8, 10, 12, 14, 16], 77)) == 1


@pytest.mark.parametrize("seed", range(20))
def test_the_split_is_the_cheapest_of_all_splits_in_length_order(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(3, 77) for _ in range(rng.randint(2, 9))]
    groups = length_groups(lengths, 77, pass_cost_rows=48)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = min(rows(lengths, [order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)))]) + 48 * (len(cuts) + 1)
               for k in range(len(order)) for cuts in itertools.combinations(range(1, len(order)), k))
    assert rows(lengths, groups) + 48 * len(groups) == best


def test_a_mixed_batch_gives_each_texts_own_vector_in_its_place(tiny_clip, monkeypatch):
    texts = ["a photo of a cat", " ".join(["a long caption about many things"] * 12), "dog", "a red car on a street"]
    alone = np.concatenate([tiny_clip.embed_texts([t]) for t in texts])
    passes = []
    encode_text = tiny_clip.model.encode_text
    monkeypatch.setattr(tiny_clip.model, "encode_text", lambda tokens, eot: passes.append(tokens.shape) or encode_text(tokens, eot))
    together = tiny_clip.embed_texts(texts)
    assert len(passes) == 2 and passes[1][0] == 1  # the long text in a pass of its own
    np.testing.assert_allclose(together, alone, atol=1e-6)
