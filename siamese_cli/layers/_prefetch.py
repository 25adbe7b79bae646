"""Caffe's BasePrefetchingDataLayer: batches made and transformed in a thread, ahead of forward.

A layer hands `start_prefetch` a batch source (seek(batch), load() -> (pixels, labels),
close(), name) and a Transformer. Batch b is always the same records and the same random
transform (its generator is seeded with (seed, b)), whatever the timing, so restarting at
batch b repeats a run.
"""
import queue
import threading
import weakref

import numpy as np

from .base import Layer


class Prefetcher:
    """The source and the thread that keeps up to `depth` transformed batches ready."""

    def __init__(self, source, transformer, depth, seed):
        self.source = source
        self.transformer = transformer
        self.depth = depth
        self.seed = seed
        self._thread = None
        self._error = None

    def start(self, batch):
        self.source.seek(batch)
        self._queue = queue.Queue(self.depth)
        self._stop = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(batch, self._queue, self._stop),
                                        name=f"prefetch {self.source.name}", daemon=True)
        self._thread.start()

    def _make(self, batch):
        data, labels = self.source.load()
        rng = np.random.default_rng([self.seed, batch]) if self.transformer.needs_rng else None
        return self.transformer(data, rng), labels

    def _run(self, batch, out, stop):
        while not stop.is_set():
            try:
                item = self._make(batch)
            except BaseException as exc:  # handed to the consumer, who raises it
                item = exc
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return
            batch += 1

    def get(self):
        if self._error is not None:
            raise self._error
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError(f"the prefetch thread for {self.source.name} stopped") from None
        if isinstance(item, BaseException):
            self._error = item
            raise item
        return item

    def stop(self):
        """Stop the thread; True when it has finished (so the source is free)."""
        if self._thread is None:
            return True
        self._stop.set()
        self._thread.join(timeout=10)
        finished = not self._thread.is_alive()
        if finished:
            self._thread = None
        return finished

    def close(self):
        if self.stop() and self.source is not None:
            self.source.close()
            self.source = None


class PrefetchLayer(Layer):
    """Tops data (N,) + transformer.out_shape float32 and, optionally, label (N,) float32, from a Prefetcher.

    Call close() to stop the thread and release the source; it also happens when the layer
    is collected and at interpreter exit.
    """

    num_bottom = 0
    min_top = 1
    max_top = 2

    def start_prefetch(self, source, transformer, batch_size, depth, seed):
        self.transformer = transformer
        self.batch_size = batch_size
        self.batches_served = 0
        self._feed = Prefetcher(source, transformer, depth, seed)
        self._finalizer = weakref.finalize(self, self._feed.close)
        self._feed.start(0)

    def reshape(self, bottom, top):
        top[0].reshape((self.batch_size,) + self.transformer.out_shape)
        if len(top) > 1:
            top[1].reshape((self.batch_size,))

    def forward(self, bottom, top):
        if self._feed.source is None:
            raise self.error("the layer was closed")
        data, labels = self._feed.get()
        self.reshape(bottom, top)
        np.copyto(top[0].data, data)
        if len(top) > 1:
            np.copyto(top[1].data, labels)
        self.batches_served += 1

    def backward(self, top, propagate_down, bottom):
        """Data layers have no bottoms and propagate nothing."""

    def seek(self, batch):
        """Make the next forward give batch number `batch` (0 = the first after setup), records and
        random transform both as an uninterrupted run would (for exact resume)."""
        if not self._feed.stop():
            raise self.error("the prefetch thread did not stop")
        self._feed.start(int(batch))
        self.batches_served = int(batch)

    def skip_batches(self, count):
        """Pass over the next `count` batches without computing them (the solver's resume hook)."""
        self.seek(self.batches_served + int(count))

    def close(self):
        """Stop the prefetch thread and release the source (idempotent)."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()


def color_mode(layer, transform_param, force_encoded_color=False):
    """How encoded images are decoded: "color", "gray" or None (as stored), from Caffe's force_* flags."""
    if transform_param.force_color and transform_param.force_gray:
        raise layer.error("transform_param: force_color and force_gray cannot both be set")
    if transform_param.force_color or force_encoded_color:
        return "color"
    return "gray" if transform_param.force_gray else None
