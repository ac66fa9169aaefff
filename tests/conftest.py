import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    "Run a module's tests on one torch thread (small tensors: threads only add overhead), restoring the count after."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
