"""``prepare(..., runner="pool")``: the decode workers on this machine and the shard writing.

The driver (:mod:`pipelines.cache.writer`) starts a :class:`DecodePool` before it reads the
manifest, then hands :func:`write_shards` the run's :class:`~pipelines.cache.jobs.PrepareJob`
list in plan order. The workers decode a *piece* (consecutive jobs of one shard) at a time
into a piece file beside the shard (:func:`pipelines.cache.decode.work_piece`); this process
appends the piece files to the shards in plan order and finishes each shard with
:func:`pipelines.cache.jobs.finish_shard`.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from pathlib import Path

from pipelines.cache import decode
from pipelines.cache.jobs import PrepareError, finish_shard, strict_message

__all__ = ["DecodePool", "PIECE_SUFFIX", "write_shards"]

PIECE_SUFFIX = ".part"


def _worker_context():
    """A forkserver that has imported the decoders (workers fork from it, already warm); plain
    spawn where there is no forkserver. Never a bare fork: the parent runs TensorFlow threads."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # __main__ as spawn would import it (an adapter class defined in a script must unpickle)
    context.set_forkserver_preload(["__main__", "pipelines.cache.decode", "pipelines.datasets"])
    return context


class DecodePool:
    """The decode workers: started early, fed later.

    ``DecodePool(workers, ref, data_dir, windows, size)`` spawns the processes at once (their
    start-up, about a second of imports each, overlaps the parent's manifest reading);
    ``results(pieces)`` yields ``decode.work_piece`` results in piece order. ``workers=1``
    decodes in this process. ``close()`` (or the with-block) stops the workers at once.

    Why 2 workers used to be no faster than 1, in four steps:

    * each worker was a fresh spawned interpreter importing numpy, pandas, scipy and pydicom
      (3.7 to 5 s for a pool of 2 on the loaded 2-core machine), started only after the
      manifest was read: now they fork from a forkserver that imported the decoders once and
      start while the manifest is read;
    * the parent built every ``tf.train.Example`` itself: now the workers encode the records;
    * every record (196 KB at 256x256x3) still crossed the pool's result pipe, which all
      workers share under one lock and which holds 64 KB: a worker blocked until the parent
      was scheduled to drain it, so 2 workers ran 0.9-1.0x of one (280 images/s against 300).
      Now a worker writes the framed records of a piece (consecutive rows of one shard) to a
      file beside the shard and sends back one outcome per row; the parent appends the file to
      the shard (the same pool ran 1.7x of one once only the outcomes came back);
    * each slice's few MB of arrays went back to the kernel when freed and were faulted in
      again for the next (twice the decode time in a process that had imported TensorFlow):
      ``decode.keep_freed_memory`` in every decoding process. 2 workers now run 1.8-2.0x of
      one once up (``python -m benchmarks.pipeline``).
    """

    def __init__(self, workers, ref, data_dir, windows, size):
        self.workers = workers
        self.initargs = (ref, str(data_dir), windows, tuple(size))
        self.pool = None
        if workers > 1:
            context = _worker_context()
            self.pool = context.Pool(workers, initializer=decode.init_worker,
                                     initargs=self.initargs)

    def piece_rows(self, count: int) -> int:
        """Rows per piece: enough to amortise a piece file, few enough to keep every worker
        busy to the end (at least 4 pieces per worker)."""
        return max(1, min(16, count // (self.workers * 4)))

    def results(self, pieces):
        if self.pool is None:
            decode.init_worker(*self.initargs)
            for piece in pieces:
                yield decode.work_piece(piece)
            return
        yield from self.pool.imap(decode.work_piece, pieces)

    def close(self):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _pieces(jobs, out, piece_rows):
    """Consecutive jobs of one shard, at most ``piece_rows`` of them: ``[(shard, first job
    index, job count, piece path), ...]`` in plan order."""
    pieces = []
    first = 0
    while first < len(jobs):
        shard = jobs[first].shard
        stop = first + 1
        while stop < len(jobs) and stop - first < piece_rows and jobs[stop].shard == shard:
            stop += 1
        pieces.append((shard, first, stop - first, out / f".{shard}.{len(pieces):06d}{PIECE_SUFFIX}"))
        first = stop
    return pieces


def _remove_pieces(out: Path) -> None:
    for path in out.glob(f".*{PIECE_SUFFIX}"):
        path.unlink(missing_ok=True)


class _Steady:
    """The steady rate's clock: ``t0`` when each worker has delivered a piece (the first
    ``workers`` pieces, which include the start-up), ``t1`` at the last piece, ``images``
    those of the pieces after ``t0``."""

    def __init__(self, workers: int):
        self.warm_up = max(1, workers)
        self.first = self.last = None
        self.images = 0

    def tick(self, k: int, count: int) -> None:
        self.last = time.perf_counter()
        if k + 1 == self.warm_up:  # every worker has delivered a piece: the window opens
            self.first = self.last
        elif k + 1 > self.warm_up:
            self.images += count


def write_shards(pool: DecodePool, jobs, *, out: Path, progress_dir: Path, strict: bool, bar,
                 hide_paths: bool = False):
    """The workers' piece files -> shard files, in plan order. Returns ``(t0, t1, images)``
    for the steady rate (see :class:`_Steady`)."""
    pieces = _pieces(jobs, out, pool.piece_rows(len(jobs)))
    last_piece = {shard: k for k, (shard, *_rest) in enumerate(pieces)}
    _remove_pieces(out)  # a killed run's leftovers
    quarantined = 0
    handle = None
    current = tmp = None
    written: list[str] = []
    bad: list[list[str]] = []
    results = pool.results((path, jobs[first:first + count])
                           for _, first, count, path in pieces)
    steady = _Steady(pool.workers)
    try:
        for k, ((shard, first, count, path), (_, outcomes)) in enumerate(zip(pieces, results)):
            steady.tick(k, count)
            if shard != current:
                current, written, bad = shard, [], []
                tmp = out / f".{current}.tmp"
                handle = open(tmp, "wb")
            for job, error in zip(jobs[first:first + count], outcomes):
                if error is not None:
                    where = job.where(hide_paths)
                    if strict:
                        raise PrepareError(strict_message(where, error))
                    bad.append([where, error])
                    quarantined += 1
                    if bar is not None:
                        bar.set_postfix(quarantined=quarantined)
                else:
                    written.append(job.example_id)
            with open(path, "rb") as piece:
                shutil.copyfileobj(piece, handle, 1 << 20)
            os.unlink(path)
            if bar is not None:
                bar.update(count)
            if last_piece[shard] == k:  # the shard is complete: finish it now
                finish_shard(handle, tmp, out, progress_dir, current, written=written, bad=bad)
                handle = None
    finally:
        results.close()
        pool.close()  # stops the workers at once when strict mode raised
        if handle is not None:
            handle.close()
            tmp.unlink(missing_ok=True)
        _remove_pieces(out)
        if bar is not None:
            bar.close()
    return steady.first, steady.last, steady.images
