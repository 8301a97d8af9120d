import pytest

from tests.helpers.runs import tiny_data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny built-in set (tests/helpers/runs.py), made once per test file."""
    return tiny_data(tmp_path_factory.mktemp("data"))
