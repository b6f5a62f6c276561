import pytest


@pytest.fixture(autouse=True)
def fresh_backend():
    """Pages drawn here (AppTest) get a backend over the test's own workspace: the cached one is per
    process (as tests/pages/conftest.py does)."""
    from ui.common import _backend
    _backend.clear()
    yield
