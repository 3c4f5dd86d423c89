"""Every test runs with its own cache home, so the token-id cache (and the
KJV corpus build) never touch the user's ~/.cache, and no test sees what
another one cached unless it means to (same files, same session)."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _cache_home(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    mp.undo()
