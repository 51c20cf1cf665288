"""The glue the captioners share (captioners/base.py), against numbers worked out by hand."""
import pytest
import torch

from clipdiff_mini.captioners.base import Captioner, check_heads, guidance_mix, image_free_rows


def test_guidance_mix_is_the_conditional_at_one_and_extrapolates_linearly():
    cond, free = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 1.0])
    assert torch.equal(guidance_mix(cond, free, 1.0), cond)
    assert torch.equal(guidance_mix(cond, free, 0.0), free)
    assert torch.equal(guidance_mix(cond, free, 2.0), torch.tensor([3.0, -3.0]))  # 1 + 2 (2 - 1), 1 + 2 (-1 - 1)


def test_image_free_rows_share_is_p_and_follows_the_generator():
    rows = image_free_rows(20_000, 0.2, torch.Generator().manual_seed(0), "cpu")
    assert rows.dtype == torch.bool and abs(rows.float().mean().item() - 0.2) < 0.01  # 4 standard errors
    again = image_free_rows(20_000, 0.2, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(rows, again)
    assert not image_free_rows(100, 0.0, None, "cpu").any()


def test_check_heads_refuses_a_width_the_heads_do_not_divide():
    check_heads(96, 4)
    with pytest.raises(ValueError, match="divisible"):
        check_heads(96, 5)


def test_the_three_captioners_have_the_interface():
    from clipdiff_mini.captioners.autoregressive import ARCaptioner
    from clipdiff_mini.captioners.continuous import ContinuousCaptioner
    from clipdiff_mini.captioners.ddcap import DDCapCaptioner

    for cls in (ARCaptioner, ContinuousCaptioner, DDCapCaptioner):
        assert issubclass(cls, Captioner), cls
    assert not issubclass(torch.nn.Linear, Captioner)  # a module without them is not a captioner
