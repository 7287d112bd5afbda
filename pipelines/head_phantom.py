"""The synthetic head-CT phantom, in Hounsfield units (numpy + scipy.ndimage).

Sampled in millimetres and rasterised at any matrix size:

a head (axial slices from the skull base to near the vertex): scalp, skull with cortical
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

__all__ = [
    "AIR_HU", "CSF_HU", "GREY_HU", "MIN_LESION_MM2", "OUTSIDE_FOV_HU", "SUBTYPES", "WHITE_HU",
    "HeadPatient", "Lesion", "render_head_slice", "sample_head_patient", "slice_heights",
]

SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")

AIR_HU = -1000.0
OUTSIDE_FOV_HU = -2000.0  # what many CT scanners store outside the reconstruction circle
CSF_HU = 7.0
GREY_HU = 38.0
WHITE_HU = 28.0

# smallest cross-section (mm^2) a lesion must have on a slice to be drawn and labelled there
MIN_LESION_MM2 = 20.0


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
    g = _slice_geometry(patient, z, size)
    hu = _tissues(patient, z, g)
    a = _csf_spaces(patient, z, g)
    hu[a.csf & g.brain] = CSF_HU
    masks = _haemorrhages(patient, z, g, a, hu)
    return _scanner(patient, g, hu, masks, rng), masks


@dataclass
class _SliceGeometry:
    """Per-pixel coordinates of one slice in the head frame (mm)."""

    size: int
    sp: float  # pixel spacing
    idx: np.ndarray  # pixel centres along one axis
    u: np.ndarray  # left-right in the head frame
    v: np.ndarray  # anterior-posterior in the head frame
    b_in: float  # inner-table semi-axis (anterior-posterior) at this height
    phi: np.ndarray  # angle around the inner table
    local_r: np.ndarray  # inner-table radius at that angle
    depth: np.ndarray  # mm inside the inner table (negative: skull, scalp, air)
    brain: np.ndarray  # depth >= 0


@dataclass
class _CsfSpaces:
    """The slice's CSF and the parts of it a haemorrhage follows."""

    csf: np.ndarray
    lat_vent: np.ndarray
    cistern: np.ndarray | None
    tang: np.ndarray  # tangential distance to the nearest sulcus
    sul_len: np.ndarray  # that sulcus's depth


def _slice_geometry(patient: HeadPatient, z: float, size: int) -> _SliceGeometry:
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
    return _SliceGeometry(size=size, sp=sp, idx=idx, u=u, v=v, b_in=b_in, phi=phi,
                          local_r=local_r, depth=depth, brain=depth >= 0)


def _tissues(patient: HeadPatient, z: float, g: _SliceGeometry) -> np.ndarray:
    """Air, scalp, skull (tables and diploe), grey and white matter, deep grey nuclei."""
    depth, brain, u, v = g.depth, g.brain, g.u, g.v
    hu = np.full((g.size, g.size), AIR_HU, dtype=np.float64)
    t = patient.skull_mm
    scalp = (depth < -t) & (depth >= -t - patient.scalp_mm)
    hu[scalp] = 35.0
    hu[scalp & (depth < -t - 0.55 * patient.scalp_mm)] = -90.0  # subcutaneous fat
    skull = (depth < 0) & (depth >= -t)
    rel = -depth / t  # 0 inner table .. 1 outer table
    hu[skull] = np.where((rel[skull] < 0.3) | (rel[skull] > 0.7), 1350.0, 650.0)
    hu[brain] = WHITE_HU
    hu[brain & (depth < 5.0)] = GREY_HU

    # deep grey nuclei at mid height
    if 0.3 <= z <= 0.6:
        for side in (-1.0, 1.0):
            nuc = ((u - side * 20) / 7.0) ** 2 + ((v - 2) / 12.0) ** 2 < 1.0
            hu[nuc & brain] = 36.0
    return hu


def _csf_spaces(patient: HeadPatient, z: float, g: _SliceGeometry) -> _CsfSpaces:
    """A thin rim over the brain, sulci, the interhemispheric fissure, the ventricles (lateral
    at mid height, third lower) and the basal cisterns at the base."""
    brain, depth, u, v = g.brain, g.depth, g.u, g.v
    csf = brain & (depth < 1.0)
    tang, sul_len = _nearest_sulcus(patient, z, g.phi, depth, g.local_r)
    csf |= (tang < 0.7) & (depth < sul_len)
    fissure = brain & (np.abs(u) < 0.9) & (np.abs(v) > 0.55 * g.b_in)
    csf |= fissure

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
    return _CsfSpaces(csf=csf, lat_vent=lat_vent, cistern=cistern, tang=tang, sul_len=sul_len)


def _lesion_mask(lesion: Lesion, f: float, g: _SliceGeometry, a: _CsfSpaces):
    """One haemorrhage's mask on the slice at cross-section scale ``f``, and its oedema rim
    (None but for intraparenchymal)."""
    brain, depth, u, v = g.brain, g.depth, g.u, g.v
    pr = lesion.params
    extra = None
    if lesion.kind in ("epidural", "subdural"):
        d_ang = _wrap(g.phi - pr["phi"])
        along = d_ang * g.local_r / (pr["half_len"] * f)
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
        m = brain & (depth > 4.0) & (dist < r_edge) & ~a.lat_vent
        extra = brain & ~a.csf & (dist >= r_edge) & (dist < r_edge + pr["edema"])
    elif lesion.kind == "intraventricular":
        m = np.zeros_like(brain)
        for side in pr["sides"]:
            half = a.lat_vent & ((u * side) > 0)
            if half.any():
                vv = v[half]
                level = vv.max() - pr["fill"] * (vv.max() - vv.min())
                m |= half & (v >= level)
    else:  # subarachnoid
        in_sector = np.abs(_wrap(g.phi - pr["phi"])) < pr["half_width"] * min(1.0, f + 0.2)
        m = brain & in_sector & (a.tang < pr["width"] / 2) & (depth < a.sul_len + 3.0)
        if a.cistern is not None:
            m |= a.cistern
        if pr["fissure"]:
            m |= brain & (np.abs(u) < 1.6) & (v < -0.4 * g.b_in)
    return m, extra


def _haemorrhages(patient: HeadPatient, z: float, g: _SliceGeometry, a: _CsfSpaces,
                  hu: np.ndarray) -> dict[str, np.ndarray]:
    """Draw the patient's haemorrhages that reach this slice into ``hu``; their masks."""
    masks: dict[str, np.ndarray] = {}
    min_px = MIN_LESION_MM2 / (g.sp * g.sp)
    for lesion in patient.lesions:
        f = lesion.scale(z)
        if f <= 0:
            continue
        m, extra = _lesion_mask(lesion, f, g, a)
        if m.sum() < min_px:
            continue
        if extra is not None:
            hu[extra & ~np.logical_or.reduce([*masks.values(), m])] = 19.0
        hu[m] = lesion.params["hu"]
        masks[lesion.kind] = masks[lesion.kind] | m if lesion.kind in masks else m
    return masks


def _scanner(patient: HeadPatient, g: _SliceGeometry, hu: np.ndarray, masks,
             rng: np.random.Generator) -> np.ndarray:
    """Clot texture, scanner blur and noise, and the scan circle: the finished float32 HU."""
    size, sp = g.size, g.sp
    if masks:
        union = np.logical_or.reduce(list(masks.values()))
        tex = ndimage.gaussian_filter(rng.standard_normal((size, size)), 2.0 / sp)
        tex *= 4.0 / (tex.std() + 1e-9)
        hu[union] += np.clip(tex[union], -6, 6)
    hu = ndimage.gaussian_filter(hu, 0.5 / sp)  # ~0.5 mm point-spread function
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.6)
    hu += noise * (patient.noise_hu / (noise.std() + 1e-9))
    gx, gy = np.meshgrid(g.idx, g.idx)
    hu[np.hypot(gx, gy) > 0.5 * patient.fov_mm] = OUTSIDE_FOV_HU  # outside the scan circle
    return hu.astype(np.float32)
