import pytest


@pytest.fixture(autouse=True)
def fresh_backend():
    """Pages drawn here (AppTest) get a backend over the test's own workspace: the cached one is per
    process (as tests/pages/conftest.py does)."""
    from lenscape.ui.common import _backend

    _backend.clear()
    yield


# The browser tests here each make a `home` workspace (module-scoped) and share these: one Lenscape
# server over it and one Chromium page per module (a module's VIEWPORT, if it sets one).


@pytest.fixture(scope="module")
def server(home):
    from tests.browser import streamlit_server

    with streamlit_server(home) as url:
        yield url


@pytest.fixture(scope="module")
def page(request):
    from tests.browser import browser_page

    with browser_page(viewport=getattr(request.module, "VIEWPORT", None)) as pg:
        yield pg
