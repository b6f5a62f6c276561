"""The Runs page's tables select models by id, not by row position.

Streamlit reports a table's ticks as row positions. Filtered to MNIST with three seeds ticked,
clearing the filter used to leave the ticks on rows 0-2, now other models, and offer "Yes, delete
3 models" for them; a delete left them on the rows that moved up. Here: the ticks go when the filter
changes or after a delete, the confirmation names exactly the ticked models, and a delete removes
exactly their folders.
"""

from __future__ import annotations

import pytest

from tests.browser import screenshots_dir, settle, snap

ROW, HEADER = 35, 35  # st.dataframe's row and header heights in pixels


VIEWPORT = {"width": 1400, "height": 1600}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Three MNIST models (older, listed last) and three digits models (newer, listed first)."""
    import torch

    from lenscape.models.architectures import ArchSpec, build_model
    from lenscape.models.data import DataSpec
    from lenscape.models.zoo import import_model

    home = tmp_path_factory.mktemp("runs-selection-home")
    for data, shape in (("mnist", (1, 28, 28)), ("digits", (1, 8, 8))):
        arch = ArchSpec(name="mlp", in_shape=shape, num_classes=10, mean=(0.3,), std=(0.3,), widths=(4,))
        for seed in range(3):
            torch.manual_seed(seed)
            import_model(
                build_model(arch),
                arch,
                f"{data} seed {seed}",
                DataSpec(name=data),
                tuple("0123456789"),
                "test",
                root=home / "runs",
            )
    return home


def _ids(home, data: str | None = None) -> set[str]:
    from lenscape.models.zoo import list_runs

    return {r["run_id"] for r in list_runs(home / "runs") if data is None or r["data"]["name"] == data}


def _models_table(page):
    return page.locator("[data-testid='stDataFrame']").first


def _tick(page, rows: list[int]) -> None:
    """Tick rows of the Models table by their row-marker checkboxes (the table is a canvas)."""
    for r in rows:
        table = _models_table(page)
        table.scroll_into_view_if_needed()
        box = table.bounding_box()
        page.mouse.click(box["x"] + 16, box["y"] + HEADER + ROW * r + ROW / 2)
        settle(page)


def _data_filter(page, value: str | None) -> None:
    """Filter the Models table to one data set (None: clear the filter)."""
    picker = page.locator("[data-testid='stMultiSelect']").filter(has_text="Data sets").first
    picker.locator("input").click()
    if value is None:
        page.keyboard.press("Backspace")
    else:
        page.get_by_role("option", name=value, exact=True).click()
    page.keyboard.press("Escape")
    settle(page)


def _confirmation(page):
    return page.locator(".st-key-runs-models-confirm")


def _named(page, home) -> set[str]:
    """The run ids the delete confirmation names."""
    box = _confirmation(page).locator("[data-testid='stCheckbox']")
    assert box.count() == 1, "no confirmation naming the ticked models: " + page.get_by_text("Yes, delete").inner_text()
    text = box.inner_text()
    assert text.startswith("Yes, delete"), text
    return {r for r in _ids(home) if r in text}


def _open_runs(page, server) -> None:
    page.goto(f"{server}/Runs")
    settle(page)
    _models_table(page).wait_for()


def test_clearing_the_filter_clears_the_ticks_and_the_confirmation_names_the_ticked(page, server, home):
    shots = screenshots_dir()
    _open_runs(page, server)
    _data_filter(page, "mnist")
    _tick(page, [0, 1, 2])
    snap(page, shots, "security-runs-ticked")
    assert page.get_by_text("Yes, delete").count() == 1
    _data_filter(page, None)  # all six listed again
    snap(page, shots, "security-runs-filter-cleared")
    offered = page.get_by_text("Yes, delete")
    assert offered.count() == 0, f"a selection survived the filter: {offered.first.inner_text()}"
    assert _confirmation(page).count() == 0
    _data_filter(page, "mnist")  # and back: nothing ticked either
    assert page.get_by_text("Yes, delete").count() == 0
    _tick(page, [0, 1, 2])
    assert _named(page, home) == _ids(home, "mnist")  # exactly the ticked, by name and id
    assert "Yes, delete these 3 models" in _confirmation(page).inner_text()


def test_a_delete_removes_exactly_the_ticked_and_leaves_nothing_ticked(page, server, home):
    shots = screenshots_dir()
    _open_runs(page, server)
    _data_filter(page, "mnist")
    _tick(page, [0, 1])
    picked = _named(page, home)
    assert len(picked) == 2 and picked <= _ids(home, "mnist")
    others = _ids(home) - picked
    _confirmation(page).get_by_text("Yes, delete").click()
    settle(page)
    _confirmation(page).get_by_role("button", name="Delete these 2 models").click()
    settle(page)
    snap(page, shots, "security-runs-deleted")
    assert not any((home / "runs" / r).exists() for r in picked)
    assert all((home / "runs" / r / "run.json").exists() for r in others)
    offered = page.get_by_text("Yes, delete")
    assert offered.count() == 0, f"a selection survived the delete: {offered.first.inner_text()}"
