"""Memory: 2,000 training steps keep the process's resident memory flat after warm-up."""
import os
import sys

import numpy as np
import pytest

import fastnn
from fastnn import callbacks, nn, optim

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads resident memory from /proc/self/statm")

STEPS = 2000
BATCH = 16
WARMUP_EPOCHS = 10
BOUND = 4 * 2**20  # bytes of growth allowed after warm-up


@pytest.fixture(autouse=True)
def one_thread():
    """Memory does not depend on threads; one keeps thousands of tiny steps fast on a busy
    machine (a parallel region waits for a core for every thread it wakes)."""
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(1)
    yield
    fastnn.set_num_threads(before)


def rss():
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


class RecordRss(callbacks.Callback):
    def __init__(self, leak_per_epoch=0):
        self.samples = []
        self.leak_per_epoch = leak_per_epoch
        self.hoard = []

    def on_epoch_end(self, trainer, epoch, logs):
        if self.leak_per_epoch:  # the control: memory that is never given back
            self.hoard.append(np.ones(self.leak_per_epoch, np.uint8))
        self.samples.append(rss())


def growth_after_warmup(make_model, backend, shape, leak_per_epoch=0):
    rng = np.random.default_rng(0)
    n = 256
    x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    fastnn.seed(0)
    record = RecordRss(leak_per_epoch)
    trainer = fastnn.Trainer(make_model(), optim.Adam(lr=1e-3), backend=backend)
    epochs = STEPS // (n // BATCH)
    history = trainer.fit(x, y, epochs=epochs, batch_size=BATCH, callbacks=[record], verbose=0)
    assert history.epochs == epochs and trainer.optimizer.steps == STEPS
    after_warmup = record.samples[WARMUP_EPOCHS - 1]
    return max(record.samples[WARMUP_EPOCHS:]) - after_warmup


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(32, 10))


def cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 10))


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_mlp_training_keeps_memory_flat(backend):
    assert growth_after_warmup(mlp, backend, (8, 8)) < BOUND


def test_cnn_training_keeps_memory_flat():
    assert growth_after_warmup(cnn, "cpu", (8, 8)) < BOUND


def test_the_measurement_sees_a_leak():
    # 64 KiB kept per epoch, 115 epochs after warm-up: about 7.4 MB, above the bound
    assert growth_after_warmup(mlp, "cpu", (8, 8), leak_per_epoch=64 * 2**10) > BOUND
