"""The whole suite's ingest decode cache lives in a folder of its own, never the user's."""
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
