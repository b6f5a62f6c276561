"""Finding 9: a model file that cannot be read, however it is damaged, is an InvalidInputError (never
a raw exception and a traceback on the Models page); NaN or Inf weights are refused on import."""

import io
import random

import pytest
import torch
from safetensors.torch import save

from lenscape.errors import InvalidInputError
from lenscape.models.loading import read_state_dict

MUTANTS = 500  # per format: about half a second for each


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 1, 3, 3, generator=g),
        "conv.bias": torch.randn(4, generator=g),
        "fc.weight": torch.randn(10, 36, generator=g),
        "fc.bias": torch.zeros(10),
        "steps": torch.tensor(7),
        "bn.running_var": torch.ones(4, dtype=torch.float64),
    }


def _torch_bytes(obj, zip_format: bool) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=zip_format)
    return buf.getvalue()


FORMATS = {
    "safetensors": lambda s: save(s),
    "torch-zip": lambda s: _torch_bytes(s, True),
    "torch-legacy": lambda s: _torch_bytes(s, False),
}


def _mutant(raw: bytes, rng: random.Random) -> bytes:
    """One damaged copy: bytes flipped, cut short, a slice removed, or a slice duplicated."""
    kind, data = rng.randrange(4), bytearray(raw)
    if kind == 0:
        for _ in range(rng.choice((1, 1, 2, 4, 16))):
            data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
        return bytes(data)
    a, b = sorted(rng.randrange(len(data) + 1) for _ in range(2))
    if kind == 1:
        return bytes(data[:a])
    return bytes(data[:a] + data[b:]) if kind == 2 else bytes(data[:b] + data[a:])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_damaged_file_loads_or_says_why_not(fmt):
    raw = FORMATS[fmt](_state())
    assert read_state_dict(raw, f"m.{fmt}").keys() == _state().keys()
    rng, escaped = random.Random(f"lenscape-{fmt}"), []
    for i in range(MUTANTS):
        mutant = _mutant(raw, rng)
        try:
            state = read_state_dict(mutant, f"m.{fmt}")
        except InvalidInputError as exc:
            assert "m." in str(exc)  # the message names the file
            continue
        except Exception as exc:  # noqa: BLE001 - what the finding is about
            escaped.append(f"mutant {i}: {type(exc).__name__}: {str(exc)[:80]}")
            continue
        assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert not escaped, f"{len(escaped)} of {MUTANTS} damaged {fmt} files escaped as raw exceptions:\n" + "\n".join(
        escaped[:10]
    )


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_weights_are_refused_naming_the_tensor(fmt, bad):
    state = _state()
    state["fc.weight"][3, 5] = bad
    with pytest.raises(InvalidInputError, match=r"fc\.weight") as err:
        read_state_dict(FORMATS[fmt](state), f"m.{fmt}")
    assert "NaN or Inf" in str(err.value) and "conv.weight" not in str(err.value)


def test_check_finite_state_names_the_first_bad_tensors_and_passes_finite_ones():
    from lenscape.models.loading import check_finite_state

    check_finite_state(_state(), "ok.safetensors")  # finite, integer and float64 tensors: fine
    state = {f"layer{i}.weight": torch.full((2,), float("nan")) for i in range(9)}
    with pytest.raises(InvalidInputError, match="bundle.zip") as err:
        check_finite_state(state, "bundle.zip")
    assert "9 tensors" in str(err.value) and "layer0.weight" in str(err.value) and "layer8" not in str(err.value)
