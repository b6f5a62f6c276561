import pytest


@pytest.fixture(autouse=True)
def fresh_backend():
    """Each test gets a backend over its own workspace (the cached one is per process)."""
    from ui.common import backend
    backend.clear()
    yield
