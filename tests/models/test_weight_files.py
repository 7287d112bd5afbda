"""Weight files are checked before they are trusted: every loader refuses in one sentence."""

import json
import struct
import subprocess
import sys

import h5py
import numpy as np
import pytest

import zoo
from zoo.models import weightfile
from zoo.models.backbone import BackboneError, load_backbone, read_metadata, save_backbone
from zoo.models.weightfile import MAX_METADATA_BYTES, WeightsFileError, open_h5
from zoo.models.weights import load_weights


def _model():
    return zoo.get_model("rensenet_small", input_shape=(32, 32, 1), num_classes=2)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    path = tmp_path_factory.mktemp("bb") / "backbone.weights.h5"
    save_backbone(_model(), path, {"model": "rensenet_small"})
    return path


def _copy(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst


def _one_sentence(err, path):
    text = str(err)
    assert str(path) in text and "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize("metadata, words", [
    ("[1, 2]", "not an object"),
    ("{not json", "not valid JSON"),
    ("[" * 5000 + "]" * 5000, "deeper than"),
    ('{"x": "' + "a" * MAX_METADATA_BYTES + '"}', "over the"),
], ids=["list", "invalid", "deep", "huge"])
def test_bad_backbone_metadata_is_one_sentence(backbone, tmp_path, metadata, words):
    path = _copy(backbone, tmp_path / "backbone.weights.h5")
    with h5py.File(path, "a") as f:
        f.attrs["metadata"] = metadata
    for call in (lambda: read_metadata(path), lambda: load_backbone(_model(), path)):
        with pytest.raises(BackboneError, match=words) as info:
            call()
        _one_sentence(info.value, path)


def test_oversized_declared_shape_is_refused_before_reading(backbone, tmp_path, monkeypatch):
    path = _copy(backbone, tmp_path / "backbone.weights.h5")
    with h5py.File(path, "a") as f:
        group = f["layers"][next(iter(f["layers"]))]
        del group["0"]
        group.create_dataset("0", shape=(2**32,), dtype="float64", chunks=(2**16,))  # 32 GiB, empty
    read = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__",
                        lambda self, key: pytest.fail("a dataset was read") if self.size > 2**24 else read(self, key))
    with pytest.raises(BackboneError, match="declares") as info:
        load_backbone(_model(), path)
    _one_sentence(info.value, path)


def test_wrong_shape_is_refused_from_metadata_before_reading(backbone, tmp_path, monkeypatch):
    path = _copy(backbone, tmp_path / "backbone.weights.h5")
    with h5py.File(path, "a") as f:
        group = f["layers"][list(f["layers"])[-1]]
        shape = group["0"].shape
        del group["0"]
        group.create_dataset("0", data=np.zeros((*shape[:-1], shape[-1] + 1), np.float32))
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, key: pytest.fail("a dataset was read"))
    with pytest.raises(BackboneError, match="has shape"):
        load_backbone(_model(), path)


def test_truncated_weight_files_are_one_sentence(backbone, tmp_path):
    data = backbone.read_bytes()
    path = tmp_path / "backbone.weights.h5"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BackboneError, match="truncated") as info:
        load_backbone(_model(), path)
    _one_sentence(info.value, path)
    plain = tmp_path / "model.weights.h5"
    _model().save_weights(plain)
    plain.write_bytes(plain.read_bytes()[:1000])
    with pytest.raises(WeightsFileError, match="truncated or not an HDF5") as info:
        load_weights(_model(), plain)
    _one_sentence(info.value, plain)


def test_nan_weights_are_refused(backbone, tmp_path):
    path = _copy(backbone, tmp_path / "backbone.weights.h5")
    with h5py.File(path, "a") as f:
        dataset = f["layers"][next(iter(f["layers"]))]["0"]
        dataset[...] = np.nan
    with pytest.raises(BackboneError, match="NaN"):
        load_backbone(_model(), path)
    model = _model()
    plain = tmp_path / "model.weights.h5"
    weights = model.get_weights()
    weights[0] = np.full_like(weights[0], np.inf)
    model.set_weights(weights)
    model.save_weights(plain)
    with pytest.raises(WeightsFileError, match="NaN or infinite"):
        load_weights(_model(), plain)


def test_good_files_still_load(backbone, tmp_path):
    assert json.loads(json.dumps(read_metadata(backbone))) == {"model": "rensenet_small"}
    load_backbone(_model(), backbone)
    model = _model()
    model.save_weights(tmp_path / "m.weights.h5")
    load_weights(_model(), tmp_path / "m.weights.h5")


# ------------------------------------------------ variable-length attributes and their global heap
def _descriptor(data: bytes, text: str) -> int:
    """Where a file written by h5py keeps the (length, heap address, index) of attribute ``text``."""
    return data.index(struct.pack("<IQI", len(text), data.index(b"GCOL"), 1))


def _free_space_entry(data: bytes) -> int:
    """Where the global heap's free-space entry (index 0, the last one) starts."""
    heap = data.index(b"GCOL")
    pos = heap + 16
    while struct.unpack_from("<H", data, pos)[0] != 0:
        pos += 16 + -(-struct.unpack_from("<Q", data, pos + 8)[0] // 8) * 8
    return pos


_READ = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("weightfile", sys.argv[1])
weightfile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(weightfile)
def peak():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
before = peak()
try:
    with weightfile.open_h5(sys.argv[2], "Backbone file") as f:
        f.attrs["metadata"]
    print("read")
except Exception as exc:
    print(type(exc).__name__, exc)
print((peak() - before) // 1024)
"""


def _read_apart(path) -> tuple[str, int]:
    """open_h5 and the metadata attribute read in a process of its own (HDF5 may never return):
    (the outcome, the MB its peak memory grew)."""
    try:
        done = subprocess.run([sys.executable, "-c", _READ, weightfile.__file__, str(path)],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("reading the attribute did not return within 30 s")
    *outcome, grown = done.stdout.strip().splitlines()
    return "\n".join(outcome), int(grown)


def test_a_global_heap_hdf5_reads_forever_is_refused(backbone, tmp_path):
    """A free-space entry cut short leaves HDF5's heap parser on a zero-size entry, where it
    stays (weights/byte_flip in the fuzz: 5 s timeouts)."""
    path = _copy(backbone, tmp_path / "backbone.weights.h5")
    data = bytearray(path.read_bytes())
    free = _free_space_entry(data)
    size = struct.unpack_from("<Q", data, free + 8)[0]
    struct.pack_into("<Q", data, free + 8, size // 2 // 8 * 8)  # lands in the zeros of the free space
    path.write_bytes(data)
    outcome, _ = _read_apart(path)
    assert outcome.startswith("WeightsFileError") and "free-space entry of size 0" in outcome
    assert str(path) in outcome and "\n" not in outcome
    for call in (lambda: read_metadata(path), lambda: load_backbone(_model(), path)):
        with pytest.raises(BackboneError, match="corrupt variable-length attribute 'metadata'") as info:
            call()
        _one_sentence(info.value, path)


def test_a_flipped_attribute_length_is_refused_before_hdf5_allocates_it(backbone, tmp_path):
    """HDF5 allocates and clears a variable-length value's declared length before it finds the
    heap object is shorter (a flipped byte: 1.7 GB in the fuzz)."""
    path = _copy(backbone, tmp_path / "backbone.weights.h5")
    data = bytearray(path.read_bytes())
    text = json.dumps({"model": "rensenet_small"})
    data[_descriptor(data, text) + 3] = 0x10  # 256 MiB more
    path.write_bytes(data)
    outcome, grown = _read_apart(path)
    assert "declares 268435483 bytes where its heap holds 27" in outcome and grown < 64
    with pytest.raises(BackboneError, match="declares 268435483 bytes") as info:
        read_metadata(path)
    _one_sentence(info.value, path)


@pytest.mark.parametrize("options", [{}, {"libver": "latest"}, {"libver": "latest", "track_order": True},
                                     {"userblock_size": 512}, {"attributes": 60}],
                         ids=["v1", "v2", "creation-order", "userblock", "continuation"])
def test_variable_length_attributes_of_every_layout_still_read(tmp_path, options):
    options = dict(options)
    count = options.pop("attributes", 2)
    path = tmp_path / "file.h5"
    with h5py.File(path, "w", **options) as f:
        f.attrs["metadata"] = json.dumps({"model": "m"})
        f.attrs.create("lengths", data=np.array([np.arange(3), np.arange(7)], dtype=object),
                       dtype=h5py.vlen_dtype(np.int32))
        group = f.create_group("layers/conv")
        group.create_dataset("0", data=np.ones((3, 3), np.float32))
        for i in range(count):
            group.attrs[f"name{i}"] = ["kernel:0", "bias:0"]
    with open_h5(path) as f:
        assert f.attrs["metadata"] == '{"model": "m"}' and len(f.attrs["lengths"][1]) == 7
        assert list(f["layers/conv"].attrs[f"name{count - 1}"]) == ["kernel:0", "bias:0"]


def test_variable_length_attributes_out_of_reach_are_refused(tmp_path):
    path = tmp_path / "dense.h5"
    with h5py.File(path, "w", libver="latest") as f:  # past 8 attributes: dense storage
        for i in range(20):
            f.attrs[f"name{i}"] = "value"
    with pytest.raises(WeightsFileError, match="cannot be checked") as info:
        open_h5(path)
    _one_sentence(info.value, path)
