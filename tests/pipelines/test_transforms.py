"""Window presets, parsing and stacking; 8-bit scaling, channel fixes and resizing."""

import numpy as np
import pytest

from pipelines import transforms
from pipelines.transforms import DEFAULT_CT_WINDOWS, WINDOWS, Window, apply_windows, parse_windows


def test_presets_from_the_contract():
    assert WINDOWS["brain"] == (40, 80)
    assert WINDOWS["subdural"] == (80, 200)
    assert WINDOWS["bone"] == (600, 2800)
    assert WINDOWS["lung"] == (-600, 1500)
    assert WINDOWS["soft_tissue"] == (50, 350)
    assert WINDOWS["abdomen"] == (40, 400)
    assert DEFAULT_CT_WINDOWS == ("brain", "subdural", "bone")


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, ((40, 80), (80, 200), (600, 2800))),
        ("brain,subdural,bone", ((40, 80), (80, 200), (600, 2800))),
        ("40/80, 80/200", ((40, 80), (80, 200))),
        ("Lung,-600/1500", ((-600, 1500), (-600, 1500))),
        (["brain", (1, 2)], ((40, 80), (1, 2))),
        ((40, 80), ((40, 80),)),
        ([Window(5, 6)], ((5, 6),)),
    ],
)
def test_parse_windows(spec, expected):
    parsed = parse_windows(spec)
    assert parsed == tuple(Window(float(c), float(w)) for c, w in expected)
    assert all(isinstance(w, Window) for w in parsed)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("brian", "did you mean brain"),
        ("40/0", "width > 0"),
        ("40/abc", "center/width"),
        ("brain,,bone", "empty window"),
        ([], "no windows"),
    ],
)
def test_parse_windows_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_windows(spec)


def test_format_windows_round_trip():
    text = transforms.format_windows("brain,subdural,bone,10/20")
    assert text == "brain,subdural,bone,10/20"
    assert parse_windows(text) == parse_windows("40/80,80/200,600/2800,10/20")


def test_apply_windows_against_numpy_reference():
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1200, 3000, size=(16, 12)).astype(np.float32)
    out = apply_windows(hu, "brain,bone")
    assert out.shape == (16, 12, 2) and out.dtype == np.float32
    for i, (c, w) in enumerate([(40, 80), (600, 2800)]):
        ref = np.clip((hu - (c - w / 2)) / w, 0, 1)
        np.testing.assert_allclose(out[..., i], ref, rtol=1e-6, atol=1e-6)
    assert out.min() >= 0 and out.max() <= 1


def test_window_edges():
    out = apply_windows(np.array([[0.0, 40.0, 80.0, -1000.0]]), [(40, 80)])
    np.testing.assert_allclose(out[0, :, 0], [0.0, 0.5, 1.0, 0.0])


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8, np.int8])
def test_windows_of_shifted_is_apply_windows_for_every_stored_value(dtype):
    """Every value of the dtype, for integer and fractional window edges, narrow and wide
    windows, and shifts at the edges of exactness: the integer-clip and the float-clip paths
    both give apply_windows' float32 bits (sign of zero included), or decline (None)."""
    info = np.iinfo(dtype)
    stored = np.arange(info.min, info.max + 1).astype(dtype).reshape(-1, 16)
    used = set()
    for shift in (-1024.0, -1000.0, 0.0, 3.0, -32768.0, 0.5):
        for windows in ("brain,subdural,bone", "40.5/81,0.3/0.7,1/3", "-600/1500,50/0.001,7/1e6",
                        "0/1,1000/3,12/7,-1024/2"):
            out = transforms.windows_of_shifted(stored, shift, windows)
            lows = transforms._shifted_lows(stored.dtype.str, shift, parse_windows(windows))
            assert (out is None) == (lows is None)
            if out is None:
                continue
            used.update(bounds is None for _, _, bounds in lows)
            ref = apply_windows(stored.astype(np.float32) + np.float32(shift), windows)
            np.testing.assert_array_equal(out, ref)
            assert np.array_equal(np.signbit(out), np.signbit(ref))
    assert used == {True, False}  # both paths were exercised


def test_apply_windows_rejects_volumes():
    with pytest.raises(ValueError, match="2-D HU image"):
        apply_windows(np.zeros((2, 3, 4)))


def test_to_unit_and_uint8():
    np.testing.assert_allclose(transforms.to_unit(np.array([0, 255], np.uint8)), [0, 1])
    np.testing.assert_allclose(transforms.to_unit(np.array([0, 65535], np.uint16)), [0, 1])
    x = np.array([0.0, 0.5, 1.0, 1.5], np.float32)
    np.testing.assert_array_equal(transforms.to_uint8(x), [0, 128, 255, 255])


def test_resize_preserves_constant_and_range():
    img = np.full((20, 30, 2), 0.25, np.float32)
    out = transforms.resize(img, (8, 12))
    assert out.shape == (8, 12, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    small = transforms.resize(ramp, 16)
    assert small.shape == (16, 16)
    assert np.all(np.diff(small[0]) > 0)  # still increasing left to right
