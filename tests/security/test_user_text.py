"""Names users chose are shown as text, never as Markdown.

A model named `![x](http://127.0.0.1:<port>/beacon.png)` made the browser fetch that address
wherever its name was written as Markdown (the sidebar, messages, labels). ui.common.plain()
escapes such text; here it is checked on any string, and in the browser: models with such names
are visited on Home, Models, Runs and a view, and imported through the Runs and Models pages,
while a beacon server on another port records any request.
"""

from __future__ import annotations

import html
import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.browser import Recorder, screenshots_dir, settle, snap

WORD_JOINER = "\u2060"  # what ui.common.plain() puts before a bare address
PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")  # CommonMark's escapable characters


def _unescape(md: str) -> str:
    """Read `md` as CommonMark reads text: a backslash before ASCII punctuation makes it literal.
    Fails if any punctuation character or line break is left unescaped: no Markdown construct
    (link, image, autolink, HTML, emphasis, code, heading, list) nor Streamlit's own (`:color[…]`,
    `:material/…:`, `:emoji:`, `$…$` LaTeX) can start without one."""
    out, i = [], 0
    while i < len(md):
        ch = md[i]
        if ch == "\\":
            assert i + 1 < len(md) and md[i + 1] in PUNCTUATION, f"a lone backslash at {i} in {md!r}"
            out.append(md[i + 1])
            i += 2
            continue
        assert ch not in PUNCTUATION and ch not in "\n\r", f"{ch!r} unescaped at {i} in {md!r}"
        out.append(ch)
        i += 1
    return "".join(out)


def _reads_back(text: str) -> None:
    """plain(text) reads back as `text` (line breaks as spaces) with nothing Markdown can use; every
    bare address (http://, www., an @) has the word joiner before it that keeps GFM from linking it."""
    from lenscape.ui.common import plain

    shown = _unescape(plain(text))
    assert shown.replace(WORD_JOINER, "") == " ".join(text.splitlines()).replace(WORD_JOINER, "")
    for m in re.finditer(r"(?i)https?://|www\.|@", shown):
        assert shown[m.start() - 1] == WORD_JOINER, (text, shown)


@settings(deadline=None)  # the first example imports Streamlit
@given(st.text())
def test_any_string_escaped_reads_back_as_itself_with_nothing_markdown_can_use(text):
    _reads_back(text)


@settings(deadline=None)  # the first example imports Streamlit
@given(
    st.lists(
        st.sampled_from(
            [
                "http://",
                "HTTPS://",
                "www.",
                "@",
                "a",
                ".",
                ":",
                "[",
                "](",
                ")",
                "!",
                "\\",
                " ",
                "\n",
                "$",
                "<",
                ">",
                "*",
                "`",
                ":material/",
                ":red[",
            ]
        ),
        max_size=20,
    ).map("".join)
)
def test_strings_made_of_markdown_pieces_too(text):
    _reads_back(text)


@pytest.mark.parametrize(
    "text",
    [
        "![x](http://h/b.png)",
        "[click](javascript:alert(1))",
        "<http://h/a>",
        "http://h/a www.h.com a@h.com",
        ":red[x] :material/home: :smile: $x^2$ $$y$$",
        "**b** _i_ `c` ~s~ # h\n- l\n1. n\n> q",
        "<img src=x onerror=alert(1)>",
        "a\\b",
    ],
)
def test_known_markdown_is_escaped(text):
    from lenscape.ui.common import plain

    md = plain(text)
    _reads_back(text)
    assert not re.search(r"(?<!\\)[\[\]()<>:$*_`]", md)


@settings(deadline=None)  # the first example imports Streamlit
@given(st.text())
def test_plot_text_has_no_tag_and_reads_back(text):
    from lenscape.ui.common import plot_text

    shown = plot_text(text)
    assert "<" not in shown and ">" not in shown and html.unescape(shown) == text


# ---------------------------------------------------------------------------------------------
# In the browser


@pytest.fixture(scope="module")
def beacon():
    with Recorder() as rec:
        yield rec


def _names(beacon: Recorder) -> list[str]:
    return [
        f"![x]({beacon.url}/beacon.png)",
        f"[click](javascript:alert(1)) <{beacon.url}/auto.png> {beacon.url}/bare.png :red[red] "
        f':material/home: $x^2$ <img src="{beacon.url}/html.png">',
    ]


def _arch():
    from lenscape.models.architectures import ArchSpec

    return ArchSpec(name="mlp", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,), widths=(16,))


@pytest.fixture(scope="module")
def home(tmp_path_factory, beacon):
    """A workspace with two digits models whose names are Markdown that would reach the beacon."""
    import torch

    from lenscape.models.architectures import build_model
    from lenscape.models.data import DataSpec
    from lenscape.models.zoo import import_model

    home = tmp_path_factory.mktemp("user-text-home")
    ids = []
    for seed, name in enumerate(_names(beacon)):
        torch.manual_seed(seed)
        ids.append(
            import_model(
                build_model(_arch()),
                _arch(),
                name,
                DataSpec(name="digits"),
                tuple("0123456789"),
                "test",
                root=home / "runs",
            )["run_id"]
        )
    home.joinpath("ids").write_text(" ".join(ids))
    return home


def _nothing_reached(page, beacon: Recorder, where: str) -> None:
    """No request reached the beacon, and the page holds no link or image built from a name."""
    page.wait_for_timeout(1000)
    assert beacon.hits() == [], f"{where}: the browser fetched {beacon.hits()}"
    port = beacon.url.rsplit(":", 1)[1]
    built = page.locator(f"a[href^='javascript:'], a[href*=':{port}'], img[src*=':{port}']")
    assert built.count() == 0, f"{where}: " + built.first.evaluate(
        "e => (e.closest('[data-testid^=st]:not([data-testid^=stMarkdown])') || e).outerHTML.slice(0, 3000)"
    )


def _text(locator) -> str:
    """The text shown (the invisible word joiners plain() adds left out)."""
    return locator.inner_text().replace(WORD_JOINER, "")


def _nav(page, label: str | None) -> None:
    """Go to another page through the sidebar (the session, and its current model, stay); None: Home,
    the first link."""
    links = page.locator("[data-testid='stSidebarNav'] a")
    (links.first if label is None else links.filter(has_text=label).first).click()
    settle(page)


def test_names_are_text_on_home_models_runs_and_a_view(page, server, home, beacon):
    shots = screenshots_dir()
    ids = home.joinpath("ids").read_text().split()
    names = dict(zip(ids, _names(beacon)))
    for run_id in reversed(ids):  # each the current model once: the sidebar names it (the image last)
        page.goto(f"{server}/Saliency?model={run_id}")
        settle(page)
        page.get_by_text("Integrated Gradients completeness error").wait_for(timeout=120_000)
        snap(page, shots, f"security-names-saliency-{run_id[-6:]}")
        _nothing_reached(page, beacon, "Saliency")
        assert names[run_id] in _text(page.locator("[data-testid='stSidebar']"))  # as typed
    _nav(page, None)
    snap(page, shots, "security-names-home")
    _nothing_reached(page, beacon, "Home")
    _nav(page, "Models")
    page.get_by_role("tab", name="Workspace models").click()
    page.get_by_text("Confusion matrix").wait_for(timeout=120_000)
    snap(page, shots, "security-names-models")
    _nothing_reached(page, beacon, "Models")
    _nav(page, "Runs")
    page.get_by_text("Results", exact=True).wait_for()
    snap(page, shots, "security-names-runs")
    _nothing_reached(page, beacon, "Runs")


def test_a_bundle_imported_on_the_runs_page_names_its_model_as_text(page, server, home, beacon, tmp_path):
    from lenscape.backend.bundles import export_bundle
    from lenscape.backend.store import ResultStore

    first = home.joinpath("ids").read_text().split()[0]
    page.goto(f"{server}/Saliency?model={first}&idx=3,4")
    settle(page)
    page.get_by_text("Integrated Gradients completeness error").wait_for(timeout=120_000)
    store = ResultStore(home / "store")
    job_id = next(
        j["id"] for j in store.list("saliency") if j["status"] == "DONE" and '"indices": [3, 4]' in j["config"]
    )
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(export_bundle(store, job_id, home / "runs"))
    store.delete(job_id)
    page.goto(f"{server}/Runs")
    settle(page)
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(bundle))
    message = page.locator("[data-testid='stAlertContentSuccess']").filter(has_text="Imported")
    message.wait_for(timeout=60_000)
    snap(page, screenshots_dir(), "security-names-runs-import")
    assert _names(beacon)[0] in _text(message)
    _nothing_reached(page, beacon, "Runs: import")


def test_a_model_imported_on_the_models_page_is_named_as_text(page, server, beacon, tmp_path):
    import torch
    from safetensors.torch import save

    from lenscape.models.architectures import build_model

    torch.manual_seed(7)
    data = save(build_model(_arch()).state_dict())
    page.goto(f"{server}/Models?tab=Import")
    settle(page)
    page.get_by_role("tab", name="Import").click()
    settle(page)
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
        files=[
            {"name": "tiny.safetensors", "mimeType": "application/octet-stream", "buffer": io.BytesIO(data).getvalue()}
        ]
    )
    settle(page)
    name = page.get_by_label("Name in the workspace")
    name.fill(f"![x]({beacon.url}/imported.png)")
    name.press("Enter")
    settle(page)
    page.get_by_role("button", name="Import", exact=True).click()
    page.get_by_text("is the current model").wait_for(timeout=60_000)
    snap(page, screenshots_dir(), "security-names-models-import")
    _nothing_reached(page, beacon, "Models: import")
