"""prefetch.made_ahead: the thread that decodes batches ahead of the training loop (decoded_loader.DecodedLoader).
Its results must come in order and whole, its errors must reach the loop, and leaving the loop must stop it."""
import threading
import time

import pytest
import torch

from alexnet2gpu.data.gpu.loader import decode_thread_note
from alexnet2gpu.data.prefetch import ThreadClock, made_ahead

CPU = torch.device("cpu")


def made_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "made_ahead"]


def threads_end(seconds: float = 10.0) -> bool:
    """Whether every made_ahead thread has ended within `seconds`. A thread that has handed on its last item
    still runs its own end (stopping the thread before it in a chain), and a busy machine can hold it there
    past a short join: wait for it rather than look once."""
    deadline = time.monotonic() + seconds
    while made_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not made_threads()


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_results_come_in_order_from_another_thread(depth):
    callers = set()

    def make(i):
        callers.add(threading.get_ident())
        time.sleep(0.001 * (i % 3))  # uneven work must not reorder anything
        return torch.full((2,), i)

    got = [int(t[0]) for t in made_ahead(range(20), make, CPU, depth)]
    assert got == list(range(20))
    assert callers and threading.get_ident() not in callers
    assert threads_end()


def test_an_error_in_the_thread_is_raised_in_the_loop_after_the_items_before_it():
    def make(i):
        if i == 3:
            raise ValueError("batch 3 is broken")
        return i

    seen = []
    with pytest.raises(ValueError, match="batch 3 is broken"):
        for i in made_ahead(range(10), make, CPU):
            seen.append(i)
    assert seen == [0, 1, 2]


def test_leaving_the_loop_early_stops_the_thread():
    made = []

    def make(i):
        made.append(i)
        return i

    for i in made_ahead(range(1000), make, CPU, depth=2):
        if i == 4:
            break
    assert threads_end()
    assert len(made) <= 4 + 1 + 2 + 1  # the items taken, the one in hand, a full queue, one being put


def test_a_chain_of_two_threads_keeps_order_errors_and_stops_both():
    """data/gpu/loader.py chains two made_ahead threads (decoding, then cropping): the items come in order,
    an error in the first thread reaches the loop, and leaving the loop early stops both threads."""
    def first(i):
        if i == 7:
            raise ValueError("batch 7 is broken")
        return i, [torch.full((2,), i)]  # a batch and its decoded images, as decode_files hands them on

    chain = lambda n: made_ahead(made_ahead(range(n), first, CPU), lambda pair: int(pair[1][0][0]) * 10, CPU)
    assert list(chain(7)) == [i * 10 for i in range(7)]
    seen = []
    with pytest.raises(ValueError, match="batch 7 is broken"):
        for i in chain(20):
            seen.append(i)
    assert seen == [i * 10 for i in range(7)]
    for i in chain(1000):
        if i == 30:
            break
    assert threads_end()  # the first thread is stopped by the second's end


def test_the_clock_tells_waiting_for_items_from_making_them():
    """A slow source and a quick `make`, then the reverse: each side's sleeps are at least what the clock
    counts for it (lower bounds only: a loaded machine may add time to either side)."""
    def slow(n):
        for i in range(n):
            time.sleep(0.03)
            yield i

    def slow_make(i):
        time.sleep(0.03)
        return i

    waiting, making = ThreadClock(), ThreadClock()
    assert list(made_ahead(slow(5), lambda i: i, CPU, clock=waiting)) == list(range(5))
    assert list(made_ahead(range(5), slow_make, CPU, clock=making)) == list(range(5))
    assert waiting.waiting >= 5 * 0.03 and waiting.making < waiting.waiting
    assert making.making >= 5 * 0.03 and making.waiting < making.making


def test_the_decode_note_names_the_side_that_held_the_epoch_back():
    note = decode_thread_note(ThreadClock(waiting=1.5, making=0.5), images=10_000, seconds=2.0)
    assert note == ("GPU decode thread: 25% of the epoch decoding (batches readied at 20,000 images/s), "
                    "75% waiting for the loader workers")
    assert "no batch decoded" in decode_thread_note(ThreadClock(), images=0, seconds=0.0)
    with_crops = decode_thread_note(ThreadClock(waiting=0.5, making=1.5), 10_000, 2.0, ThreadClock(1.0, 1.0))
    assert with_crops.endswith("; crop thread: 50% cutting crops (at 10,000 images/s)")


def test_a_new_pass_never_runs_beside_the_last_ones_thread(monkeypatch):
    """A pass left early stops its thread, which may still wait inside the loader (a worker stuck on a file).
    The loader's workers persist between passes, so a new pass of the same DecodedLoader must not start
    beside that thread: it waits for it, and says so in one sentence when it does not end; the crop thread
    after it stops with it."""
    from alexnet2gpu.data import prefetch
    from alexnet2gpu.data.gpu import loader as decoded_loader
    from alexnet2gpu.data.gpu.loader import DecodedLoader
    from alexnet2gpu.errors import TrainError
    monkeypatch.setattr(prefetch, "JOIN_SECONDS", 0.2)
    monkeypatch.setattr(decoded_loader, "JOIN_SECONDS", 0.2)
    release = threading.Event()

    class Stuck:  # the second batch hangs until released
        def __iter__(self):
            yield 1
            release.wait(30)
            yield 2

    loader = DecodedLoader(Stuck(), lambda batch, decoded: batch, CPU, files=lambda batch: (batch, None))
    first = iter(loader)
    assert next(first) == 1
    first.close()  # the loop leaves (--max-steps): its thread still waits for batch 2
    with pytest.raises(TrainError, match="the GPU decoding thread of the last pass still waits for a loader worker"):
        iter(loader)
    release.set()
    assert loader.finished.wait(10)  # that pass's decoding thread ends once its loader goes on
    assert list(loader) == [1, 2]  # then a new pass runs
    assert loader.finished.wait(10) and threads_end()
    iter(loader)  # a pass never started has no thread: the next one need not wait
    assert list(loader) == [1, 2]
