"""analysis.evaluation against a whole-batch reference computed here, chunk-size invariance,
the out-of-memory retry, progress and seeded subsets."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lenscape.analysis.evaluation import evaluate, in_chunks, random_subset
from lenscape.errors import InvalidInputError


def _model(seed=0):
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m


def _data(n=37, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 6, 6), generator=g, dtype=torch.uint8), torch.randint(0, 4, (n,), generator=g)


def test_matches_one_whole_batch_pass_computed_by_hand():
    model, (images, labels) = _model(), _data()
    x = images.float() / 255
    with torch.no_grad():
        logits = model(x)
        acts = model[1](model[0](x))
    ev = evaluate(model, images, labels, batch_size=5, probabilities=True, layers=["1", "3"])
    assert ev.loss == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)
    assert ev.accuracy == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert torch.equal(ev.predictions, logits.argmax(1))
    assert torch.allclose(ev.probabilities, torch.softmax(logits, 1), atol=1e-6)
    assert torch.allclose(ev.activations["1"], acts.mean(dim=(2, 3)), atol=1e-6)  # pooled conv
    assert torch.allclose(ev.activations["3"], logits, atol=1e-6)
    flat = evaluate(model, images, layers=["1"], conv_mode="flatten").activations["1"]
    pos = evaluate(model, images, layers=["1"], conv_mode="positions").activations["1"]
    assert torch.allclose(flat, acts.flatten(1), atol=1e-6)
    assert torch.allclose(pos, acts.permute(0, 2, 3, 1).reshape(-1, 3), atol=1e-6)


def test_float_images_equal_uint8_images_and_no_labels_gives_nan():
    model, (images, labels) = _model(), _data()
    a = evaluate(model, images, labels)
    b = evaluate(model, images.float() / 255, labels)
    assert a.loss == pytest.approx(b.loss) and torch.equal(a.predictions, b.predictions)
    c = evaluate(model, images)
    assert c.loss != c.loss and c.accuracy != c.accuracy and torch.equal(c.predictions, a.predictions)
    assert c.probabilities is None and c.activations == {}


def test_leaves_the_model_in_the_mode_it_found_it():
    model, (images, labels) = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(36, 4)), _data()
    model.train()
    first = evaluate(model, images, labels)
    assert model.training
    assert torch.equal(first.predictions, evaluate(model, images, labels).predictions)  # dropout was off


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 50), n=st.integers(1, 40))
def test_chunk_size_does_not_change_the_answer(batch, n):
    model, (images, labels) = _model(), _data(n)
    ref = evaluate(model, images, labels, batch_size=n, probabilities=True)
    ev = evaluate(model, images, labels, batch_size=batch, probabilities=True)
    assert ev.loss == pytest.approx(ref.loss, rel=1e-6) and ev.accuracy == ref.accuracy
    assert torch.equal(ev.predictions, ref.predictions)
    assert torch.allclose(ev.probabilities, ref.probabilities, atol=1e-6)


class _Picky(nn.Module):
    """Runs out of (pretend) GPU memory on batches larger than `limit`."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.sizes = limit, []
        self.lin = nn.Linear(36, 4)

    def forward(self, x):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (pretend)")
        return self.lin(x.flatten(1))


def test_out_of_memory_halves_the_chunk_and_retries():
    images, labels = _data(20)
    picky = _Picky(limit=6)
    ev = evaluate(picky, images, labels, batch_size=16)
    assert len(ev.predictions) == 20
    assert picky.sizes[:3] == [16, 8, 4] and max(s for s in picky.sizes[2:]) <= 6
    ref = evaluate(_Picky(limit=100).requires_grad_(False), images, labels)  # another init: compare shapes only
    assert ref.predictions.shape == ev.predictions.shape
    with pytest.raises(torch.cuda.OutOfMemoryError):
        evaluate(_Picky(limit=0), images, labels, batch_size=4)
    with pytest.raises(InvalidInputError):
        evaluate(picky, images, labels, batch_size=0)


def test_progress_reports_each_chunk_up_to_one_and_can_stop_the_work():
    model, (images, labels) = _model(), _data(25)
    seen = []
    evaluate(model, images, labels, batch_size=10, progress=lambda f, m: seen.append((f, m)))
    assert [f for f, _ in seen] == [0.4, 0.8, 1.0] and seen[-1][1] == "25/25 examples"

    def stop(f, m):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(model, images, labels, batch_size=10, progress=stop)
    assert in_chunks(0, 3, lambda a, b: (a, b)) == []
    assert in_chunks(7, 3, lambda a, b: (a, b)) == [(0, 3), (3, 6), (6, 7)]


def test_random_subset_is_seeded_distinct_sorted_and_complete_when_asked_for_all():
    a = random_subset(100, 10, torch.Generator().manual_seed(3))
    b = random_subset(100, 10, torch.Generator().manual_seed(3))
    c = random_subset(100, 10, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a.tolist())) == 10 and torch.equal(a, a.sort().values) and a.max() < 100
    assert torch.equal(random_subset(5, 0, torch.Generator()), torch.arange(5))
    assert torch.equal(random_subset(5, 9, torch.Generator()), torch.arange(5))


def test_out_of_memory_goes_down_to_one_example_before_giving_up():
    images, labels = _data(5)
    picky = _Picky(limit=1)
    assert len(evaluate(picky, images, labels, batch_size=4).predictions) == 5
    assert picky.sizes[:3] == [4, 2, 1]
    with pytest.raises(InvalidInputError, match="batch size must be at least 1; got 0"):
        in_chunks(3, 0, lambda a, b: None)


def test_summary_config_refuses_negative_counts_and_allows_zero():
    from lenscape.analysis.summary import SummaryConfig

    assert SummaryConfig(n_samples=0, max_eval=0).max_eval == 0
    for bad in ({"n_samples": -1}, {"max_eval": -1}):
        with pytest.raises(InvalidInputError, match="0 or more; got"):
            SummaryConfig(**bad)
