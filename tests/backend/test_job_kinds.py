"""The job API's rules (backend/jobs.py's docstring), checked for every kind the app ships, and
code versions that follow every Lenscape module a kind uses."""

import ast
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lenscape.backend.jobs import (
    LANES,
    REGISTRY,
    Job,
    ModelRef,
    Registry,
    code_version,
    describe_kind,
    job_kind,
    module_closure,
)
from lenscape.backend.kinds import KINDS, register_all
from lenscape.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[2]


def _decorated_kinds() -> set[str]:
    """Every function in backend/ decorated with @job_kind, found in the source (not by importing)."""
    found = set()
    for path in (ROOT / "backend").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for d in node.decorator_list:
                    if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "job_kind":
                        found.add(d.args[0].value)
    return found


def test_every_decorated_kind_is_registered_explicitly_and_follows_the_rules():
    registry = register_all(Registry())
    assert set(registry.names()) == _decorated_kinds()
    assert len(KINDS) == len(registry.names())
    for fn in KINDS:
        kind = describe_kind(fn)  # raises on a broken rule
        assert "__post_init__" in vars(kind.config_type) or kind.config_type is ModelRef, (
            f"{kind.name}: {kind.config_type.__name__} does not validate itself"
        )
    # each kind declares its lane where it is defined (minutes of training: "long"); training, the
    # longest, never holds up what a page waits on (test_runner: short jobs do not wait behind it)
    assert {registry[k].lane for k in registry.names()} == set(LANES) and registry["train"].lane == "long"


def test_nothing_registers_by_import():
    fresh = Registry()
    import lenscape.backend.saliency_tasks  # noqa: F401

    assert fresh.names() == []
    with pytest.raises(KeyError, match="backend/kinds.py"):
        fresh["saliency"]


@dataclass(frozen=True)
class GoodConfig:
    n: int = 1
    ref: ModelRef | None = None
    names: tuple[str, ...] = ()


@dataclass
class Mutable:
    n: int = 1


@dataclass(frozen=True)
class HoldsArray:
    a: np.ndarray


def test_broken_rules_are_refused_with_the_rule_named():
    def undecorated(ctx, cfg: GoodConfig) -> dict:
        return {}

    with pytest.raises(TypeError, match="not decorated"):
        describe_kind(undecorated)

    @job_kind("t_tuple")
    def bare_tuple(ctx, cfg: tuple) -> dict:
        return {}

    with pytest.raises(TypeError, match="frozen dataclass"):
        describe_kind(bare_tuple)

    @job_kind("t_mutable")
    def mutable(ctx, cfg: Mutable) -> dict:
        return {}

    with pytest.raises(TypeError, match="frozen dataclass"):
        describe_kind(mutable)

    @job_kind("t_array_config")
    def array_config(ctx, cfg: HoldsArray) -> dict:
        return {}

    with pytest.raises(TypeError, match="not JSON-able"):
        describe_kind(array_config)

    @job_kind("t_no_result")
    def no_result(ctx, cfg: GoodConfig):
        return {}

    with pytest.raises(TypeError, match="annotate the result"):
        describe_kind(no_result)

    @job_kind("t_foreign_result")
    def foreign(ctx, cfg: GoodConfig) -> Path:
        return Path()

    with pytest.raises(TypeError, match="cannot be stored"):
        describe_kind(foreign)

    @job_kind("t_good")
    def good(ctx, cfg: GoodConfig) -> list[np.ndarray]:
        return []

    assert describe_kind(good).config_type is GoodConfig


def test_a_job_refuses_a_config_of_another_type():
    register_all()
    from lenscape.backend.saliency_tasks import GridConfig
    from lenscape.backend.similarity_tasks import ActSpec

    with pytest.raises(TypeError, match="GridConfig"):
        Job("saliency", ActSpec())
    with pytest.raises(KeyError):
        Job("no_such_kind", ActSpec())
    r = ModelRef(run_id="run-x", epoch=1, fingerprint="f")
    with pytest.raises(InvalidInputError, match="at least one image"):
        GridConfig(model=r, indices=(), methods=())
    with pytest.raises(InvalidInputError):
        ActSpec(conv_mode="nope")
    with pytest.raises(InvalidInputError):
        ModelRef(run_id="run-x", epoch=-1, fingerprint="f")


def test_code_version_covers_every_module_a_kind_imports():
    register_all()
    covered = set(module_closure(REGISTRY["saliency"].module))
    assert {
        "lenscape.backend.saliency_tasks",
        "lenscape.analysis.saliency",
        "lenscape.analysis.roar",
        "lenscape.models.zoo",
        "lenscape.models.training",
    } <= covered
    assert "lenscape.analysis.hooks" in covered  # only through analysis.saliency / summary
    assert "lenscape.ui.common" not in covered and "lenscape.backend.similarity_tasks" not in covered


def test_code_version_changes_when_a_dependency_two_imports_away_changes(register_kinds, tmp_path, monkeypatch):
    """A package of our own (under a name code versions follow) whose job module imports a helper
    that imports another: editing the last one changes the kind's version."""
    pkg = tmp_path / "backend" / "_probe"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "leaf.py").write_text("VALUE = 1\n")
    (pkg / "middle.py").write_text("from lenscape.backend._probe import leaf\n")
    (pkg / "kind.py").write_text(
        textwrap.dedent("""
        from dataclasses import dataclass
        from lenscape.backend.jobs import job_kind


        @dataclass(frozen=True)
        class Cfg:
            n: int = 0


        @job_kind("t_probe")
        def probe(ctx, cfg: Cfg) -> int:
            from lenscape.backend._probe import middle  # imported inside the function: still followed
            return 0
        """)
    )
    import lenscape.backend as backend

    monkeypatch.setattr(backend, "__path__", [*backend.__path__, str(tmp_path / "backend")])
    for m in [m for m in sys.modules if m.startswith("lenscape.backend._probe")]:
        monkeypatch.delitem(sys.modules, m)
    from lenscape.backend._probe.kind import probe

    register_kinds(probe)  # forgotten after the test, with its package
    code_version.cache_clear()
    before = code_version("t_probe")
    assert set(module_closure("lenscape.backend._probe.kind")) >= {
        "lenscape.backend._probe.middle",
        "lenscape.backend._probe.leaf",
    }
    (pkg / "leaf.py").write_text("VALUE = 2\n")
    code_version.cache_clear()
    assert code_version("t_probe") != before
    code_version.cache_clear()


def _versions(monkeypatch, edits: dict[str, callable]) -> dict[str, str]:
    """Every kind's code version with the source of some modules edited (as a contributor would)."""
    import lenscape.backend.jobs as jobs

    real = jobs._read_source
    monkeypatch.setattr(jobs, "_read_source", lambda m: edits[m](real(m).decode()).encode() if m in edits else real(m))
    code_version.cache_clear()
    try:
        return {k: code_version(k) for k in REGISTRY.names()}
    finally:
        code_version.cache_clear()
        monkeypatch.setattr(jobs, "_read_source", real)


def test_plumbing_and_ui_edits_keep_every_stored_result(monkeypatch):
    """A docstring edit in jobs.py used to recompute every result (the class demo's included): the
    job system, the store, the codec and the UI are in no kind's code version."""
    from lenscape.backend.jobs import PLUMBING

    register_all()
    before = _versions(monkeypatch, {})
    for kind in REGISTRY.names():
        covered = set(module_closure(REGISTRY[kind].module))
        assert not covered & PLUMBING and not any(m.startswith("lenscape.ui") for m in covered), kind
    code = "\n\ndef added_later():\n    return 42\n"
    assert (
        _versions(
            monkeypatch,
            {
                "lenscape.backend.jobs": lambda s: (
                    s.replace('"""Jobs: what to compute', '"""Jobs (edited): what to compute') + code
                ),
                "lenscape.backend.codec": lambda s: s + code,
                "lenscape.backend.store": lambda s: s + code,
                "lenscape.backend.runner": lambda s: s + code,
                "lenscape.ui.common": lambda s: s + code,
            },
        )
        == before
    )
    # docstrings, comments and layout of the maths change nothing either
    assert (
        _versions(
            monkeypatch,
            {
                "lenscape.analysis.saliency": lambda s: s.replace('"""', '"""Edited. ', 1).replace(
                    "\n\ndef ", "\n\n# a comment\n\n\ndef "
                )
            },
        )
        == before
    )


def test_a_change_to_the_maths_recomputes_exactly_the_kinds_that_run_it(monkeypatch):
    register_all()
    before = _versions(monkeypatch, {})
    after = _versions(monkeypatch, {"lenscape.analysis.similarity": lambda s: s + "\n\nEPSILON = 1e-9\n"})
    changed = {k for k in before if before[k] != after[k]}
    assert {"layer_similarity", "seed_similarity", "all_metrics", "convergence"} <= changed
    assert "saliency" not in changed and "landscape_surface" not in changed and "train" not in changed
    after = _versions(monkeypatch, {"lenscape.models.architectures": lambda s: s + "\n\nDEFAULT_WIDTH = 3\n"})
    assert {k for k in before if before[k] != after[k]} >= {
        "saliency",
        "train",
        "landscape_surface",
        "layer_similarity",
    }


def test_a_version_bump_recomputes_one_kind(monkeypatch):
    """How a contributor recomputes a kind whose maths changed where no hash sees it: version=2."""

    @job_kind("t_bumped")
    def v1(ctx, cfg: GoodConfig) -> int:
        return 0

    @job_kind("t_bumped", version=2)
    def v2(ctx, cfg: GoodConfig) -> int:
        return 0

    registry = REGISTRY
    versions = []
    for fn in (v1, v2):
        monkeypatch.setitem(registry._kinds, "t_bumped", describe_kind(fn))
        code_version.cache_clear()
        versions.append(code_version("t_bumped"))
    code_version.cache_clear()
    assert versions[0] != versions[1]
    with pytest.raises(ValueError, match="positive int"):
        job_kind("t_bad", version=0)
