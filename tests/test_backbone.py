"""The course's one transformer block (captioners/backbone.py) under the causal mask the autoregressive
decoder uses: attention against softmax attention written out query by query, and a decoding step with
the key-value cache against a full pass over the caption so far. (Its bidirectional and concentrated
masks are checked against a hand-written attention in test_captioners_ddcap.py.)"""
import pytest
import torch

from clipdiff_mini.captioners.backbone import Block, attend

from conftest import torch_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("T,S,causal", [(7, 7, True), (3, 7, True), (1, 7, True), (5, 4, False)])
@pytest.mark.parametrize("need_weights", [False, True])
def test_attention_equals_a_softmax_written_by_hand(T, S, causal, need_weights):
    """Query t sits at position S - T + t and, under the causal mask, reads keys 0 .. S - T + t only
    (the first S - T keys are cached ones); without it, every key."""
    g = torch_generator(1)
    q, k, v = (torch.randn(2, 3, n, 4, generator=g) for n in (T, S, S))
    got, weights = attend(q, k, v, causal=causal, need_weights=need_weights)
    for t in range(T):
        last = S - T + t if causal else S - 1
        s = torch.einsum("bhd,bhjd->bhj", q[:, :, t], k[:, :, :last + 1]) / 2.0  # sqrt(d) = 2
        p = torch.exp(s - s.max(-1, keepdim=True).values)
        p = p / p.sum(-1, keepdim=True)  # (B, H, last + 1)
        want = torch.einsum("bhj,bhjd->bhd", p, v[:, :, :last + 1])
        torch.testing.assert_close(got[:, :, t], want, rtol=0, atol=1e-6)
        if need_weights:
            torch.testing.assert_close(weights[:, :, t, :last + 1], p, rtol=0, atol=1e-6)
            assert (weights[:, :, t, last + 1:] == 0).all()
    assert (weights is None) == (not need_weights)


def test_a_per_sample_mask_and_the_causal_mask_are_not_combined():
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(ValueError, match="not both"):
        attend(q, q, q, torch.ones(1, 3, 3, dtype=torch.bool), causal=True)


@pytest.mark.parametrize("cross", [False, True])
def test_cached_steps_equal_the_full_causal_pass(cross):
    """Feeding a sequence one position at a time through the cache gives, at every position, the output of
    one causal pass over the whole sequence: later positions never change earlier ones."""
    torch.manual_seed(0)
    block = Block(16, 4, 0.0, adaptive=False, cross=cross).eval()
    g = torch_generator(2)
    x = torch.randn(3, 6, 16, generator=g)  # (B, L, W)
    memory = block.cross_attn.keys_values(torch.randn(3, 5, 16, generator=g)) if cross else None
    full, _ = block(x, memory, None, None, False, causal=True)  # (B, L, W)
    cache: dict = {}
    first, _ = block(x[:, :2], memory, None, None, False, cache=cache, causal=True)  # two positions at once
    steps = [first] + [block(x[:, i:i + 1], memory, None, None, False, cache=cache, causal=True)[0]
                       for i in range(2, 6)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-5)
    assert cache["k"].shape == (3, 4, 6, 4)  # every position's keys: (B, H, L, d)
    # and the causal pass differs from the bidirectional one (the mask is in effect)
    both, _ = block(x, memory, None, None, False)
    assert not torch.allclose(both[:, :-1], full[:, :-1], atol=1e-3)
    torch.testing.assert_close(both[:, -1], full[:, -1], rtol=0, atol=1e-5)  # the last position sees all
