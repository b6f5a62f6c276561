"""A user's Dataset, given to lenscape.add_model, is copied into the workspace (models.saved_data). Whatever
its items are, the copy either succeeds or says why in an InvalidInputError: no raw exception, and no
label that makes Lenscape allocate a billion class names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lenscape.errors import InvalidInputError
from lenscape.models.saved_data import load_saved, save_dataset


class Items(torch.utils.data.Dataset):
    """Eight examples, the first `bad` item replaced by what the test gives."""

    def __init__(self, image=None, label=None, n: int = 8):
        self.image, self.label, self.n = image, label, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = torch.full((1, 4, 4), i / 8)
        label = i % 2
        if i == 3:
            image = image if self.image is None else self.image
            label = label if self.label is None else self.label
        return image, label


@pytest.mark.parametrize(
    "label",
    [10**9, 2**64, -1, float("nan"), 2.7, "cat", torch.tensor([1, 2]), np.array([1.5])],
    ids=["billion", "2**64", "negative", "nan", "float", "text", "two-element", "float-array"],
)
def test_a_label_that_is_not_a_class_index_is_refused(label, lenscape_home):
    with pytest.raises(InvalidInputError, match="label"):
        save_dataset(Items(label=label))


@pytest.mark.parametrize(
    "image",
    [
        torch.zeros(3, 0, 4),
        "an image",
        torch.zeros(1, 4, 4, dtype=torch.complex64),
        torch.full((1, 4, 4), float("nan")),
    ],
    ids=["empty", "text", "complex", "nan"],
)
def test_an_image_that_is_not_an_image_is_refused(image, lenscape_home):
    with pytest.raises(InvalidInputError):
        save_dataset(Items(image=image))


def test_honest_labels_in_any_integer_form_are_kept(lenscape_home):
    forms = [np.int64(1), torch.tensor(1), np.array([1]), torch.tensor([1]), True]
    for form in forms:
        dataset_id = save_dataset(Items(label=form), Items())
        _, labels, classes, _, _ = load_saved(dataset_id, "train")
        assert int(labels[3]) == 1 and classes == ("0", "1")


def test_too_small_or_lengthless_data_sets_are_refused(lenscape_home):
    class Broken(Items):
        def __len__(self):
            return -1

    with pytest.raises(InvalidInputError):
        save_dataset(Broken())
    with pytest.raises(InvalidInputError, match="at least one"):
        save_dataset(Items(n=1))
