"""torch.export archives (.pt2) are not accepted (issue 25, point 3): torch.export.load runs code from
a crafted archive. Its weights config may mark a weight `use_pickle`, and that weight's bytes are then
read with torch.load(weights_only=False). This test crafts such an archive and shows, in a separate
process, that loading it runs the archive's code. Lenscape refuses .pt2 files by name and by content."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import pytest
import torch

from lenscape.errors import InvalidInputError


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling opens (creates) the marker file


def _crafted_archive(tmp_path, marker) -> bytes:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    honest = tmp_path / "honest.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(2, 4),)), str(honest))
    payload = io.BytesIO()
    torch.save(_Payload(str(marker)), payload)
    out = io.BytesIO()
    with zipfile.ZipFile(honest) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data/weights/model_weights_config.json"):
                config = json.loads(data)
                config["config"]["0.weight"]["use_pickle"] = True
                data = json.dumps(config).encode()
            elif info.filename.endswith("data/weights/weight_0"):
                data = payload.getvalue()
            dst.writestr(info, data)
    return out.getvalue()


def test_torch_export_load_runs_a_crafted_archive_s_code(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "crafted.pt2"
    path.write_bytes(_crafted_archive(tmp_path, marker))
    code = f"import sys, torch\nsys.path.insert(0, {str(tmp_path)!r})\ntry:\n    torch.export.load({str(path)!r})\nexcept Exception:\n    pass\n"
    # the payload's class must be importable where it is unpickled: it is `open`, a builtin
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300, check=False)
    assert marker.exists(), "torch.export.load no longer unpickles weights: .pt2 could be reconsidered"


@pytest.mark.parametrize("filename", ["model.pt2", "model.pt"])
def test_lenscape_refuses_the_archive_and_runs_nothing(tmp_path, filename):
    from lenscape.models.loading import read_state_dict

    marker = tmp_path / "ran"
    with pytest.raises(InvalidInputError, match="torch.export"):
        read_state_dict(_crafted_archive(tmp_path, marker), filename)
    assert not marker.exists()
