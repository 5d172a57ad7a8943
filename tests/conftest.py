"""The whole suite's decode cache lives in a folder of its own, never the user's; the longest test
files run first, so that under `make test`'s two workers (pytest-xdist, a file each) none of them
starts last and runs alone."""
from __future__ import annotations

import os

import pytest

from classifier.decode_cache import CACHE_VARIABLE


@pytest.fixture(scope="session", autouse=True)
def private_decode_cache(tmp_path_factory):
    saved = os.environ.get(CACHE_VARIABLE)
    os.environ[CACHE_VARIABLE] = str(tmp_path_factory.mktemp("decode-cache"))
    yield
    if saved is None:
        os.environ.pop(CACHE_VARIABLE, None)
    else:
        os.environ[CACHE_VARIABLE] = saved


LONGEST_FIRST = ("test_pipeline.py", "test_sharing.py", "test_resume.py", "test_staleness.py", "test_faults.py", "test_recipes.py")


def pytest_collection_modifyitems(config, items) -> None:
    """The longest files first (a stable sort: each file's tests keep their order)."""
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)
