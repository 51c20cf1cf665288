"""Trajectory readings against hand-made trajectories and brute-force pair counts."""
import itertools
import math

import torch

from clipdiff_mini.captioners.refinement import length_mismatch, order_inversions, same_call_repeats, settle_steps

M, P, B_, E_ = 9, 0, 1, 2  # [MASK], [PAD], [BOS], [EOS] of the hand-made rows


def test_settle_steps_of_a_masked_trajectory_is_the_commit_call():
    start = torch.tensor([[B_, M, M, M, E_]])
    t1 = torch.tensor([[B_, M, 5, M, E_]])
    t2 = torch.tensor([[B_, M, 5, 6, E_]])
    t3 = torch.tensor([[B_, 7, 5, 6, E_]])
    steps = settle_steps([(3, start), (2, t1), (1, t2), (0, t3)])
    assert steps.tolist() == [[0, 3, 1, 2, 0]]


def test_settle_steps_of_a_continuous_trajectory_counts_late_changes():
    a = torch.tensor([[4, 5, 6]])
    b = torch.tensor([[4, 7, 6]])
    c = torch.tensor([[8, 7, 6]])
    d = torch.tensor([[8, 7, 6]])
    # position 0 changed at entry 2, position 1 at entry 1, position 2 never
    assert settle_steps([(0, a), (0, b), (0, c), (0, d)]).tolist() == [[2, 1, 0]]
    # a word that changes away and back settles at its return
    assert settle_steps([(0, a), (0, b), (0, a)]).tolist() == [[0, 2, 0]]


def test_order_inversions_against_brute_force():
    g = torch.Generator().manual_seed(0)
    steps = torch.randint(0, 6, (20, 9), generator=g)
    keep = torch.rand(20, 9, generator=g) < 0.7
    got = order_inversions(steps, keep)
    for b in range(20):
        pairs = [(i, j) for i, j in itertools.combinations(range(9), 2)
                 if keep[b, i] and keep[b, j] and steps[b, i] != steps[b, j]]
        if not pairs:
            assert math.isnan(float(got[b]))
            continue
        want = sum(bool(steps[b, j] < steps[b, i]) for i, j in pairs) / len(pairs)
        assert abs(float(got[b]) - want) < 1e-6
    left_to_right = torch.arange(1, 8)[None]
    assert float(order_inversions(left_to_right, torch.ones(1, 7, dtype=torch.bool))) == 0.0
    assert float(order_inversions(left_to_right.flip(-1), torch.ones(1, 7, dtype=torch.bool))) == 1.0


def test_same_call_repeats_and_length_mismatch():
    ids = torch.tensor([[B_, 5, 5, 6, E_, P], [B_, 5, 5, 6, E_, P], [B_, 5, 6, 6, E_, P], [B_, P, P, 6, 6, P]])
    steps = torch.tensor([[0, 2, 2, 1, 0, 0], [0, 1, 2, 3, 0, 0], [0, 1, 2, 2, 0, 0], [0, 0, 0, 1, 1, 0]])
    assert same_call_repeats(ids, steps, special=(P, B_, E_, M)).tolist() == [True, False, True, True]
    refs = torch.tensor([[[B_, 5, E_, P, P, P], [B_, 5, 6, 7, E_, P]]] * 4)  # lengths 3 and 5
    ids2 = torch.tensor([[B_, 5, 6, 7, E_, P],   # 5: a reference length
                         [B_, 5, 6, E_, P, P],   # 4: none
                         [B_, 5, E_, 7, E_, P],  # cut at the first [EOS]: 3
                         [B_, 5, 6, 7, 8, 9]])   # no [EOS]: the whole row, 6
    assert length_mismatch(ids2, refs, P, E_).tolist() == [False, True, False, True]
