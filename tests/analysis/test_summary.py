"""Model summary pieces against independent references: scikit-learn's confusion matrix, a hand
count of parameters and output shapes, and layer choices on known architectures."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion

from lenscape.analysis.activations import extract, hidden_layers
from lenscape.analysis.evaluation import evaluate
from lenscape.analysis.summary import confusion_matrix, layer_table
from lenscape.models.architectures import ArchSpec, build_model


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=60))
def test_confusion_matrix_equals_scikit_learns(pairs):
    labels, pred = (torch.tensor(v) for v in zip(*pairs))
    ours = confusion_matrix(pred, labels, 5)
    assert (ours == sk_confusion(labels.numpy(), pred.numpy(), labels=list(range(5)))).all()


CNN = ArchSpec(name="cnn", in_shape=(1, 8, 8), num_classes=3, mean=(0.5,), std=(0.5,), channels=(4, 6))
MLP = ArchSpec(name="mlp", in_shape=(1, 8, 8), num_classes=10, mean=(0.5,), std=(0.5,), widths=(16, 12))


def test_layer_table_counts_own_parameters_and_output_shapes_by_hand():
    rows = {r["name"]: r for r in layer_table(build_model(CNN, seed=0), CNN.in_shape)}
    assert rows["conv1"]["params"] == 4 * 1 * 9 + 4 and rows["conv1"]["output_shape"] == "4×8×8"
    assert rows["conv2"]["params"] == 6 * 4 * 9 + 6 and rows["pool2"]["output_shape"] == "6×2×2"
    assert rows["fc1"]["params"] == 6 * 2 * 2 * 128 + 128 and rows["fc1"]["type"] == "Linear"
    assert rows["fc2"]["output_shape"] == "3" and rows["relu1"]["params"] == 0
    assert rows["input_norm"]["type"] == "InputNorm"
    model = build_model(MLP, seed=0).train()
    layer_table(model, MLP.in_shape)
    assert model.training  # left in the mode it was in


def test_hidden_layers_are_the_activations_then_the_logits():
    assert hidden_layers(build_model(MLP, seed=0)) == ["relu1", "relu2", "out"]
    assert hidden_layers(build_model(CNN, seed=0)) == ["relu1", "relu2", "relu3", "fc2"]


def test_extract_and_probabilities_are_the_batched_evaluation():
    model = build_model(CNN, seed=0)
    x = torch.rand(11, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        relu2 = model.relu2(
            model.bn2(model.conv2(model.pool1(model.relu1(model.bn1(model.conv1(model.input_norm(x)))))))
        )
    acts = extract(model, x, ["relu2", "fc2"], batch_size=4)
    assert torch.allclose(acts["relu2"], relu2.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(acts["fc2"], logits, atol=1e-6)
    assert torch.allclose(extract(model, x, ["relu2"], conv_mode="flatten")["relu2"], relu2.flatten(1), atol=1e-6)
    assert torch.allclose(
        evaluate(model, x, batch_size=3, probabilities=True).probabilities, torch.softmax(logits, 1), atol=1e-6
    )
    assert torch.equal(evaluate(model, x).predictions, logits.argmax(1))


RESNET9 = ArchSpec(name="resnet9", in_shape=(3, 32, 32), num_classes=10, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_resnet_stages_are_hidden_layers_and_containers_own_no_parameters():
    model = build_model(RESNET9, seed=0)
    assert hidden_layers(model) == ["layer1", "layer2", "layer3", "fc"]
    rows = {r["name"]: r for r in layer_table(model, RESNET9.in_shape)}
    assert rows["layer1"]["params"] == 0 and rows["prep"]["params"] == 0  # only their children's
    assert rows["prep.0"]["params"] == 64 * 3 * 9 and rows["prep.1"]["params"] == 2 * 64
    assert rows["layer1"]["output_shape"] == "128×16×16"
    total = sum(r["params"] for r in rows.values())
    assert total == sum(p.numel() for p in model.parameters())  # each counted once


def test_extract_reports_progress_per_chunk():
    model, seen = build_model(MLP, seed=0), []
    extract(model, torch.rand(10, 1, 8, 8), ["relu1"], batch_size=4, progress=lambda f, m: seen.append(f))
    assert seen == [0.4, 0.8, 1.0]
