"""Drawing code for the synthetic CT phantoms, in Hounsfield units (numpy + scipy.ndimage).

Two phantoms, both sampled in millimetres and rasterised at any matrix size:

* a head (axial slices from the skull base to near the vertex): scalp, skull with cortical
  tables and diploe, grey-matter ribbon over white matter, sulci and the interhemispheric
  fissure filled with CSF, lateral and third ventricles, basal cisterns, and the five
  haemorrhage subtypes of the RSNA challenge where radiologists look for them:

  ================  ===========================================  =============
  subtype           shape and place                              HU (acute)
  ================  ===========================================  =============
  epidural          lentiform (biconvex), short, thick, against  58-85
                    the inner table of the skull
  subdural          crescent, long and thin, along the inner     55-80
                    table (follows the brain surface)
  intraparenchymal  irregular blob deep or lobar in the          58-85
                    parenchyma, with a hypodense oedema rim
  intraventricular  dependent (posterior) part of a lateral      55-80
                    ventricle, with a fluid level
  subarachnoid      thin, in the sulci of a sector of the        58-82
                    convexity, plus the basal cisterns or the
                    interhemispheric fissure
  ================  ===========================================  =============

* an abdomen at kidney level: body outline with subcutaneous fat, muscle, liver, spine,
  psoas muscles, kidneys with renal sinus fat, bowel gas, and optional small calcified stones
  (300-1200 HU) of a controlled diameter in pixels inside the kidneys.

Geometry is in the patient frame: image x = patient left-right (patient's right on the image
left, radiological convention), image y = anterior (top) to posterior (bottom), so "dependent"
(supine patient) is the bottom of the image. A lesion is drawn on a slice only where its
cross-section covers at least ``min_lesion_mm2`` (so a positive label always has visible blood),
and the label of a slice is exactly "its mask for that subtype is non-empty".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")

AIR_HU = -1000.0
OUTSIDE_FOV_HU = -2000.0  # what many CT scanners store outside the reconstruction circle
CSF_HU = 7.0
GREY_HU = 38.0
WHITE_HU = 28.0

# smallest cross-section (mm^2) a lesion must have on a slice to be drawn and labelled there
MIN_LESION_MM2 = 20.0


# --------------------------------------------------------------------------------------------
# head phantom


@dataclass
class Lesion:
    """One haemorrhage: its subtype, the slice range it spans, and shape parameters."""

    kind: str
    z_center: float  # in normalised head height (0 = skull base, 1 = vertex)
    z_half: float
    params: dict = field(default_factory=dict)

    def scale(self, z: float) -> float:
        """Cross-section scale at height z: 0 outside the lesion, 0.55..1 inside."""
        t = (z - self.z_center) / self.z_half
        if abs(t) >= 1.0:
            return 0.0
        return 0.55 + 0.45 * float(np.sqrt(1.0 - t * t))


@dataclass
class HeadPatient:
    """Anatomy and scanner parameters of one phantom patient (all lengths in mm)."""

    fov_mm: float
    center: tuple[float, float]
    angle: float  # in-plane head rotation, radians
    axes: tuple[float, float]  # inner-table semi-axes (left-right, anterior-posterior)
    skull_mm: float
    scalp_mm: float
    ventricle_scale: float
    sulci: np.ndarray  # sulcal angles (radians) at z = 0
    sulci_len: np.ndarray  # sulcal depths (mm)
    sulci_drift: np.ndarray  # how each sulcus turns with height
    noise_hu: float
    z_range: tuple[float, float]  # normalised heights of the first and last slice
    lesions: list[Lesion]


def sample_head_patient(
    rng: np.random.Generator,
    *,
    n_slices: int,
    p_normal: float = 0.3,
) -> HeadPatient:
    """Draw one patient's anatomy and haemorrhages (``p_normal``: chance of none at all)."""
    n_sulci = int(rng.integers(26, 34))
    sulci = np.sort((np.arange(n_sulci) + rng.uniform(-0.3, 0.3, n_sulci)) * 2 * np.pi / n_sulci)
    patient = HeadPatient(
        fov_mm=float(rng.uniform(205.0, 235.0)),
        center=(float(rng.uniform(-8, 8)), float(rng.uniform(-8, 8))),
        angle=float(np.deg2rad(rng.uniform(-10, 10))),
        axes=(float(rng.uniform(62, 70)), float(rng.uniform(80, 88))),
        skull_mm=float(rng.uniform(5.5, 8.0)),
        scalp_mm=float(rng.uniform(4.0, 6.5)),
        ventricle_scale=float(rng.uniform(0.85, 1.3)),
        sulci=sulci,
        sulci_len=rng.uniform(9.0, 18.0, n_sulci),
        sulci_drift=rng.uniform(-0.25, 0.25, n_sulci),
        noise_hu=float(rng.uniform(3.0, 6.0)),
        z_range=(float(rng.uniform(0.05, 0.15)), float(rng.uniform(0.82, 0.92))),
        lesions=[],
    )
    if n_slices < 1:
        raise ValueError(f"slices must be at least 1, got {n_slices}.")
    if rng.random() >= p_normal:
        n_kinds = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        kinds = rng.choice(len(SUBTYPES), size=n_kinds, replace=False)
        for k in sorted(kinds):
            patient.lesions.append(_sample_lesion(rng, SUBTYPES[k], patient))
    return patient


def _sample_lesion(rng: np.random.Generator, kind: str, p: HeadPatient) -> Lesion:
    z0, z1 = p.z_range
    span = z1 - z0
    if kind == "intraventricular":  # only where the lateral ventricles are
        zc, zh = rng.uniform(0.45, 0.6), rng.uniform(0.15, 0.25)
    elif kind == "subarachnoid":
        zc, zh = rng.uniform(z0 + 0.2 * span, z0 + 0.8 * span), rng.uniform(0.25, 0.45)
    else:
        zc, zh = rng.uniform(z0 + 0.2 * span, z0 + 0.8 * span), rng.uniform(0.18, 0.35)
    lesion = Lesion(kind=kind, z_center=float(zc), z_half=float(zh))
    side = float(rng.choice([-1.0, 1.0]))
    if kind == "epidural":
        # mostly temporal/parietal (lateral), sometimes frontal or occipital
        phi = rng.choice([0.0, np.pi]) + rng.uniform(-0.9, 0.9)
        lesion.params = dict(
            phi=float(phi),
            half_len=float(rng.uniform(15, 24)),
            thick=float(rng.uniform(14, 21)),
            hu=float(rng.uniform(62, 80)),
        )
    elif kind == "subdural":
        phi = rng.choice([0.0, np.pi]) + rng.uniform(-0.5, 0.5)
        lesion.params = dict(
            phi=float(phi),
            half_len=float(rng.uniform(60, 95)),
            thick=float(rng.uniform(5.5, 10)),
            hu=float(rng.uniform(58, 76)),
        )
    elif kind == "intraparenchymal":
        deep = rng.random() < 0.5
        if deep:  # basal ganglia / thalamus, lateral to the ventricles
            u, v = side * rng.uniform(18, 28), rng.uniform(-10, 15)
        else:  # lobar
            ang = rng.uniform(0, 2 * np.pi)
            rad = rng.uniform(0.35, 0.55)
            u, v = rad * p.axes[0] * np.cos(ang), rad * p.axes[1] * np.sin(ang)
        lesion.params = dict(
            u=float(u),
            v=float(v),
            radius=float(rng.uniform(9, 17)),
            harm=rng.uniform(0.05, 0.18, 2).tolist(),
            phase=rng.uniform(0, 2 * np.pi, 2).tolist(),
            edema=float(rng.uniform(2.5, 5.0)),
            hu=float(rng.uniform(62, 80)),
        )
    elif kind == "intraventricular":
        both = rng.random() < 0.5
        lesion.params = dict(
            sides=[-1.0, 1.0] if both else [side],
            fill=float(rng.uniform(0.5, 1.0)),
            hu=float(rng.uniform(58, 76)),
        )
    elif kind == "subarachnoid":
        lesion.params = dict(
            phi=float(rng.uniform(0, 2 * np.pi)),
            half_width=float(rng.uniform(0.9, 1.6)),
            width=float(rng.uniform(2.4, 3.4)),
            fissure=bool(rng.random() < 0.5),
            hu=float(rng.uniform(62, 78)),
        )
    else:  # pragma: no cover - kinds come from SUBTYPES
        raise ValueError(f"unknown haemorrhage subtype {kind!r}")
    return lesion


def slice_heights(patient: HeadPatient, n_slices: int) -> np.ndarray:
    """Normalised heights (0 skull base .. 1 vertex) of a patient's slices, bottom to top."""
    z0, z1 = patient.z_range
    if n_slices == 1:
        return np.array([(z0 + z1) / 2])
    return np.linspace(z0, z1, n_slices)


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def _nearest_sulcus(patient, z, phi, depth, local_r):
    """Per pixel: tangential distance (mm) to the nearest sulcus, and that sulcus's depth."""
    ang = np.sort(_wrap(patient.sulci + patient.sulci_drift * z * 4.0))
    order = np.argsort(_wrap(patient.sulci + patient.sulci_drift * z * 4.0))
    lengths = patient.sulci_len[order]
    k = len(ang)
    hi = np.searchsorted(ang, phi) % k
    lo = (hi - 1) % k
    best_t = np.full(phi.shape, np.inf)
    best_len = np.zeros(phi.shape)
    for cand in (lo, hi):
        wiggle = 0.6 * np.sin(depth * 0.5 + order[cand])
        t = np.abs(_wrap(phi - ang[cand]) * local_r + wiggle)
        better = t < best_t
        best_t = np.where(better, t, best_t)
        best_len = np.where(better, lengths[cand], best_len)
    return best_t, best_len


def render_head_slice(
    patient: HeadPatient, z: float, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One axial slice at height ``z``: (HU float32 [size, size], {subtype: bool mask}).

    Masks hold only subtypes drawn on this slice (cross-section >= MIN_LESION_MM2).
    """
    sp = patient.fov_mm / size
    idx = (np.arange(size) + 0.5 - size / 2) * sp
    x, y = np.meshgrid(idx, idx)  # x: columns (left-right), y: rows (anterior -> posterior)
    x, y = x - patient.center[0], y - patient.center[1]
    ca, sa = np.cos(patient.angle), np.sin(patient.angle)
    u, v = ca * x + sa * y, -sa * x + ca * y  # head frame

    # the head narrows above mid-height
    s = float(np.sqrt(max(0.0, 1.0 - (max(z - 0.45, 0.0) / 0.8) ** 2)))
    a_in, b_in = patient.axes[0] * s, patient.axes[1] * s
    rho = np.sqrt((u / a_in) ** 2 + (v / b_in) ** 2)
    phi = np.arctan2(v / b_in, u / a_in)
    local_r = np.sqrt((a_in * np.cos(phi)) ** 2 + (b_in * np.sin(phi)) ** 2)
    depth = (1.0 - rho) * local_r  # mm inside the inner table (negative: skull, scalp, air)

    hu = np.full((size, size), AIR_HU, dtype=np.float64)
    t = patient.skull_mm
    scalp = (depth < -t) & (depth >= -t - patient.scalp_mm)
    hu[scalp] = 35.0
    hu[scalp & (depth < -t - 0.55 * patient.scalp_mm)] = -90.0  # subcutaneous fat
    skull = (depth < 0) & (depth >= -t)
    rel = -depth / t  # 0 inner table .. 1 outer table
    hu[skull] = np.where((rel[skull] < 0.3) | (rel[skull] > 0.7), 1350.0, 650.0)
    brain = depth >= 0
    hu[brain] = WHITE_HU
    hu[brain & (depth < 5.0)] = GREY_HU

    # deep grey nuclei at mid height
    if 0.3 <= z <= 0.6:
        for side in (-1.0, 1.0):
            nuc = ((u - side * 20) / 7.0) ** 2 + ((v - 2) / 12.0) ** 2 < 1.0
            hu[nuc & brain] = 36.0

    # CSF: a thin rim over the brain, sulci, interhemispheric fissure
    csf = brain & (depth < 1.0)
    tang, sul_len = _nearest_sulcus(patient, z, phi, depth, local_r)
    csf |= (tang < 0.7) & (depth < sul_len)
    fissure = brain & (np.abs(u) < 0.9) & (np.abs(v) > 0.55 * b_in)
    csf |= fissure

    # ventricles (lateral at mid height, third lower) and basal cisterns at the base
    vs = patient.ventricle_scale
    lat_vent = np.zeros_like(brain)
    vz = (z - 0.52) / 0.2
    if abs(vz) < 1.0:
        f = np.sqrt(1 - vz * vz)
        for side in (-1.0, 1.0):
            cu, cv = side * (5.0 + 2.5 * vs), -4.0
            th = -side * np.deg2rad(14.0)  # horns diverge posteriorly
            du, dv = u - cu, v - cv
            pu, pv = np.cos(th) * du + np.sin(th) * dv, -np.sin(th) * du + np.cos(th) * dv
            lat_vent |= (pu / (4.5 * vs * f + 1.0)) ** 2 + (pv / (22.0 * vs * f + 2.0)) ** 2 < 1.0
    third = (np.abs(u) < 1.6 * vs) & (np.abs(v - 4.0) < 10.0) if 0.25 <= z <= 0.42 else None
    cistern = None
    if z < 0.3:
        r_mb = np.sqrt(u**2 + (v - 12.0) ** 2)
        cistern = brain & (((r_mb > 11.0) & (r_mb < 15.0)) | ((np.abs(u) < 9) & (v > -8) & (v < 0)))
        csf |= cistern
    csf |= lat_vent
    if third is not None:
        csf |= third & brain
    hu[csf & brain] = CSF_HU

    # haemorrhages
    masks: dict[str, np.ndarray] = {}
    min_px = MIN_LESION_MM2 / (sp * sp)
    for lesion in patient.lesions:
        f = lesion.scale(z)
        if f <= 0:
            continue
        pr = lesion.params
        extra = None
        if lesion.kind in ("epidural", "subdural"):
            d_ang = _wrap(phi - pr["phi"])
            along = d_ang * local_r / (pr["half_len"] * f)
            if lesion.kind == "epidural":  # biconvex lens
                prof = pr["thick"] * f * np.clip(1 - along**2, 0, None)
            else:  # crescent: flat, tapering at the ends
                prof = pr["thick"] * f * np.clip(1 - along**2, 0, None) ** 0.3
            m = brain & (np.abs(along) < 1) & (depth < prof)
        elif lesion.kind == "intraparenchymal":
            du, dv = u - pr["u"], v - pr["v"]
            ang = np.arctan2(dv, du)
            r_edge = (
                pr["radius"]
                * f
                * (
                    1
                    + pr["harm"][0] * np.sin(2 * ang + pr["phase"][0])
                    + pr["harm"][1] * np.sin(3 * ang + pr["phase"][1])
                )
            )
            dist = np.sqrt(du**2 + dv**2)
            m = brain & (depth > 4.0) & (dist < r_edge) & ~lat_vent
            extra = brain & ~csf & (dist >= r_edge) & (dist < r_edge + pr["edema"])
        elif lesion.kind == "intraventricular":
            m = np.zeros_like(brain)
            for side in pr["sides"]:
                half = lat_vent & ((u * side) > 0)
                if half.any():
                    vv = v[half]
                    level = vv.max() - pr["fill"] * (vv.max() - vv.min())
                    m |= half & (v >= level)
        else:  # subarachnoid
            in_sector = np.abs(_wrap(phi - pr["phi"])) < pr["half_width"] * min(1.0, f + 0.2)
            m = brain & in_sector & (tang < pr["width"] / 2) & (depth < sul_len + 3.0)
            if cistern is not None:
                m |= cistern
            if pr["fissure"]:
                m |= brain & (np.abs(u) < 1.6) & (v < -0.4 * b_in)
        if m.sum() < min_px:
            continue
        if extra is not None:
            hu[extra & ~np.logical_or.reduce([*masks.values(), m])] = 19.0
        hu[m] = pr["hu"]
        masks[lesion.kind] = masks[lesion.kind] | m if lesion.kind in masks else m

    # clot texture, scanner blur and noise
    if masks:
        union = np.logical_or.reduce(list(masks.values()))
        tex = ndimage.gaussian_filter(rng.standard_normal((size, size)), 2.0 / sp)
        tex *= 4.0 / (tex.std() + 1e-9)
        hu[union] += np.clip(tex[union], -6, 6)
    hu = ndimage.gaussian_filter(hu, 0.5 / sp)  # ~0.5 mm point-spread function
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.6)
    hu += noise * (patient.noise_hu / (noise.std() + 1e-9))
    gx, gy = np.meshgrid(idx, idx)
    hu[np.hypot(gx, gy) > 0.5 * patient.fov_mm] = OUTSIDE_FOV_HU  # outside the scan circle
    return hu.astype(np.float32), masks


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
