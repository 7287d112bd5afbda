"""Drawing code for the synthetic CT phantoms, in Hounsfield units (numpy + scipy.ndimage).

Two phantoms, both sampled in millimetres and rasterised at any matrix size:

* a head (axial slices from the skull base to near the vertex) with the five haemorrhage
  subtypes of the RSNA challenge: :mod:`pipelines.head_phantom`, whose names are importable
  from here too;

* an abdomen at kidney level: body outline with subcutaneous fat, muscle, liver, spine,
  psoas muscles, kidneys with renal sinus fat, bowel gas, and optional small calcified stones
  (300-1200 HU) of a controlled diameter in pixels inside the kidneys.

The claim phantoms are drawn on them: a small-lesion sweep (kidney stones of a chosen diameter
among calcified-vessel distractors, for the edge-conservative claim) and muscle ultrasound
speckle (for the soft-thresholding claim).

Geometry is in the patient frame: image x = patient left-right (patient's right on the image
left, radiological convention), image y = anterior (top) to posterior (bottom), so "dependent"
(supine patient) is the bottom of the image. A lesion is drawn on a slice only where its
cross-section covers at least ``min_lesion_mm2`` (so a positive label always has visible blood),
and the label of a slice is exactly "its mask for that subtype is non-empty".
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipelines.head_phantom import (
    AIR_HU,
    CSF_HU,
    GREY_HU,
    MIN_LESION_MM2,
    OUTSIDE_FOV_HU,
    SUBTYPES,
    WHITE_HU,
    HeadPatient,
    Lesion,
    render_head_slice,
    sample_head_patient,
    slice_heights,
)

__all__ = [
    "AIR_HU", "CSF_HU", "GREY_HU", "MIN_LESION_MM2", "OUTSIDE_FOV_HU", "SUBTYPES", "WHITE_HU",
    "HeadPatient", "Lesion", "render_abdomen_slice", "render_head_slice",
    "render_small_lesion_slice", "render_speckle_slice", "sample_head_patient", "slice_heights",
    "small_lesion_set", "speckle_set",
]


# --------------------------------------------------------------------------------------------
# abdomen phantom (kidney level)


def _ellipse(x, y, cx, cy, ax, ay, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    pu, pv = c * dx + s * dy, -s * dx + c * dy
    return (pu / ax) ** 2 + (pv / ay) ** 2 < 1.0


def render_abdomen_slice(
    rng: np.random.Generator,
    size: int,
    *,
    stones: int = 0,
    stone_size: tuple[int, int] = (2, 5),
) -> tuple[np.ndarray, np.ndarray]:
    """One axial abdominal slice at kidney level: (HU float32 [size, size], stone mask bool).

    ``stones`` calcified stones (300-1200 HU) are placed inside the kidneys, each a disc whose
    diameter in pixels is drawn uniformly from ``stone_size`` (inclusive). Any slice may also
    carry small calcifications in the aortic wall, so "a bright dot" alone is not a stone.
    """
    lo, hi = int(stone_size[0]), int(stone_size[1])
    if lo < 1 or hi < lo:
        raise ValueError(
            f"stone_size must be (min, max) pixel diameters with 1 <= min <= max, "
            f"got {stone_size!r}."
        )
    fov = float(rng.uniform(340.0, 400.0))
    sp = fov / size
    idx = (np.arange(size) + 0.5 - size / 2) * sp
    x, y = np.meshgrid(idx, idx)
    x = x - rng.uniform(-10, 10)
    y = y - rng.uniform(-10, 10)

    bx, by = rng.uniform(140, 170), rng.uniform(105, 125)
    hu = np.full((size, size), AIR_HU)
    body = _ellipse(x, y, 0, 0, bx, by)
    fat_mm = rng.uniform(10, 25)
    hu[body] = -100.0
    inner = _ellipse(x, y, 0, 0, bx - fat_mm, by - fat_mm)
    hu[inner] = 50.0  # abdominal wall muscle
    cavity = _ellipse(x, y, 0, 0, bx - fat_mm - 8, by - fat_mm - 8)
    hu[cavity] = -85.0  # intra-abdominal fat
    # liver on the image left (patient's right), bowel loops anteriorly
    liver = cavity & _ellipse(x, y, -bx * 0.45, -by * 0.15, bx * 0.5, by * 0.6, 0.3)
    hu[liver] = rng.uniform(55, 65)
    for _ in range(int(rng.integers(5, 10))):
        cx, cy = rng.uniform(-0.6, 0.6) * bx, rng.uniform(-0.75, 0.0) * by
        loop = (
            cavity
            & ~liver
            & _ellipse(x, y, cx, cy, rng.uniform(10, 22), rng.uniform(8, 16), rng.uniform(0, np.pi))
        )
        hu[loop] = 25.0 if rng.random() < 0.5 else -900.0
    # spine, psoas, aorta
    sy = by * 0.45
    hu[_ellipse(x, y, 0, sy, 21, 19)] = 700.0
    hu[_ellipse(x, y, 0, sy, 17, 15)] = rng.uniform(200, 280)
    hu[_ellipse(x, y, 0, sy + 26, 7, 6)] = 15.0  # spinal canal
    hu[_ellipse(x, y, 0, sy + 40, 8, 12) & ~_ellipse(x, y, 0, sy + 26, 7, 6)] = 600.0
    for side in (-1, 1):
        hu[cavity & _ellipse(x, y, side * 33, sy - 2, 14, 20)] = 50.0
    ao_x, ao_y = 12.0, sy - 32
    hu[_ellipse(x, y, ao_x, ao_y, 11, 11)] = 40.0
    if rng.random() < 0.35:  # aortic wall calcification (a bright dot that is not a stone)
        t = rng.uniform(0, 2 * np.pi)
        r = 10.0
        hu[np.hypot(x - ao_x - r * np.cos(t), y - ao_y - r * np.sin(t)) < 1.6 * sp] = 700.0
    # kidneys: bean shapes with medial sinus fat
    kidney = np.zeros_like(body)
    for side in (-1, 1):
        kx, ky = side * rng.uniform(60, 72), sy + rng.uniform(-8, 5)
        ang = side * np.deg2rad(rng.uniform(15, 30))
        ax, ay = rng.uniform(24, 30), rng.uniform(34, 44)
        k = cavity & _ellipse(x, y, kx, ky, ax, ay, ang)
        sinus = k & _ellipse(x, y, kx - side * ax * 0.55, ky, ax * 0.45, ay * 0.4, ang)
        hu[k] = rng.uniform(28, 38)
        hu[sinus] = -60.0
        kidney |= k
    mask = np.zeros((size, size), dtype=bool)
    if stones:
        ii, jj = np.mgrid[0:size, 0:size]
        for _ in range(int(stones)):
            d = int(rng.integers(lo, hi + 1))
            r = d / 2.0
            margin = int(np.ceil(r)) + 1
            # stone centre: a pixel centre (odd d) or a pixel corner (even d), inside a kidney
            core = ndimage.binary_erosion(kidney, iterations=margin) if margin > 0 else kidney
            cand = np.argwhere(core)
            if len(cand) == 0:
                cand = np.argwhere(kidney)
            ci, cj = cand[int(rng.integers(len(cand)))]
            off = 0.0 if d % 2 else -0.5
            disc = (ii - (ci + off)) ** 2 + (jj - (cj + off)) ** 2 <= r * r  # d pixels across
            hu[disc] = rng.uniform(400, 1200)
            mask |= disc
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.5)
    hu += noise * (rng.uniform(8, 14) / (noise.std() + 1e-9))
    hu[np.hypot(*np.meshgrid(idx, idx)) > 0.5 * fov] = OUTSIDE_FOV_HU
    return hu.astype(np.float32), mask


# --------------------------------------------------------------------------------------------
# small-lesion sweep (kidney stones with calcified-vessel distractors), for the
# edge-conservative claim: every positive image has one stone of a chosen diameter


def _vessel_calcifications(rng, hu, size, count):
    """Draw ``count`` calcified vessel walls: thin curved arcs (1 px, 300-700 HU, 6-14 px long)
    anywhere in the body. Returns their mask. A bright spot alone is not a stone."""
    drawn = np.zeros((size, size), dtype=bool)
    body = np.argwhere(hu > -200.0)
    for _ in range(int(count)):
        ci, cj = body[int(rng.integers(len(body)))]
        radius = rng.uniform(3.0, 8.0)
        start = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(6.0, 14.0)  # pixels along the arc
        t = start + np.linspace(0.0, length / radius, int(length * 3))
        ii = np.rint(ci + radius * (np.sin(t) - np.sin(start))).astype(int)
        jj = np.rint(cj + radius * (np.cos(t) - np.cos(start))).astype(int)
        ok = (ii >= 0) & (ii < size) & (jj >= 0) & (jj < size)
        drawn[ii[ok], jj[ok]] = True
    hu[drawn] = rng.uniform(300.0, 700.0)
    return drawn


def render_small_lesion_slice(rng, size: int, *, diameter: int = 0, vessels: int = 3):
    """An abdominal slice (:func:`render_abdomen_slice`) with one stone of exactly ``diameter``
    pixels (0: none) and 0..``vessels`` calcified vessel arcs as distractors on every slice.

    Returns (HU float32 [size, size], stone mask bool, distractor mask bool).
    """
    d = int(diameter)
    hu, mask = render_abdomen_slice(rng, size, stones=1 if d else 0, stone_size=(max(d, 1),) * 2)
    distract = _vessel_calcifications(rng, hu, size, int(rng.integers(0, vessels + 1)))
    distract &= ~mask
    return hu, mask, distract


def small_lesion_set(n: int, size: int = 48, *, diameters=tuple(range(1, 9)),
                     positive_fraction: float = 0.5, vessels: int = 3, seed: int = 0) -> dict:
    """``n`` abdominal slices, about ``positive_fraction`` with one kidney stone; the stone
    diameters (pixels at ``size``) cycle through ``diameters`` so each size is equally common.

    Returns numpy arrays: ``x`` float32 [n, size, size, 1] (abdomen window 40/400 scaled to
    [0, 1]), ``y`` int [n] (1 = stone), ``mask`` bool [n, size, size] (the stone),
    ``distractor`` bool [n, size, size] (the vessel calcifications) and ``diameter`` int [n]
    (0 for a negative). Deterministic in ``seed``.
    """
    if not diameters or any(int(d) < 1 or int(d) > size // 4 for d in diameters):
        raise ValueError(f"diameters must be pixel sizes in 1..size/4 ({size // 4}), got "
                         f"{tuple(diameters)!r}.")
    if not 0.0 < float(positive_fraction) < 1.0:
        raise ValueError(f"positive_fraction must be in (0, 1), got {positive_fraction!r}.")
    n_pos = int(round(n * float(positive_fraction)))
    order = np.random.default_rng([seed, 7]).permutation(n)
    diameter = np.zeros(n, dtype=int)
    diameter[order[:n_pos]] = np.resize(np.asarray(diameters, dtype=int), n_pos)
    x = np.zeros((n, size, size, 1), np.float32)
    masks = np.zeros((n, size, size), bool)
    distract = np.zeros((n, size, size), bool)
    for i, child in enumerate(np.random.SeedSequence([seed, 8]).spawn(n)):
        hu, masks[i], distract[i] = render_small_lesion_slice(
            np.random.default_rng(child), size, diameter=int(diameter[i]), vessels=vessels)
        x[i, ..., 0] = np.clip((hu - (40.0 - 200.0)) / 400.0, 0.0, 1.0)
    return {"x": x, "y": (diameter > 0).astype(int), "mask": masks, "distractor": distract,
            "diameter": diameter}


# --------------------------------------------------------------------------------------------
# muscle ultrasound speckle, for the soft-thresholding claim


def _blur(a, sigma):
    return ndimage.gaussian_filter(a, sigma, mode="wrap")


def render_speckle_slice(rng, size: int, *, myositis: bool, noise: float = 0.0,
                         noise_rng=None) -> np.ndarray:
    """A B-mode-like muscle ultrasound patch in [0, 1]-ish grey levels, float32 [size, size].

    Tissue: a bright fascia line near the top, then muscle with oblique fibrous septa. Normal
    muscle is dark (low echo intensity) with clear septa; myositic muscle is brighter (raised
    echo intensity), with faded septa and patchy low-frequency heterogeneity. The two classes'
    ranges overlap. Fully developed speckle multiplies the reflectivity (Rayleigh amplitude of a
    complex Gaussian field blurred by an axially elongated PSF), followed by log compression.
    ``noise``: standard deviation of additive Gaussian noise on the final image (electronic
    noise), drawn from ``noise_rng`` (default: a generator seeded from ``rng``) so the same
    patch can be rendered at several noise levels.
    """
    ii, jj = np.mgrid[0:size, 0:size].astype(float) / size
    if myositis:
        echo, septa, hetero = rng.uniform(0.32, 0.50), rng.uniform(0.0, 0.35), rng.uniform(0.08, 0.25)
    else:
        echo, septa, hetero = rng.uniform(0.22, 0.40), rng.uniform(0.25, 0.6), rng.uniform(0.0, 0.12)
    angle = rng.uniform(-0.5, 0.5)
    period = rng.uniform(0.12, 0.22)
    phase = rng.uniform(0, 2 * np.pi)
    u = ii * np.cos(angle) + jj * np.sin(angle)
    stripes = np.clip(np.cos(2 * np.pi * u / period + phase), 0, None) ** 6  # thin bright septa
    patches = _blur(rng.standard_normal((size, size)), size / 10.0)
    patches /= patches.std() + 1e-9
    refl = echo * (1.0 + hetero * patches) + septa * 0.5 * stripes
    fascia = rng.uniform(0.08, 0.16)
    refl = refl + 0.8 * np.exp(-(((ii - fascia) * size / 1.2) ** 2))
    refl = np.clip(refl, 0.01, None)
    field = _blur(rng.standard_normal((size, size)), (1.2, 0.6)) + 1j * _blur(
        rng.standard_normal((size, size)), (1.2, 0.6))
    amp = np.abs(field)
    amp /= amp.mean() + 1e-9
    img = np.log1p(6.0 * refl * amp) / np.log1p(6.0 * 2.0)  # log compression, ~[0, 1]
    if noise:
        noise_rng = noise_rng or np.random.default_rng(int(rng.integers(2**32)))
        img = img + float(noise) * noise_rng.standard_normal((size, size))
    return img.astype(np.float32)


def speckle_set(n: int, size: int = 48, *, noise: float = 0.0, myositis_fraction: float = 0.5,
                seed: int = 0) -> dict:
    """``n`` muscle-ultrasound patches (:func:`render_speckle_slice`), about
    ``myositis_fraction`` myositic. The same ``seed`` gives the same patches at every ``noise``
    level (only the added noise changes), so a noise sweep compares like with like.

    Returns ``x`` float32 [n, size, size, 1], ``y`` int [n] (1 = myositis), ``noise`` float.
    """
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise ValueError(f"noise must be a standard deviation >= 0, got {noise!r}.")
    n_pos = int(round(n * float(myositis_fraction)))
    y = np.zeros(n, dtype=int)
    y[np.random.default_rng([seed, 9]).permutation(n)[:n_pos]] = 1
    x = np.zeros((n, size, size, 1), np.float32)
    tissue = np.random.SeedSequence([seed, 10]).spawn(n)
    noises = np.random.SeedSequence([seed, 11]).spawn(n)
    for i in range(n):
        x[i, ..., 0] = render_speckle_slice(
            np.random.default_rng(tissue[i]), size, myositis=bool(y[i]), noise=noise,
            noise_rng=np.random.default_rng(noises[i]))
    return {"x": x, "y": y, "noise": float(noise)}
