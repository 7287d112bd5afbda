"""The decoders under a seeded fuzz subset: no crash, no hang, no bad image, no PHI."""

import tempfile
from pathlib import Path

import pytest

from benchmarks import fuzz


@pytest.fixture(scope="module")
def summary():
    return fuzz.run(files=420, seed=13, timeout_s=10.0, workers=2)


def test_no_crash_hang_bad_output_or_phi(summary):
    assert summary["files"] == 420
    assert summary["crashes"] == 0, summary["crashes_by_type"]
    assert summary["hangs"] == 0, summary["examples"]
    assert summary["non_finite"] == 0 and summary["out_of_range"] == 0, summary["examples"]
    assert summary["constant_from_overflow"] == 0, summary["examples"]
    assert summary["planted_files"] > 0 and summary["phi_hits"] == 0, summary["examples"]
    assert summary["runtime_warnings"] == 0


def test_every_mutation_class_ran(summary):
    classes = {f"{family}/{cls}" for family, cls in fuzz.PLAN}
    assert set(summary["per_class"]) == classes
    # the subset is not trivially all errors: real mutants still decode to images
    assert summary["images"] > 0 and summary["clean_errors"] > 0


def _class(summary, name):
    row = summary["per_class"][name]
    assert row["files"] > 0 and row.get("crash", 0) == 0 and row.get("hang", 0) == 0, row
    return row


def test_deflate_bombs_are_refused_in_bounded_memory(summary):
    row = _class(summary, "dicom/deflate_bomb")
    assert row.get("clean", 0) == row["files"]  # 300 MiB and 1 GiB inflated: refused
    assert summary["peak_rss_mb_by_family"]["dicom"] < 1024


def test_read_frames_inputs_are_clean_errors_or_frames(summary):
    for name in ("frames/missing_field", "frames/odd_field"):
        row = _class(summary, name)
        assert row.get("clean", 0) + row.get("image", 0) == row["files"]


def test_hostile_weight_files_are_refused(summary):
    for name in ("weights/truncate", "weights/oversized_shape", "weights/nan_weights"):
        row = _class(summary, name)
        assert row.get("clean", 0) == row["files"], (name, row)  # never loaded
    _class(summary, "weights/bad_metadata")
    _class(summary, "weights/byte_flip")
    assert summary["peak_rss_mb_by_family"]["weights"] < 1024


def test_hostile_yaml_specs_are_refused(summary):
    for name in ("yaml/alias_bomb", "yaml/deep_nesting", "yaml/huge"):
        row = _class(summary, name)
        assert row.get("clean", 0) == row["files"], (name, row)
    _class(summary, "yaml/byte_flip")
    assert summary["peak_worker_rss_mb"] < 1024


def test_same_seed_same_files():
    tmp = Path(tempfile.mkdtemp())
    seeds = fuzz.make_seeds(tmp / "seeds")
    again = fuzz.make_seeds(tmp / "again")
    assert [s[2] for s in seeds] == [s[2] for s in again]
    for index in (0, 5, 17, 40, 333):
        assert fuzz.make_case(seeds, 7, index) == fuzz.make_case(again, 7, index)
    assert fuzz.make_case(seeds, 7, 0) != fuzz.make_case(seeds, 8, 0)


def test_unmutated_seeds_mostly_decode(tmp_path):
    seeds = fuzz.make_seeds(tmp_path / "seeds")
    images = 0
    for i, (family, suffix, data) in enumerate(seeds):
        path = tmp_path / f"seed{i}{suffix}"
        path.write_bytes(data)
        result = fuzz.check_file(path, family)
        assert result["status"] in ("image", "clean"), result
        images += result["status"] == "image"
    assert images >= len(seeds) - 2  # JPEG-lossy.dcm needs GDCM, which is not installed
