"""Memorization (ALGORITHMS.md section 3): gradient accounting, rewinding, retraining, neuron
flipping and example-tied dropout, each against a computation written here; the paper's findings
on a digits MLP with 10% label noise."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis.memorization import (FlipConfig, RetrainConfig, accuracy, flip_neurons, gradient_account, layer_groups,
                                   masked_accuracy, neuron_layers, retrain_group, rewound, split_gradients,
                                   tied_dropout_accuracies)
from models.architectures import ArchSpec, build_model
from models.errors import InvalidInputError
from models.training import prepare_data, preset, train_run


def _cnn(seed=0, batchnorm=False):
    spec = ArchSpec(name="cnn", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,), channels=(4, 6),
                    batchnorm=batchnorm)
    return build_model(spec, seed=seed)


def _batch(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    noisy = torch.rand(n, generator=g) < 0.3
    return x, y, noisy


def test_clean_and_noisy_gradients_add_up_and_each_equals_its_subset_alone():
    model = _cnn()
    x, y, noisy = _batch()
    gc, gn = split_gradients(model, x, y, noisy)
    full = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    # the clean part alone: (|C|/|B|) · mean over the clean examples, run on those examples only
    clean_only = torch.autograd.grad(F.cross_entropy(model(x[~noisy]), y[~noisy]) * (~noisy).sum() / len(y),
                                     list(model.parameters()))
    for a, b, f, c in zip(gc, gn, full, clean_only):
        assert torch.allclose(a + b, f, atol=1e-6)
        assert torch.allclose(a, c, atol=1e-6)
    gc, gn = split_gradients(model, x, y, torch.zeros(len(y), dtype=torch.bool))
    assert all(float(g.abs().max()) == 0 for g in gn)


def test_gradient_account_against_a_loop_written_here():
    model = _cnn(batchnorm=True)
    x, y, noisy = _batch(40, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    acc = gradient_account(model, x, y, noisy, batch_size=16)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # BN statistics untouched
    ref = {}
    work = _cnn(batchnorm=True)
    work.load_state_dict(before)
    work.train()
    params = dict(work.named_parameters())
    sums = {k: [torch.zeros_like(p), torch.zeros_like(p)] for k, p in params.items()}
    for s in range(0, 40, 16):
        xb, yb, nb = x[s:s + 16], y[s:s + 16], noisy[s:s + 16]
        losses = F.cross_entropy(work(xb), yb, reduction="none")
        for j, sel in enumerate((~nb, nb)):
            gs = torch.autograd.grad((losses * sel).sum() / len(yb), list(params.values()), retain_graph=True)
            for k, g in zip(params, gs):
                sums[k][j] += g
    for module, names in layer_groups(work).items():
        ref[module] = (sum(float(sums[n][0].norm()) / math.sqrt(sums[n][0].numel()) for n in names),
                       sum(float(sums[n][1].norm()) / math.sqrt(sums[n][1].numel()) for n in names),
                       np.mean([float(sums[n][0].flatten() @ sums[n][1].flatten() /
                                      (sums[n][0].norm() * sums[n][1].norm())) for n in names]))
    assert acc.groups == ["conv1", "bn1", "conv2", "bn2", "fc1", "fc2"]
    for i, gname in enumerate(acc.groups):
        assert acc.clean_norm[i] == pytest.approx(ref[gname][0], rel=1e-5)
        assert acc.noisy_norm[i] == pytest.approx(ref[gname][1], rel=1e-5)
        assert acc.cosine[i] == pytest.approx(ref[gname][2], abs=1e-5)
    with pytest.raises(InvalidInputError, match="boolean"):
        gradient_account(model, x, y, noisy.long())


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    """A digits MLP (256, 256) trained 100 epochs on 10% flipped labels: it memorizes all of them."""
    from models.checkpoints import load_checkpoint
    from models.loading import model_from_state

    folder = tmp_path_factory.mktemp("mem") / "run"
    cfg = preset("digits-mlp-noise10")
    rec = train_run(cfg, folder)

    def load(epoch):
        ck = next(c for c in rec["checkpoints"] if c["epoch"] == epoch)
        state, _ = load_checkpoint(folder / ck["file"])
        return state, model_from_state(ArchSpec.from_dict(rec["arch"]), state).eval()

    return rec, prepare_data(cfg), load


def test_rewinding_to_the_final_checkpoint_changes_nothing_and_all_layers_to_epoch_0_is_the_initial_model(noisy_run):
    rec, data, load = noisy_run
    final_state, final = load(100)
    init_state, init = load(0)
    x, y = data.train.images, data.train.labels
    groups = layer_groups(final)
    for names in groups.values():
        same = rewound(final_state, final_state, names)
        assert all(torch.equal(same[k], final_state[k]) for k in final_state)
    everything = [n for names in groups.values() for n in names]
    model = _mlp_like(rec)
    model.load_state_dict(rewound(final_state, init_state, everything))
    assert accuracy(model, x, y) == accuracy(init, x, y)
    assert accuracy(final, x, y) > 0.99 and accuracy(init, x, y) < 0.3
    one = rewound(final_state, init_state, groups["fc1"])              # one layer: only its parameters move
    assert torch.equal(one["fc1.weight"], init_state["fc1.weight"]) and torch.equal(one["out.weight"], final_state["out.weight"])
    with pytest.raises(InvalidInputError, match="not in both"):
        rewound(final_state, init_state, ["nope.weight"])


def _mlp_like(rec):
    return build_model(ArchSpec.from_dict(rec["arch"])).eval()


def test_retraining_touches_only_the_chosen_layer_and_only_clean_examples(noisy_run):
    rec, data, load = noisy_run
    init_state, _ = load(0)
    final_state, model = load(100)
    x, y, noisy = data.train.images.float() / 255, data.train.labels, data.noise_mask
    x[noisy] = float("nan")                   # a noisy example used anywhere would turn the weights into NaN
    res = retrain_group(model, init_state, "fc2", x, y, noisy, RetrainConfig(max_epochs=4, patience=2))
    after = model.state_dict()
    for k, v in after.items():
        if k.startswith("fc2."):
            assert not torch.equal(v, final_state[k]) and not torch.equal(v, init_state[k]) and torch.isfinite(v).all()
        else:
            assert torch.equal(v, final_state[k]), k
    assert all(p.requires_grad for p in model.parameters())           # flags restored
    assert 1 <= res.epochs <= 4 and len(res.noisy_acc) == res.epochs
    assert res.train_acc[-1] > 0.9                                     # the clean examples are learnt again
    with pytest.raises(InvalidInputError, match="no layer"):
        retrain_group(model, init_state, "fc9", x, y, noisy)


def _reference_flip(model, x, y, t, batch, max_steps):
    """The greedy loop with real weights: zero the weights and bias of the unit with the largest
    Σ θ·∂L/∂θ over its parameters (the classifier excluded), one at a time, until t's prediction
    (no noise, one copy) leaves y_t."""
    import copy

    m = copy.deepcopy(model).eval()
    layers = [mod for _, mod in neuron_layers(m)]
    xb, yb = x[batch], y[batch]
    removed = []
    for _ in range(max_steps + 1):
        with torch.no_grad():
            if m(xb[:1]).argmax(1).item() != yb[0].item():
                return removed, True
        if len(removed) == max_steps:
            return removed, False
        losses = F.cross_entropy(m(xb), yb, reduction="none")
        b = len(yb)
        objective = (losses[1:].sum() - b * losses[0]) / b
        best, where = -math.inf, None
        for li, layer in enumerate(layers):
            gw, gb = torch.autograd.grad(objective, [layer.weight, layer.bias], retain_graph=True)
            score = ((layer.weight * gw).flatten(1).sum(1) + layer.bias * gb).detach()
            for u in range(len(score)):
                if (li, u) not in removed and float(score[u]) > best:
                    best, where = float(score[u]), (li, u)
        with torch.no_grad():
            layers[where[0]].weight[where[1]] = 0
            layers[where[0]].bias[where[1]] = 0
        removed.append(where)
    return removed, False


def test_flipping_matches_zeroing_real_weights_one_example_at_a_time():
    torch.manual_seed(0)
    spec = ArchSpec(name="mlp", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,), widths=(24, 16))
    model = build_model(spec, seed=1).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)                                          # every example starts "correct"
    cfg = FlipConfig(batch_size=20, n_eot=1, noise=0.0, max_steps=15, max_acc_drop=1.0, group_size=3)
    examples = [0, 5, 7, 11, 30]
    res = flip_neurons(model, x, y, examples, cfg)
    for i, t in enumerate(examples):
        ref, flipped = _reference_flip(model, x, y, t, torch.from_numpy(res.batches[i]), cfg.max_steps)
        assert res.neurons[i] == ref and bool(res.flipped[i]) == flipped
        assert res.n_neurons[i] == len(ref) == len(set(ref))            # one new neuron per step
        assert res.stopped[i] == ("flipped" if flipped else "cap")
    assert res.layers == ["fc1", "fc2"]


def test_flipping_batches_differ_and_do_not_depend_on_grouping(noisy_run):
    rec, data, load = noisy_run
    _, model = load(100)
    x, y = data.train.images, data.train.labels
    examples = torch.nonzero(data.noise_mask).flatten()[:6]
    a = flip_neurons(model, x, y, examples, FlipConfig(batch_size=64, max_steps=20, group_size=6))
    b = flip_neurons(model, x, y, examples, FlipConfig(batch_size=64, max_steps=20, group_size=1))
    assert a.neurons == b.neurons and np.array_equal(a.n_neurons, b.n_neurons)
    assert (a.batches[:, 0] == examples.numpy()).all()
    for i in range(len(examples)):
        assert len(set(a.batches[i].tolist())) == 64                   # no repeats, the example once
        for j in range(i):
            assert set(a.batches[i].tolist()) != set(a.batches[j].tolist())
    # with its neurons removed, the example is no longer predicted as its (noisy) label
    for i, t in enumerate(examples.tolist()):
        if a.flipped[i]:
            assert masked_accuracy(model, x[t:t + 1], y[t:t + 1], a.neurons[i]) == 0.0
            assert masked_accuracy(model, x[t:t + 1], y[t:t + 1], a.neurons[i][:-1]) == 1.0
    capped = flip_neurons(model, x, y, examples, FlipConfig(batch_size=64, max_steps=1))
    assert (capped.n_neurons <= 1).all() and all(s in ("flipped", "cap", "accuracy") for s in capped.stopped)
    with pytest.raises(InvalidInputError, match="example indices"):
        flip_neurons(model, x, y, [len(y)])


def test_memorized_examples_flip_with_far_fewer_neurons_than_clean_ones(noisy_run):
    """The paper's finding at small scale (digits MLP 256-256, 10% noise, 100 epochs). Measured:
    median 2 neurons for memorized examples, 5.5 for clean ones (30 each)."""
    rec, data, load = noisy_run
    _, model = load(100)
    x, y, noisy = data.train.images, data.train.labels, data.noise_mask
    with torch.no_grad():
        pred = model(x.float() / 255).argmax(1)
    memorized = torch.nonzero(noisy & (pred == y)).flatten()
    clean = torch.nonzero(~noisy & (pred == y)).flatten()
    assert len(memorized) > 0.9 * int(noisy.sum())
    cfg = FlipConfig(max_steps=60, max_acc_drop=0.5)
    mem = flip_neurons(model, x, y, memorized[:30], cfg)
    cln = flip_neurons(model, x, y, clean[:30], cfg)
    print(f"\nneurons to flip: memorized median {np.median(mem.n_neurons)}, clean median {np.median(cln.n_neurons)}")
    assert mem.flipped.all()
    assert np.median(mem.n_neurons) * 2 <= np.median(cln.n_neurons)


def test_example_tied_dropout_forgets_the_memorized_examples_when_their_neurons_are_dropped(tmp_path):
    """Digits MLP (256, 256), 10% noise, p_gen 0.5, p_mem 0.2 on the last hidden layer. Measured:
    noisy examples 100% with their own masks, 11% with the memorization neurons dropped; test
    96.7% → 96.4%."""
    from models.checkpoints import load_checkpoint
    from models.loading import model_from_state

    cfg = preset("digits-mlp-tied-dropout")
    rec = train_run(cfg, tmp_path / "run")
    state, _ = load_checkpoint(tmp_path / "run" / rec["checkpoints"][-1]["file"])
    model = model_from_state(ArchSpec.from_dict(rec["arch"]), state).eval()
    data = prepare_data(cfg)
    x, y, noisy = data.train.images, data.train.labels, data.noise_mask
    ids = torch.arange(len(y))
    acc = tied_dropout_accuracies(model, {"memorized": (x[noisy], y[noisy], ids[noisy]),
                                          "clean": (x[~noisy], y[~noisy], ids[~noisy]),
                                          "test": (data.test.images, data.test.labels, None)})
    print("\nexample-tied dropout:", acc)
    assert acc["kept"]["memorized"] > 0.9 and acc["dropped"]["memorized"] < 0.2
    assert acc["kept"]["test"] - acc["dropped"]["test"] <= 0.03
    assert acc["dropped"]["clean"] > 0.95
    # the modes are restored, and a model without tied dropout is refused
    assert all(getattr(m, "mode", "test") == "test" for m in model.modules())
    with pytest.raises(InvalidInputError, match="no example-tied dropout"):
        tied_dropout_accuracies(_cnn(), {})
