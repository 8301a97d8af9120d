import pytest

from tests.helpers.runs import tiny_data


@pytest.fixture(scope="module")
def tiny(module_tmp):
    """The tiny built-in set (tests/helpers/runs.py), made once per test file."""
    return tiny_data(module_tmp("data"))
