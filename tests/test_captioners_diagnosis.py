"""captioners/diagnosis.py: teacher-forced accuracies against counts made by hand on stub models whose
predictions do not depend on the input (so the expected accuracy is a count over the references)."""
from types import SimpleNamespace

import torch

from clipdiff_mini.captioners.diagnosis import masked_token_accuracy, next_token_accuracy

from test_captioners_continuous import fake_split, tiny_cfg


class PositionGuess(torch.nn.Module):
    """Predicts token guess[i] at position i, whatever it sees."""

    def __init__(self, guess, vocab, pad_id, mask_id):
        super().__init__()
        self.guess, self.vocab, self.pad_id, self.mask_id = guess, vocab, pad_id, mask_id
        self.sched = SimpleNamespace(T=20)

    def forward(self, x, t, image=None, grid=None):
        logits = torch.zeros(*x.shape, self.vocab)
        logits[:, torch.arange(x.shape[1]), self.guess[:x.shape[1]]] = 1.0
        return logits


def test_masked_accuracy_at_ratio_one_counts_the_positions_the_guess_gets_right():
    data = fake_split(tiny_cfg(), n=20)
    tok = data.tokenizer
    L = data.ids.shape[1]
    guess = data.ids[0].clone()  # the first reference's tokens, position by position
    model = PositionGuess(guess, tok.vocab_size, tok.pad_id, tok.mask_id)
    ids = data.ids
    real = ids != tok.pad_id
    want = ((ids == guess[None, :L]) & real).sum().item() / real.sum().item()  # every real token hidden
    got = masked_token_accuracy(model, data, [1.0, 0.0], n_captions=ids.shape[0], batch_size=7)
    assert abs(got[1.0] - want) < 1e-12
    assert got[0.0] == 0.0  # nothing hidden, nothing counted


def test_next_token_accuracy_counts_targets_equal_to_a_constant_guess():
    data = fake_split(tiny_cfg(), n=20)
    tok = data.tokenizer
    word = int(data.ids[0, 1])  # the first word of the first caption

    class Constant(torch.nn.Module):
        pad_id = tok.pad_id

        def forward(self, ids, image=None, grid=None):
            logits = torch.zeros(*ids.shape, tok.vocab_size)
            logits[..., word] = 1.0
            return logits

    target = data.ids[:, 1:]
    keep = target != tok.pad_id
    want = ((target == word) & keep).sum().item() / keep.sum().item()
    assert abs(next_token_accuracy(Constant(), data, n_captions=data.ids.shape[0], batch_size=6) - want) < 1e-12
