"""``prepare(..., runner="beam")``: the decode and shard-write steps as an Apache Beam pipeline.

The driver (``pipelines.cache.writer``) does what needs the whole manifest, exactly as the
process pool path does it: read and validate the manifest, split it by patient, pseudonymise
the ids and plan the shards. The Beam pipeline then runs what scales with the data::

    Create((shard, PrepareJob) per row) -> ParDo(decode: decode.work, the same function the
    pool runs) -> GroupByKey(shard) -> Map(write the shard: records in plan order, quarantine in
    the shard's marker, rename when complete)

and the driver gathers the markers into manifest.csv, quarantine.csv and dataset.json, as
after the pool. So both runners write the same cache, and ``make_dataset`` reads either.

Runners: the DirectRunner here (``--direct_running_mode=multi_processing`` with ``workers``
processes by default); Flink, Spark or Dataflow through ``beam_options`` on a cluster, where
``data_dir`` and ``out`` must be paths every Beam worker can read and write (a shared
filesystem; ``out`` is written with plain file I/O, the records framed by
``decode.frame_record`` as in the pool path).

Install with ``pip install -e ".[beam]"``.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from pipelines.cache import decode
from pipelines.cache.jobs import PrepareError, finish_shard, strict_message

__all__ = ["check_installed", "write_shards", "parse_options"]


def check_installed() -> None:
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        raise PrepareError(
            "--runner beam needs Apache Beam, which is not installed; run "
            "pip install -e \".[beam]\", or use the default --runner pool."
        ) from None


def parse_options(options, workers: int) -> list[str]:
    """Beam pipeline options as a list of flags; the default is the local DirectRunner."""
    if isinstance(options, str):
        options = shlex.split(options)
    options = list(options or [])
    if not any(o.startswith("--runner") for o in options):
        options.append("--runner=DirectRunner")
    runner = next(o.split("=", 1)[1] for o in options if o.startswith("--runner="))
    if runner == "DirectRunner" and not any(o.startswith("--direct_running_mode") for o in options):
        mode = "multi_processing" if workers > 1 else "in_memory"
        options += [f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]
    return options


class _Decode:
    """The DoFn body (wrapped in a ``beam.DoFn`` by :func:`write_shards`)."""

    def __init__(self, initargs, strict, hide_paths=False):
        self.initargs, self.strict, self.hide_paths = initargs, strict, hide_paths

    def setup(self):
        decode.init_worker(*self.initargs)

    def process(self, item):
        shard, job = item
        position, record, error = decode.work(job)
        path = job.where(self.hide_paths)
        if error is not None and self.strict:
            raise ValueError(strict_message(path, error))
        yield shard, (position, job.example_id, record, error, path)


def _write_shard(item, out, progress_dir):
    """One shard's decoded rows -> the shard file and its marker (as the pool path writes)."""
    shard, results = item
    out, progress_dir = Path(out), Path(progress_dir)
    tmp = out / f".{shard}.tmp"
    handle = open(tmp, "wb")
    written, bad = [], []
    for _, example_id, record, error, path in sorted(results, key=lambda r: r[0]):
        if error is not None:
            bad.append([path, error])
        else:
            handle.write(decode.frame_record(record))
            written.append(example_id)
    finish_shard(handle, tmp, out, progress_dir, shard, written=written, bad=bad)
    return shard


def write_shards(jobs, *, out, progress_dir, strict, initargs, workers, options, progress,
                 hide_paths=False):
    """Run the Beam pipeline over ``jobs`` (:class:`~pipelines.cache.jobs.PrepareJob`, keyed
    by their shard); returns the (start, end) times of the pipeline and the images after the
    first, for the steady rate."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    items = [(job.shard, job) for job in jobs]
    flags = parse_options(options, workers)
    decoder = _Decode(initargs, strict, hide_paths)

    class Decode(beam.DoFn):
        def setup(self):
            decoder.setup()

        def process(self, item):
            yield from decoder.process(item)

    if progress:
        print(f"prepare: Beam pipeline over {len(items)} images ({' '.join(flags)})", flush=True)
    start = time.perf_counter()
    try:
        with beam.Pipeline(options=PipelineOptions(flags)) as pipeline:
            _ = (
                pipeline
                | "rows" >> beam.Create(items, reshuffle=True)
                | "decode" >> beam.ParDo(Decode())
                | "by shard" >> beam.GroupByKey()
                | "write shards" >> beam.Map(_write_shard, out=str(out),
                                             progress_dir=str(progress_dir))
            )
    except Exception as error:  # Beam wraps what a DoFn raised
        text = str(error)
        if "Could not decode" in text:
            line = next(t for t in text.splitlines() if "Could not decode" in t)
            line = line[line.index("Could not decode"):]
            end = "quarantine it and go on."
            raise PrepareError(line[:line.index(end) + len(end)] if end in line else line) from None
        raise
    return start, time.perf_counter(), max(len(items) - 1, 0)
