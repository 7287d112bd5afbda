"""prepare's worker side: records encoded without TensorFlow, a pool started before the manifest."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.cache import decode
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
