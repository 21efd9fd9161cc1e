"""Procedural medical-style images for the synthetic corpus: chest radiographs, CT slices and H&E patches.

Every image is drawn with numpy and PIL from a numpy ``Generator`` and a label dict, so the same
generator state and label give the same pixels. The labelled finding is drawn big and with strong
contrast, so that a tiny vision encoder looking at 64x64 tiles can learn it; the generator adds size,
aspect-ratio, anatomy and texture variation for realism.

Label dicts (``modality`` picks the renderer)::

    {"modality": "xray", "view": "PA", "finding": "opacity", "side": "left", "zone": "lower", "severity": 2}
    {"modality": "ct", "region": "abdomen", "organ": "liver", "density": "hypodense"}
    {"modality": "histology", "tissue": "malignant"}

Side is the patient's side: on frontal chest views the patient's left lies on the image's right.
A chest label may carry ``"anatomy"`` (an int) so that all views and timepoints of one patient share
the same body shape while their texture noise differs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

XRAY_FINDINGS = ("none", "opacity", "effusion", "cardiomegaly", "pneumothorax", "nodule")
XRAY_VIEWS = ("PA", "AP", "lateral", "PA expiratory")
LATERALIZED_FINDINGS = frozenset({"opacity", "effusion", "pneumothorax", "nodule"})
ZONED_FINDINGS = frozenset({"opacity", "nodule"})  # effusion sits at the base, pneumothorax at the apex
SEVERITIES = (1, 2, 3)
CT_ORGANS = ("liver", "spleen", "right kidney", "left kidney", "right lung", "left lung")
CT_DENSITIES = ("hypodense", "hyperdense")
TISSUES = ("benign", "malignant", "inflammation", "necrosis")

Label = dict[str, Any]

# Frontal-view lung fields in normalised image coordinates (u across, v down); patient right = image left.
LUNG_CENTER_U = {"right": 0.31, "left": 0.69}
LUNG_CENTER_V, LUNG_RX, LUNG_RY = 0.47, 0.15, 0.27
ZONE_CENTER_V = {"upper": 0.35, "lower": 0.59}


def zone_center(side: str, zone: str) -> tuple[float, float]:
    """Normalised (u, v) centre of a lung zone on a frontal chest view, where zoned findings are drawn."""
    return LUNG_CENTER_U[side], ZONE_CENTER_V[zone]


def render(rng: np.random.Generator, label: Label) -> Image.Image:
    """Draw the image a label describes."""
    renderers = {"xray": chest_xray, "ct": ct_slice, "histology": histology_patch}
    modality = label.get("modality")
    if modality not in renderers:
        raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(renderers)}")
    return renderers[modality](rng, label)


# ---------------------------------------------------------------------------------------------------
# Drawing helpers (float32 canvases in 0..255, masks as bool or 0..1 float arrays)


def canvas_size(rng: np.random.Generator, lo: int, hi: int, max_aspect: float) -> tuple[int, int]:
    """A (width, height) with sides in [lo, hi] and aspect ratio within 1/max_aspect..max_aspect."""
    width = int(rng.integers(lo, hi + 1))
    aspect = float(np.exp(rng.uniform(-np.log(max_aspect), np.log(max_aspect))))
    height = int(np.clip(round(width / aspect), lo, hi))
    return width, height


def unit_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates normalised to 0..1 across (u) and down (v)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    return (u + 0.5) / width, (v + 0.5) / height


def ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def disc(u: np.ndarray, v: np.ndarray, cu: float, cv: float, radius: float) -> np.ndarray:
    """A circle on screen; ``radius`` is in units of the image width."""
    aspect = u.shape[1] / u.shape[0]
    return ellipse(u, v, cu, cv, radius, radius * aspect)


def soften(mask: np.ndarray, radius: float) -> np.ndarray:
    """A mask (bool or 0..1) blurred into soft edges, returned as 0..1 floats."""
    layer = Image.fromarray(np.clip(mask * 255.0, 0, 255).astype(np.uint8))
    return np.asarray(layer.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


def smooth_noise(rng: np.random.Generator, width: int, height: int, cell: int) -> np.ndarray:
    """Unit-variance-ish noise that varies over about ``cell`` pixels (tissue texture, not grain)."""
    coarse = rng.standard_normal((height // cell + 2, width // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def blend(img: np.ndarray, mask: np.ndarray, value: float | np.ndarray) -> np.ndarray:
    """Paint ``value`` over ``img`` with soft ``mask`` as opacity."""
    return img * (1.0 - mask) + value * mask


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def line_layer(width: int, height: int, lines: list[list[tuple[float, float]]], thickness: int) -> np.ndarray:
    """Polylines given in normalised coordinates rasterised to a 0..1 layer."""
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    for points in lines:
        draw.line([(x * width, y * height) for x, y in points], fill=255, width=thickness)
    return np.asarray(layer, dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------------------
# Chest radiographs


def anatomy(label: Label) -> np.random.Generator:
    """A generator for one patient's body shape, shared by all their views and timepoints."""
    return np.random.default_rng(int(label.get("anatomy", 0)))


def chest_xray(rng: np.random.Generator, label: Label) -> Image.Image:
    """A grayscale chest radiograph with the label's finding drawn at its side, zone and severity."""
    finding = label.get("finding", "none")
    if finding not in XRAY_FINDINGS:
        raise ValueError(f"unknown chest finding {finding!r}")
    view = label.get("view", "PA")
    if view not in XRAY_VIEWS:
        raise ValueError(f"unknown chest view {view!r}")
    width, height = canvas_size(rng, 128, 256, 1.25)
    body = anatomy(label)
    build = float(body.uniform(0.95, 1.05))  # body habitus, same in every view of the patient
    heart_scale = float(body.uniform(0.93, 1.07))
    if view == "lateral":
        img = lateral_chest(rng, label, width, height, build, heart_scale)
    else:
        img = frontal_chest(rng, label, width, height, build, heart_scale)
    # No grain anywhere: per-pixel noise would multiply PNG sizes; texture comes from smooth noise instead.
    return Image.fromarray(to_uint8(img)).filter(ImageFilter.GaussianBlur(0.7))  # film unsharpness


def severity_of(label: Label) -> int:
    severity = int(label.get("severity", 2))
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    return severity


def frontal_chest(
    rng: np.random.Generator, label: Label, width: int, height: int, build: float, heart_scale: float
) -> np.ndarray:
    """PA, AP or expiratory PA view: body, spine, two lung fields with markings, ribs, heart, finding."""
    view, finding = label.get("view", "PA"), label.get("finding", "none")
    severity = severity_of(label)
    u, v = unit_grid(width, height)
    img = np.full((height, width), 14.0, np.float32)
    thorax = ellipse(u, v, 0.5, 0.58, 0.46 * build, 0.56)
    img[thorax] = 118.0
    img = blend(img, soften(np.abs(u - 0.5) < 0.05, 1.5) * thorax, 150.0)  # spine and mediastinum

    lung_ry = LUNG_RY * (0.85 if view == "PA expiratory" else 1.0)
    lung_cv = LUNG_CENTER_V + (LUNG_RY - lung_ry)
    lungs = {
        side: ellipse(u, v, 0.5 + (cu - 0.5) * build, lung_cv, LUNG_RX * build, lung_ry)
        for side, cu in LUNG_CENTER_U.items()
    }
    both_lungs = lungs["right"] | lungs["left"]
    lung_density = 82.0 if view == "PA expiratory" else 68.0
    img[both_lungs] = (lung_density + 8.0 * smooth_noise(rng, width, height, 12))[both_lungs]

    # Pneumothorax: the collapsed lung pulls away from the chest wall, leaving a black rim without markings.
    air = np.zeros_like(both_lungs)
    if finding == "pneumothorax":
        side_lung = lungs[label["side"]]
        cu = 0.5 + (LUNG_CENTER_U[label["side"]] - 0.5) * build
        shrink = (0.78, 0.65, 0.52)[severity - 1]
        collapsed = ellipse(
            u, v, 0.5 + (cu - 0.5) * 0.85, lung_cv + lung_ry * (1 - shrink), LUNG_RX * build * shrink, lung_ry * shrink
        )
        air = side_lung & ~collapsed
    img[air] = 8.0

    markings = vessel_markings(rng, width, height, build, lung_cv)
    img += 26.0 * soften(markings, 0.6) * (both_lungs & ~air)
    img += 24.0 * soften(rib_layer(width, height, build, lung_cv, lung_ry), 1.0) * thorax
    if finding == "pneumothorax":
        pleural_line = soften(np.abs(soften(air, 0.8) - 0.5) < 0.2, 0.5) * lungs[label["side"]]
        img = blend(img, pleural_line * 0.8, 150.0)

    heart_ru = 0.16 * heart_scale * (1.1 if view == "AP" else 1.0)
    heart_rv = 0.12 * heart_scale
    if finding == "cardiomegaly":
        heart_ru, heart_rv = (0.23, 0.28, 0.33)[severity - 1] * heart_scale, (0.14, 0.16, 0.18)[severity - 1]
    heart = ellipse(u, v, 0.535, lung_cv + lung_ry * 0.62, heart_ru * build, heart_rv)
    img = blend(img, soften(heart, 1.5), 168.0)

    if finding in ("opacity", "nodule"):
        cu, cv = zone_center(label["side"], label["zone"])
        cu = 0.5 + (cu - 0.5) * build + float(rng.uniform(-0.02, 0.02))
        cv = cv + float(rng.uniform(-0.02, 0.02))
        img = draw_focal_finding(rng, img, u, v, cu, cv, finding, severity)
    elif finding == "effusion":
        fluid = pleural_fluid(u, v, lungs[label["side"]], label["side"], severity, lung_cv + lung_ry, build)
        img = blend(img, fluid, 188.0)
    return img


def draw_focal_finding(
    rng: np.random.Generator,
    img: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    cu: float,
    cv: float,
    finding: str,
    severity: int,
) -> np.ndarray:
    """An opacity (ill-defined blob of overlapping discs) or a nodule (small sharp disc) centred at (cu, cv)."""
    if finding == "nodule":
        return blend(img, soften(disc(u, v, cu, cv, (0.03, 0.04, 0.05)[severity - 1]), 0.7), 238.0)
    radius = (0.07, 0.095, 0.12)[severity - 1]
    blob = disc(u, v, cu, cv, radius)
    for _ in range(3):
        du, dv = rng.uniform(-0.6, 0.6, 2) * radius
        blob |= disc(u, v, cu + du, cv + dv, radius * float(rng.uniform(0.5, 0.8)))
    return blend(img, soften(blob, max(1.0, 0.012 * u.shape[1])) * 0.95, 205.0)


def pleural_fluid(
    u: np.ndarray, v: np.ndarray, lung: np.ndarray, side: str, severity: int, base: float, build: float
) -> np.ndarray:
    """Dense fluid filling a lung base, its upper edge (meniscus) climbing along the chest wall."""
    level = base - (0.13, 0.19, 0.26)[severity - 1]
    outward = (0.5 - u) if side == "right" else (u - 0.5)  # distance towards the chest wall
    meniscus = level - 0.12 * np.clip((outward - 0.12 * build) / (0.2 * build), 0.0, 1.0)
    fluid = lung & (v > meniscus)
    return soften(fluid, 1.2)


def vessel_markings(rng: np.random.Generator, width: int, height: int, build: float, lung_cv: float) -> np.ndarray:
    """Branching lines fanning out from both hila (lung markings)."""
    lines = []
    for direction in (-1.0, 1.0):
        hilum = (0.5 + direction * 0.08 * build, lung_cv + 0.03)
        for _ in range(9):
            angle = rng.uniform(-1.1, 1.1)
            length = rng.uniform(0.08, 0.16) * build
            bend = rng.uniform(-0.3, 0.3)
            half = 0.5 * length
            mid = (hilum[0] + direction * half * np.cos(angle), hilum[1] + half * np.sin(angle))
            end = (mid[0] + direction * half * np.cos(angle + bend), mid[1] + half * np.sin(angle + bend))
            lines.append([hilum, mid, end])
    return line_layer(width, height, lines, thickness=1)


def rib_layer(width: int, height: int, build: float, lung_cv: float, lung_ry: float) -> np.ndarray:
    """Posterior ribs: arcs from the spine out and down across each lung field."""
    lines = []
    top = lung_cv - lung_ry
    spacing = 2 * lung_ry / 8
    for k in range(8):
        for direction in (-1.0, 1.0):
            t = np.linspace(0.06, 0.42, 8)
            points = [(0.5 + direction * x * build, top + k * spacing + 0.5 * x - 0.9 * x * x) for x in t]
            lines.append([(float(a), float(b)) for a, b in points])
    return line_layer(width, height, lines, thickness=max(2, round(0.018 * height)))


def lateral_chest(
    rng: np.random.Generator, label: Label, width: int, height: int, build: float, heart_scale: float
) -> np.ndarray:
    """Lateral view (patient facing image left): one lung field, heart in front, spine behind."""
    finding = label.get("finding", "none")
    severity = severity_of(label)
    u, v = unit_grid(width, height)
    img = np.full((height, width), 14.0, np.float32)
    body = ellipse(u, v, 0.5, 0.56, 0.44 * build, 0.54)
    img[body] = 118.0
    lung = ellipse(u, v, 0.53, 0.46, 0.28 * build, 0.3)
    img[lung] = (70.0 + 8.0 * smooth_noise(rng, width, height, 12))[lung]
    if finding == "pneumothorax":
        apex_air = lung & (v < 0.22 + 0.06 * severity)
        img[apex_air] = 8.0
    img = blend(img, soften((u > 0.76 * build + 0.12) & (u < 0.86 * build + 0.12) & body, 1.0), 165.0)  # spine
    img = blend(img, soften((np.abs(u - 0.16) < 0.015) & (np.abs(v - 0.5) < 0.25), 0.8), 150.0)  # sternum
    heart_r = 0.14 * heart_scale if finding != "cardiomegaly" else (0.19, 0.23, 0.27)[severity - 1]
    img = blend(img, soften(disc(u, v, 0.38, 0.63, heart_r), 1.5), 165.0)
    if finding in ("opacity", "nodule"):
        cv = ZONE_CENTER_V[label["zone"]] + float(rng.uniform(-0.03, 0.03))
        cu = 0.55 + float(rng.uniform(-0.06, 0.06))
        img = draw_focal_finding(rng, img, u, v, cu, cv, finding, severity)
    elif finding == "effusion":
        level = 0.76 - (0.1, 0.15, 0.2)[severity - 1]
        img = blend(img, soften(lung & (u > 0.5) & (v > level - 0.15 * (u - 0.5)), 1.2), 188.0)  # posterior sulcus
    return img


# ---------------------------------------------------------------------------------------------------
# CT slices

# Organ ellipses (cu, cv, ru, rv) on an axial slice, patient right = image left.
ABDOMEN_ORGANS = {
    "liver": (0.33, 0.44, 0.18, 0.17),
    "spleen": (0.72, 0.42, 0.08, 0.11),
    "right kidney": (0.37, 0.66, 0.065, 0.085),
    "left kidney": (0.64, 0.66, 0.065, 0.085),
}
CHEST_ORGANS = {"right lung": (0.3, 0.47, 0.16, 0.22), "left lung": (0.7, 0.47, 0.16, 0.22)}
ORGAN_DENSITY = {
    "liver": 150.0, "spleen": 140.0, "right kidney": 165.0, "left kidney": 165.0, "right lung": 16.0, "left lung": 16.0
}


def ct_region(organ: str | None) -> str:
    return "chest" if organ in CHEST_ORGANS else "abdomen"


def ct_slice(rng: np.random.Generator, label: Label) -> Image.Image:
    """An axial CT slice (chest or upper abdomen) with an optional hypo- or hyperdense lesion in one organ."""
    organ = label.get("organ")
    if organ is not None and organ not in ORGAN_DENSITY:
        raise ValueError(f"unknown CT organ {organ!r}")
    region = label.get("region") or ct_region(organ)
    if organ is not None and ct_region(organ) != region:
        raise ValueError(f"organ {organ!r} is not on a {region} slice")
    width, height = canvas_size(rng, 112, 224, 1.15)
    u, v = unit_grid(width, height)
    img = np.full((height, width), 4.0, np.float32)
    body_ru, body_rv = float(rng.uniform(0.42, 0.46)), float(rng.uniform(0.33, 0.38))
    img[ellipse(u, v, 0.5, 0.53, body_ru, body_rv)] = 92.0  # subcutaneous fat
    inner = ellipse(u, v, 0.5, 0.53, body_ru - 0.04, body_rv - 0.035)
    img[inner] = (118.0 + 5.0 * smooth_noise(rng, width, height, 10))[inner]
    organs = CHEST_ORGANS if region == "chest" else ABDOMEN_ORGANS
    masks = {}
    for name, (cu, cv, ru, rv) in organs.items():
        jitter = rng.uniform(-0.015, 0.015, 2)
        masks[name] = ellipse(u, v, cu + jitter[0], cv + jitter[1], ru, rv) & inner
        img = blend(img, soften(masks[name], 0.8), ORGAN_DENSITY[name] + 4.0 * smooth_noise(rng, width, height, 8))
    if region == "chest":
        vessels = np.zeros_like(inner)
        for _ in range(14):
            vessels |= disc(u, v, *rng.uniform(0.2, 0.8, 2), float(rng.uniform(0.006, 0.012)))
        img = blend(img, soften(vessels & (masks["right lung"] | masks["left lung"]), 0.5), 120.0)
        img = blend(img, soften(ellipse(u, v, 0.53, 0.52, 0.12, 0.13), 1.0), 130.0)  # heart
    else:
        gas = np.zeros_like(inner)
        for _ in range(5):
            cu, cv, radius = rng.uniform(0.45, 0.62), rng.uniform(0.3, 0.5), rng.uniform(0.01, 0.025)
            gas |= disc(u, v, float(cu), float(cv), float(radius))
        img = blend(img, soften(gas & inner & ~masks["liver"], 0.6), 10.0)  # bowel gas
    img = blend(img, soften(disc(u, v, 0.53, 0.6, 0.028), 0.6), 200.0)  # contrast-filled aorta
    img = blend(img, soften(disc(u, v, 0.5, 0.74, 0.055), 0.6), 236.0)  # vertebral body
    if organ is not None:
        img = blend(img, ct_lesion(rng, u, v, masks[organ], organs[organ]), lesion_value(organ, label.get("density")))
    return Image.fromarray(to_uint8(img))


def lesion_value(organ: str, density: str | None) -> float:
    """Lesion brightness: far below or above its organ; any solid lesion is bright against aerated lung."""
    if density not in CT_DENSITIES:
        raise ValueError(f"lesion density must be one of {CT_DENSITIES}, got {density!r}")
    if organ in CHEST_ORGANS:
        if density != "hyperdense":
            raise ValueError("a lung lesion is drawn as a hyperdense (soft-tissue) mass")
        return 150.0
    return 50.0 if density == "hypodense" else 242.0


def ct_lesion(
    rng: np.random.Generator,
    u: np.ndarray,
    v: np.ndarray,
    organ_mask: np.ndarray,
    organ: tuple[float, float, float, float],
) -> np.ndarray:
    """A round lesion about half the organ's size, placed inside the organ."""
    cu, cv, ru, rv = organ
    aspect = u.shape[1] / u.shape[0]
    radius = min(ru, rv / aspect) * float(rng.uniform(0.45, 0.6))
    du, dv = rng.uniform(-0.3, 0.3, 2)
    lesion = disc(u, v, cu + du * ru, cv + dv * rv, radius) & organ_mask
    return soften(lesion, 0.8)


# ---------------------------------------------------------------------------------------------------
# H&E histology patches

STROMA_RGB = np.array([232.0, 158.0, 196.0], np.float32)
NECROSIS_RGB = np.array([242.0, 196.0, 214.0], np.float32)
LUMEN_RGB = (246, 236, 242)

# Per tissue: nuclei per pixel, radius range (px), outline irregularity (0 = round), RGB.
NUCLEI = {
    "benign": (1 / 650, (1.8, 2.8), 0.0, (120, 72, 168)),
    "malignant": (1 / 150, (4.0, 7.0), 0.35, (72, 30, 122)),
    "inflammation": (1 / 85, (1.4, 2.4), 0.0, (48, 20, 92)),
    "necrosis": (1 / 350, (0.7, 1.4), 0.5, (70, 36, 110)),
}


def histology_patch(rng: np.random.Generator, label: Label) -> Image.Image:
    """An H&E-like RGB patch: pink stroma and purple nuclei whose density, size and shape give the tissue.

    Drawn in flat colours without blur or grain: RGB texture noise would make each PNG tens of KB.
    """
    tissue = label.get("tissue")
    if tissue not in NUCLEI:
        raise ValueError(f"unknown tissue {tissue!r}; expected one of {TISSUES}")
    width, height = canvas_size(rng, 96, 224, 1.33)
    base = (NECROSIS_RGB if tissue == "necrosis" else STROMA_RGB) + rng.integers(-8, 9, 3)  # staining varies
    img = Image.new("RGB", (width, height), tuple(int(c) for c in base))
    draw = ImageDraw.Draw(img)
    for fiber in stroma_fibers(rng, width, height):
        draw.line(fiber, fill=tuple(int(c) for c in base - (10, 18, 12)), width=2)
    if tissue != "necrosis":
        for _ in range(int(rng.integers(1, 4))):  # empty spaces: gland lumens, small vessels
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            rx, ry = rng.uniform(6, 16, 2)
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=LUMEN_RGB)
    density, (r_lo, r_hi), irregularity, color = NUCLEI[tissue]
    for _ in range(int(rng.poisson(density * width * height))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        radius = float(rng.uniform(r_lo, r_hi))
        fill = tuple(int(c) for c in np.clip(np.array(color) + rng.integers(-12, 13, 3), 0, 255))
        draw.polygon(nucleus_outline(rng, x, y, radius, irregularity), fill=fill)
    return img


def stroma_fibers(rng: np.random.Generator, width: int, height: int) -> list[list[tuple[float, float]]]:
    """Wavy collagen strands running roughly one way across the patch."""
    fibers = []
    for _ in range(int(width * height / 1600)):
        x, y = float(rng.uniform(-10, width)), float(rng.uniform(0, height))
        points = [(x, y)]
        for _ in range(5):
            x, y = x + float(rng.uniform(4, 15)), y + float(rng.uniform(-6, 6))
            points.append((x, y))
        fibers.append(points)
    return fibers


def nucleus_outline(
    rng: np.random.Generator, x: float, y: float, radius: float, irregularity: float
) -> list[tuple[float, float]]:
    """A nucleus as a polygon: round when irregularity is 0, elongated and knobbly as it grows."""
    angles = np.linspace(0.0, 2 * np.pi, 10, endpoint=False)
    stretch = 1.0 + irregularity * float(rng.uniform(0.0, 1.0))
    tilt = float(rng.uniform(0, np.pi))
    radii = radius * (1.0 + irregularity * rng.uniform(-0.5, 0.5, angles.size))
    px, py = radii * np.cos(angles) * stretch, radii * np.sin(angles) / stretch
    cos, sin = np.cos(tilt), np.sin(tilt)
    return [(float(x + a * cos - b * sin), float(y + a * sin + b * cos)) for a, b in zip(px, py)]
