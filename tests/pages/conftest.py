import pytest


@pytest.fixture(autouse=True)
def fresh_backend():
    """Each test gets a backend over its own workspace (the cached one is per process), running
    jobs here unless the test chooses a Ray cluster."""
    from lenscape.ui.common import _backend

    _backend.clear()
    yield
