"""The one preprocessing: what turns a file into the model's input, wherever that happens.

A :class:`Preprocessing` spec is small, serialisable (``preprocessing.json``) and written into
every cache and every export. The same steps run in four places, and a test pins them together:

========================  ==============================================================
where                     how
========================  ==============================================================
prepare (cache writer)    :meth:`Preprocessing.finish` on the adapter's decoded image (NumPy)
``make_dataset``          reads the quantised pixels back: ``uint8 * (1 / 255)``
serving signatures        :func:`tf_decode_image` + :func:`tf_finish` (TensorFlow ops)
``zoo.explain/evaluate``  :func:`load_file` (NumPy, the prepare path) on an original file
========================  ==============================================================

The steps, in order:

1. **decode** (:func:`read_pixels` / :func:`tf_decode_image`): 8-bit values / 255, 16-bit PNG /
   65535, float32. JPEG is decoded with the accurate integer IDCT on both sides (Pillow's
   default; TensorFlow's ``dct_method="INTEGER_ACCURATE"``), so the two decoders agree
   bit for bit. An alpha channel is dropped; a palette is expanded to RGB. DICOM goes through
   :func:`pipelines.dicom.read_hu` and the CT windows instead (one channel per window).
2. **channels** (:func:`to_channels`): grey stays grey; colour to one channel is luminance with
   the ITU-R BT.601 weights (0.299, 0.587, 0.114) applied to the float values (not Pillow's
   rounded integer "L" mode, which no TensorFlow op reproduces); one channel to C repeats it;
   3 channels to 3 keep their colour (or their three CT windows).
3. **resize** (:func:`resize`): bilinear with antialiasing (a triangle filter widened by the
   shrink factor, Pillow's float mode and ``tf.image.resize(antialias=True)``, which agree to
   about 1e-5); skipped when the size already fits. The aspect ratio is not kept: CT slices and
   the public 2-D sets are square or near it, and the models take a fixed grid.
4. **quantise** (:func:`quantize`): values are rounded to k/255 (a half rounds up), which is what
   the cache stores as uint8. Serving applies the same rounding, so a served image is the image
   the model was trained and validated on, not a slightly finer one.

Worker processes import this module without TensorFlow: the ``tf_*`` twins live in
:mod:`pipelines.preprocessing_tf` (re-exported here), which imports it inside each function.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines import dicom, formats, nifti, transforms
from pipelines.formats import IMAGE_SUFFIXES, SERVING_FORMATS  # noqa: F401  (re-exported)
from pipelines.fs import atomic_write_text
from pipelines.manifest import DataError
from pipelines.preprocessing_tf import (
    tf_channels,
    tf_declared_pixels,
    tf_decode_image,
    tf_finish,
    tf_image_format_ok,
    tf_quantize,
    tf_resize,
)
from pipelines.transforms import GREY_WEIGHTS, LEVELS

SPEC_FILE = "preprocessing.json"
SPEC_VERSION = 1
KINDS = ("ct", "image")
# Declared pixels (width x height) above which a DICOM/NIfTI slice is refused before decoding; the
# same limit as pipelines.dicom.MAX_PIXELS (2**27, e.g. 11585 x 11585). Pass ``max_pixels=``.
MAX_PIXELS = 1 << 27
# The decode-memory budget of a picture (PNG, JPEG, ...: pipelines.formats): one declaring more
# pixels than this in its header is refused before a pixel is decoded, by prepare, explain,
# evaluate (read_pixels) and the serving_bytes signature alike. 40 million pixels is a 6300 x 6300
# image; decoding an RGB picture costs at most 24 bytes a declared pixel at its peak (Pillow's
# image, the uint8 array and the float32 array: ~19 measured), under 1 GB at the cap. A compressed
# picture can declare any size in a few hundred bytes, so the header, not the file size, decides.
# Pass ``max_pixels=`` to read a genuinely larger one.
MAX_IMAGE_PIXELS = 40_000_000

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "MAX_PIXELS",
    "SERVING_FORMATS",
    "Preprocessing",
    "read_pixels",
    "to_channels",
    "resize",
    "quantize",
    "dequantize",
    "load_file",
    "tf_channels",
    "tf_declared_pixels",
    "tf_decode_image",
    "tf_finish",
    "tf_image_format_ok",
    "tf_quantize",
    "tf_resize",
]


# --------------------------------------------------------------------------------------------
# The spec


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a file becomes the model input. Frozen, JSON-serialisable, compared by value.

    Args:
        kind: ``"ct"`` (DICOM / NIfTI in Hounsfield units, windowed) or ``"image"`` (8/16-bit
            pictures and arrays).
        size: (height, width) of the model input.
        channels: channels of the model input (the number of windows for CT).
        windows: CT windows as :func:`pipelines.transforms.format_windows` writes them
            (``"brain,subdural,bone"``); None for images.
        resize: ``"bilinear"`` (the only method; named so a reader of the JSON knows).
        antialias: widen the filter when shrinking (True; the cache has always done so).
        levels: values are rounded to k/levels (255: the uint8 cache); 0 turns it off.
    """

    kind: str
    size: tuple[int, int]
    channels: int
    windows: str | None = None
    resize: str = "bilinear"
    antialias: bool = True
    levels: int = LEVELS

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"preprocessing kind {self.kind!r} is unknown; use one of {KINDS}.")
        size = tuple(int(v) for v in self.size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"preprocessing size {self.size!r} must be (height, width) > 0.")
        object.__setattr__(self, "size", size)
        if int(self.channels) < 1:
            raise ValueError(f"preprocessing channels {self.channels!r} must be >= 1.")
        object.__setattr__(self, "channels", int(self.channels))
        if self.kind == "ct":
            windows = transforms.format_windows(self.windows)
            if len(transforms.parse_windows(windows)) != self.channels:
                raise ValueError(
                    f"{self.channels} channels but {len(transforms.parse_windows(windows))} "
                    f"windows ({windows}); a CT input has one channel per window."
                )
            object.__setattr__(self, "windows", windows)
        elif self.windows is not None:
            raise ValueError("windows apply to CT only; pass kind='ct' or windows=None.")
        if self.resize != "bilinear":
            raise ValueError(f"resize {self.resize!r} is not supported; use 'bilinear'.")
        if int(self.levels) < 0:
            raise ValueError(f"levels={self.levels!r} must be 0 (off) or a positive count.")
        object.__setattr__(self, "levels", int(self.levels))

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        return {
            "version": SPEC_VERSION,
            "kind": self.kind,
            "size": list(self.size),
            "channels": self.channels,
            "windows": self.windows,
            "steps": {
                "decode": "8-bit / 255, 16-bit PNG / 65535; JPEG with the accurate integer IDCT; "
                "alpha dropped, palette expanded"
                if self.kind == "image"
                else "DICOM modality LUT to HU (pipelines.dicom.read_hu), then the windows",
                "channels": "colour kept as RGB; grey repeated to 3 planes; alpha dropped, not "
                "composited" if self.kind == "image" and self.channels == 3 else
                "grey kept; colour to 1 channel by BT.601 luma "
                f"{list(GREY_WEIGHTS)} on floats; 1 channel repeated to {self.channels}",
                "resize": {"method": self.resize, "antialias": self.antialias,
                           "to": list(self.size), "skipped_when_size_matches": True},
                "quantize": f"floor(x * {self.levels} + {transforms.ROUND_OFFSET}) / {self.levels}"
                if self.levels else "none",
            },
            "resize": self.resize,
            "antialias": self.antialias,
            "levels": self.levels,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        if not isinstance(data, dict) or "kind" not in data:
            raise ValueError(
                "This preprocessing.json holds no preprocessing spec (no 'kind'); it was written "
                "by an older medzoo: prepare the cache or export the model again."
            )
        version = data.get("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise ValueError(
                f"preprocessing spec version {version!r} is not {SPEC_VERSION}; prepare or "
                "export again with this medzoo."
            )
        return cls(
            kind=data["kind"],
            size=tuple(data["size"]),
            channels=int(data["channels"]),
            windows=data.get("windows"),
            resize=data.get("resize", "bilinear"),
            antialias=bool(data.get("antialias", True)),
            levels=int(data.get("levels", LEVELS)),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, folder) -> Path:
        """Write ``folder/preprocessing.json`` (atomically) and return its path."""
        return atomic_write_text(Path(folder) / SPEC_FILE, self.to_json())

    @classmethod
    def load(cls, path) -> Preprocessing:
        """From a ``preprocessing.json`` file, or a folder holding one."""
        path = Path(path)
        if path.is_dir():
            path = path / SPEC_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist; the cache or export predates the preprocessing spec: "
                "prepare or export it again."
            )
        data = json.loads(path.read_text())
        return cls.from_dict(data.get("spec", data) if isinstance(data, dict) else data)

    def at_size(self, size) -> Preprocessing:
        """The same spec at another input size."""
        return dataclasses.replace(self, size=tuple(size))

    # ---------------------------------------------------------------- the offline path
    def finish(self, image: np.ndarray) -> np.ndarray:
        """A decoded float image (H, W, C') -> uint8 (h, w, channels): channels, resize, round.

        This is what ``prepare`` stores; :func:`dequantize` gives the model input back.
        """
        image = to_channels(image, self.channels)
        image = resize(image, self.size, antialias=self.antialias)
        return transforms.to_uint8(image)

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """A decoded float image -> float32 (h, w, channels), exactly as the model sees it."""
        image = to_channels(image, self.channels)
        image = resize(image, self.size, antialias=self.antialias)
        return quantize(image, self.levels)

    def decode(self, path, *, frame: int | None = None) -> np.ndarray:
        """One file -> the float image before channels/resize (HU windows for CT)."""
        return decode_file(path, self, frame=frame)


# --------------------------------------------------------------------------------------------
# NumPy: the offline implementation (prepare, explain, evaluate)


def read_pixels(path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """An image file -> float32 (H, W, 1) or (H, W, 3) in [0, 1], no resizing.

    8-bit / 255, 16-bit / 65535; grey stays one channel, colour (RGB, palette, CMYK, YCbCr)
    becomes RGB, alpha is dropped. The format is sniffed from the first bytes and must be in
    :data:`pipelines.formats.FORMATS` (Pillow opens it as that format only), whatever the file
    is called. A broken or unknown file raises :class:`DataError`, and so
    does one whose header declares more than ``max_pixels`` pixels: the size is read from the
    header (``Image.open`` is lazy) and the file refused before any pixel is decoded. Pillow's
    own DecompressionBombError is a DataError too.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file does not exist" if not path.exists() else "is not a file")
    fmt = formats.sniff_file(path)  # the content decides, not the name (pipelines.formats)
    if fmt is None:
        raise DataError(path, f"is not a {formats.format_list()} picture (its first bytes match "
                              "none of them, whatever its name says)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning and friends: checked below
            with Image.open(path, formats=[fmt.pillow]) as img:
                width, height = img.size
                if width < 1 or height < 1:
                    raise DataError(path, "image header declares an empty image (width or height 0)")
                if width * height > int(max_pixels):
                    raise DataError(
                        path,
                        f"image header declares more pixels than the limit of {int(max_pixels)}; it "
                        "was refused before decoding (downscale it, or pass max_pixels= from Python to read a "
                        "genuinely large image)",
                    )
                out = _pixels(img)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(path, "is not a readable image (unknown format or corrupt header)") from None
    except Image.DecompressionBombError:
        raise DataError(path, "image header declares more pixels than Pillow's decompression-bomb "
                              "limit; it was refused before decoding") from None
    except MemoryError:
        raise DataError(path, "image is too large to decode in memory") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, ... on junk
        raise DataError(path, f"image data is truncated or corrupt ({type(exc).__name__})") from None
    if not np.all(np.isfinite(out)):
        raise DataError(path, "image has non-finite pixel values (NaN or inf)")
    return np.ascontiguousarray(out, dtype=np.float32)


def _pixels(img) -> np.ndarray:
    """A lazily opened Pillow image -> float32 (H, W, 1|3) in [0, 1] (see :func:`read_pixels`)."""
    img.load()
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float32)
        return np.clip(np.divide(arr, np.float32(65535.0), out=arr), 0.0, 1.0, out=arr)[..., None]
    if mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)[..., None]
    if mode in ("L", "LA", "1"):
        grey = img.convert("L") if mode != "L" else img
        return _scaled(np.asarray(grey, dtype=np.uint8))[..., None]
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
    rgb = img.convert("RGB") if img.mode != "RGB" else img
    return _scaled(np.asarray(rgb, dtype=np.uint8))


def _scaled(pixels: np.ndarray) -> np.ndarray:
    """uint8 -> float32 / 255, divided in place: one float copy of the image, not two (the
    same values as ``pixels.astype(np.float32) / 255``)."""
    out = pixels.astype(np.float32)
    return np.divide(out, np.float32(255.0), out=out)


def _luma(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (np.float32(w) for w in GREY_WEIGHTS)
    return (rgb[..., 0:1] * r + rgb[..., 1:2] * g + rgb[..., 2:3] * b).astype(np.float32)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C') float -> (H, W, channels): the channel rule of the spec.

    1 -> C repeats; 3 -> 3 keeps; 3 -> 1 is BT.601 luma; 3 -> other C is luma repeated.
    2 or 4 channels are taken as grey+alpha / RGBA (alpha dropped). Anything else must already
    have ``channels`` channels.
    """
    image = transforms.ensure_hwc(np.asarray(image, dtype=np.float32))
    c = image.shape[-1]
    if c in (2, 4) and c != channels:
        image, c = image[..., : c - 1], c - 1
    if c == channels:
        return image
    if c == 3:
        image, c = _luma(image), 1
        if channels == 1:
            return image
    if c == 1:
        return np.repeat(image, channels, axis=-1)
    raise ValueError(f"cannot convert a {c}-channel image to {channels} channels")


def resize(image: np.ndarray, size, *, antialias: bool = True) -> np.ndarray:
    """Bilinear resize of a float (H, W, C) image; antialiased (Pillow's float mode)."""
    if not antialias:
        raise ValueError("only the antialiased resize is implemented offline (antialias=True).")
    return transforms.resize(image, size)


def quantize(image: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """Round to k/levels as the uint8 cache does (:func:`pipelines.transforms.to_uint8`: a half
    always rounds up); ``levels=0`` is a no-op."""
    image = np.asarray(image, dtype=np.float32)
    if not levels:
        return image
    if levels != LEVELS:
        scaled = np.clip(image, 0.0, 1.0) * np.float32(levels)
        steps = np.floor(scaled + np.float32(transforms.ROUND_OFFSET))
        return (steps * np.float32(1.0 / levels)).astype(np.float32)
    return dequantize(transforms.to_uint8(image))


def dequantize(pixels: np.ndarray) -> np.ndarray:
    """uint8 cache pixels -> float32 model input (``x * (1 / 255)``, as ``make_dataset``)."""
    return np.asarray(pixels).astype(np.float32) * np.float32(1.0 / LEVELS)


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def decode_file(path, spec: Preprocessing, *, frame: int | None = None,
                max_pixels: int | None = None) -> np.ndarray:
    """One original file -> float32 (H, W, C') before the channel rule, resize and rounding.

    DICOM and NIfTI (CT): Hounsfield units through ``spec.windows``. Pictures: :func:`read_pixels`.
    ``.npy``: uint8 / 255, or floats already in [0, 1] (HU for a CT spec). Raises DataError
    (a bad file, or one declaring more than ``max_pixels`` pixels: by default
    :data:`MAX_PIXELS` for a CT slice, :data:`MAX_IMAGE_PIXELS` for a picture) or ValueError (a file that
    does not fit the spec), naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "does not exist" if not path.exists() else "is not a file")
    name = path.name.lower()
    if _is_dicom(path) or name.endswith((".nii", ".nii.gz")):
        if spec.kind != "ct":
            raise ValueError(
                f"{path} is a CT file but the model takes {spec.channels}-channel pictures; "
                "send a PNG/JPEG, or use a model trained on CT windows."
            )
        ct_pixels = MAX_PIXELS if max_pixels is None else max_pixels
        if name.endswith((".nii", ".nii.gz")):
            return nifti.read_windows(path, 0 if frame is None else frame, spec.windows,
                                      max_pixels=ct_pixels)
        return dicom.read_windows(path, spec.windows, frame=frame, max_pixels=ct_pixels)
    if name.endswith(".npy"):
        array = np.load(path, allow_pickle=False)
        array = transforms.ensure_hwc(array) if array.ndim in (2, 3) else array
        if array.ndim != 3:
            raise ValueError(f"{path} holds an array of shape {array.shape}; save one image "
                             "as (H, W) or (H, W, C).")
        if array.dtype == np.uint8:
            return array.astype(np.float32) / np.float32(255.0)
        array = array.astype(np.float32)
        if spec.kind == "ct" and array.shape[-1] == 1 and not (array.min() >= 0 and array.max() <= 1):
            return transforms.apply_windows(array[..., 0], spec.windows)
        if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(f"{path} holds values outside [0, 1]; save uint8, floats in [0, 1], "
                             "or Hounsfield units (one channel) for a CT model.")
        return array
    if spec.kind == "ct" and not name.endswith(IMAGE_SUFFIXES):
        raise ValueError(f"{path} is neither DICOM, NIfTI, .npy nor a picture.")
    return read_pixels(path, max_pixels=MAX_IMAGE_PIXELS if max_pixels is None else max_pixels)


def load_file(path, spec: Preprocessing, *, frame: int | None = None) -> np.ndarray:
    """One original file -> float32 model input (h, w, channels): the prepare path end to end."""
    image = decode_file(path, spec, frame=frame)
    if not np.all(np.isfinite(image)):
        raise DataError(path, "the decoded image has non-finite values (NaN or inf)")
    try:
        return spec.model_input(image)
    except ValueError as err:
        raise ValueError(f"{path}: {err}; the model takes {spec.channels} channel(s).") from None


def from_cache_info(info: dict) -> Preprocessing:
    """The spec of a prepared cache (``dataset.json``); caches from before the spec existed get
    the one their facts imply (windows -> CT, else pictures)."""
    if info.get("preprocessing"):
        return Preprocessing.from_dict(info["preprocessing"])
    windows = info.get("windows")
    return Preprocessing(kind="ct" if windows else "image", size=tuple(info["image_size"]),
                         channels=int(info["channels"]), windows=windows or None)


def spec_for(*, kind: str, size: Sequence[int], channels: int, windows=None) -> Preprocessing:
    """A spec from the facts a cache or a model knows (``windows`` only for CT)."""
    return Preprocessing(kind=kind, size=tuple(size), channels=channels,
                         windows=windows if kind == "ct" else None)
