"""Blockwise attention of the fast path: the block plan (hand-checked) and its equality with one masked call."""

import pytest
import torch

from cot_transplant.train.steps.fast.attention import chunked_attention
from cot_transplant.train.steps.fast.plan import attention_chunks

# One packed arguer row of 6 tokens: prefix 0-1, candidate 1 at 2-3, candidate 2 at 4-5.
PACKED = torch.tensor([[
    [1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 1, 1, 1, 0, 0],
    [1, 1, 0, 0, 1, 0],
    [1, 1, 0, 0, 1, 1],
]], dtype=torch.bool)


def test_blocks_keep_only_the_keys_their_queries_see():
    chunks = attention_chunks(PACKED, size=2, gap=0)
    assert [(c.row, c.queries, c.keys) for c in chunks] == [
        (0, (0, 2), ((0, 2),)),
        (0, (2, 4), ((0, 4),)),
        (0, (4, 6), ((0, 2), (4, 6))),  # candidate 2's block skips candidate 1
    ]
    assert chunks[0].allowed.tolist() == [[True, False], [True, True]]
    assert chunks[2].allowed.tolist() == [[True, True, True, False], [True, True, True, True]]


def test_small_gaps_are_merged_and_a_full_block_needs_no_mask():
    merged = attention_chunks(PACKED, size=2, gap=2)[2]
    assert merged.keys == ((0, 6),)
    assert merged.allowed.tolist() == [[True, True, False, False, True, False], [True, True, False, False, True, True]]
    full = attention_chunks(torch.ones(2, 3, 5, dtype=torch.bool), size=2)
    assert [(c.row, c.queries, c.keys, c.allowed) for c in full] == [
        (0, (0, 2), ((0, 5),), None), (0, (2, 3), ((0, 5),), None),
        (1, (0, 2), ((0, 5),), None), (1, (2, 3), ((0, 5),), None)]


def test_a_query_that_sees_nothing_is_an_error():
    pattern = PACKED.clone()
    pattern[0, 3] = False
    with pytest.raises(ValueError, match=r"row 0 has a query in \[2, 4\)"):
        attention_chunks(pattern, size=2)


@pytest.mark.parametrize("size, gap", [(1, 0), (3, 0), (4, 2), (64, 16)])
def test_blockwise_attention_equals_one_masked_call(size, gap):
    """Outputs and gradients of q, k, v, with grouped-query heads (4 query heads on 2 kv heads), in float64."""
    gen = torch.Generator().manual_seed(0)
    rows, tq, tk, dim = 2, 9, 13, 8
    allowed = torch.rand(rows, tq, tk, generator=gen) < 0.4
    allowed[:, torch.arange(tq), torch.arange(tq) + 2] = True  # every query sees a key
    allowed[1, :, 5:9] = False  # a key range no query of row 1 sees

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    q, k, v = leaf(rows, 4, tq, dim), leaf(rows, 2, tk, dim), leaf(rows, 2, tk, dim)
    out_grad = torch.randn(rows, tq, 4, dim, generator=gen, dtype=torch.float64)

    def run(fn):
        out = fn()
        grads = torch.autograd.grad(out, (q, k, v), out_grad)
        return out, *grads

    blocks = attention_chunks(allowed, size, gap)
    got = run(lambda: chunked_attention(None, q, k, v, None, attention_chunks=blocks, scaling=0.3)[0])
    want = run(lambda: torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=allowed[:, None], scale=0.3, enable_gqa=True).transpose(1, 2))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
