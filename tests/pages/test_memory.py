"""A served app runs a full garbage collection after every script run (Streamlit's
`runner.postScriptGC`; AppTest does not). What the imports made is frozen out of its walk
(ui.common.freeze_long_lived), so that a run does not pay 0.3 s of CPU for half a million module
objects, while what runs make after the freeze is still walked, and collected when it is garbage."""

import gc
import sys
import types

from streamlit.testing.v1 import AppTest

from apphelpers import ROOT_APP


class Marker:
    pass


def walked(obj) -> bool:
    """The cyclic collector still walks `obj` (frozen objects are not among gc.get_objects())."""
    return any(o is obj for o in gc.get_objects())


def test_a_run_freezes_what_imports_made_and_freezes_again_only_after_new_imports(monkeypatch):
    import torch

    at = AppTest.from_file(ROOT_APP, default_timeout=60).run()
    assert not at.exception
    assert not walked(vars(torch.nn.functional))
    assert not walked(vars(sys.modules["lenscape.ui.common"]))
    assert gc.get_freeze_count() > 100_000
    at.run()
    kept = Marker()
    at.run()  # nothing new imported: nothing more frozen
    assert walked(kept)
    name = "lenscape_test_freeze_marker"
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    at.run()  # a run after an import freezes what lives now
    assert not walked(kept)
