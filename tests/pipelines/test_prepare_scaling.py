"""prepare's worker side: records encoded without TensorFlow, a pool started before the manifest."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.cache import decode
from pipelines.cache.jobs import PrepareJob
from pipelines.datasets import Adapter

# The adapter below is pickled into spawned workers, which import this module: TensorFlow is
# imported inside the tests only, so the workers start as fast as with a registered adapter.


def test_the_workers_record_is_the_writers_record():
    import tensorflow as tf

    from pipelines.cache.format import serialize_example

    rng = np.random.default_rng(0)
    for shape, label in (((4, 5, 3), [0, 1, 1]), ((300, 200, 1), [1.5]), ((1, 1, 2), [])):
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8).tobytes()
        ours = decode.encode_example(pixels, shape, label, "x-é01", "p" * 200)
        theirs = serialize_example(pixels, shape, label, "x-é01", "p" * 200)
        assert tf.train.Example.FromString(ours) == tf.train.Example.FromString(theirs)


def test_the_workers_framing_is_tfrecordwriters(tmp_path):
    import tensorflow as tf

    records = [b"", b"x", bytes(range(256)) * 800, "é".encode() * 70_000]
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    ours = b"".join(decode.frame_record(r) for r in records)
    assert ours == (tmp_path / "tf.tfrecord").read_bytes()
    (tmp_path / "ours.tfrecord").write_bytes(ours)
    read = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord"))]
    assert read == records


def test_a_piece_holds_the_records_that_decoded_and_says_why_the_others_did_not(tmp_path):
    decode.init_worker(decode.AdapterRef(Slow()), str(tmp_path), None, (6, 6))
    tasks = [PrepareJob(position=k, row={"id": f"i{k}", "path": ""}, shard="s", channels=1,
                        label=[k % 2], example_id=f"i{k}", patient_id=f"p{k}") for k in range(3)]
    tasks.insert(1, PrepareJob(position=9, row={"id": "bad", "path": ""}, shard="s", channels=1,
                               label=[0], example_id="bad", patient_id="p"))  # load raises
    path, outcomes = decode.work_piece((tmp_path / ".s.000000.part", tasks))
    assert outcomes[0] is None and outcomes[2] is None and outcomes[3] is None
    assert outcomes[1].startswith("ValueError")
    data = Path(path).read_bytes()
    frames = [decode.frame_record(decode.work(t)[1]) for t in tasks if t.position != 9]
    assert data == b"".join(frames)


def test_a_decoding_process_keeps_freed_memory_for_the_next_image():
    """glibc returns multi-MB blocks to the kernel on free; the next slice faulted them back in,
    zeroed (1,579 faults per 512x512 slice beside TensorFlow, twice the decode time)."""
    import platform
    import subprocess

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("the malloc thresholds are glibc's")
    code = """
import resource, numpy as np
from pipelines.cache import decode
from pipelines.cache.jobs import PrepareJob
image = np.random.default_rng(0).random((512, 512, 3), dtype=np.float32)
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        windows = image * np.float32(0.5)  # a fresh 3 MB array per slice, as the windows are
        decode.to_cache_pixels(windows, (256, 256))
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
faults()
untuned = faults()
assert decode.keep_freed_memory() and decode.keep_freed_memory()
faults()
print(untuned, faults())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], check=True)
    untuned, tuned = map(float, done.stdout.split())
    assert tuned < 20, (untuned, tuned)  # 4 KB pages: under 80 KB of new memory per slice (88 untuned)


class Slow(Adapter):
    """12 images whose manifest takes a while to read (like a large archive's headers)."""

    name = "slow"
    labels = ("a",)
    task = "multi-label"

    def read_manifest(self, data_dir, **options):
        import time

        time.sleep(float(options.get("delay", 0)))
        return pd.DataFrame({"id": [f"i{k}" for k in range(12)], "path": "", "slice": -1,
                             "patient_id": [f"p{k}" for k in range(12)],
                             "study_id": [f"s{k}" for k in range(12)],
                             "series_id": [f"s{k}" for k in range(12)],
                             "a": [k % 2 for k in range(12)], "split": ["train"] * 8 + ["val"] * 4})

    def load(self, row, data_dir, windows):
        if row["id"] == "bad":
            raise ValueError("an unreadable file")
        k = int(row["id"][1:])
        return np.full((6, 6, 1), k / 12, np.float32)

    def channels(self, windows):
        return 1


def _pixels(cache):
    from pipelines.cache import make_dataset

    out = {}
    for images, _, ids in make_dataset(cache, "train", batch_size=4, with_ids=True):
        for image, patient in zip(images.numpy(), ids["patient_id"].numpy()):
            out[float(image.mean())] = patient
    return sorted(out)


def test_two_workers_write_what_one_writes(tmp_path):
    from pipelines.cache import prepare

    kw = dict(image_size=6, progress=False, options={"delay": "0.5"})
    one = prepare(Slow(), tmp_path, tmp_path / "one", workers=1, **kw)
    two = prepare(Slow(), tmp_path, tmp_path / "two", workers=2, **kw)
    assert _pixels(one) == _pixels(two)
    assert (Path(one) / "manifest.csv").read_text().count("\n") == 13


def test_the_decode_side_still_imports_no_tensorflow():
    import subprocess

    code = ("import sys; from pipelines.cache import decode; "
            "decode.encode_example(b'x', (1, 1, 1), [1], 'a', 'b'); "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
