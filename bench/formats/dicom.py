"""Decoding DICOM files (pydicom, an optional extra: `pip install "medpeft-bench[dicom]"`).

A DICOM file is recognised by its `.dcm` / `.dicom` suffix or by the "DICM" marker after its
128-byte preamble (PS3.10 7.1), so PACS exports named `IM000001` are read too. Its pixels go
through the display pipeline of DICOM PS3.4 N.2 (pydicom's `apply_modality_lut` and
`apply_voi_lut`) before the suite's usual 8-bit mapping:

- Modality LUT: RescaleSlope/RescaleIntercept (or a Modality LUT Sequence) turn stored values
  into modality units (CT: Hounsfield units).
- VOI LUT: a VOI LUT Sequence, else WindowCenter/WindowWidth (the first window when the file
  lists several). Its output range (the window spans all of it) maps linearly onto 0..255.
- Without a VOI, the range the stored bits allow (BitsStored, signed or not, through the
  modality LUT) is shifted to start at 0 and handed on like a 16-bit PNG: the dataset's bit
  depth (card `bit_depth`, else the data's) maps it to 8 bits (`bench.formats.images`).
- MONOCHROME1 (high = dark) is inverted so that high = bright, as in MONOCHROME2.
- RGB is kept; YBR_* is converted to RGB (pydicom >= 3 does so in `pixel_array`; 2.x converts
  uncompressed YBR_FULL/_422 with `convert_color_space`). PALETTE COLOR and other
  interpretations are refused.
- Multi-frame files (cine, tomosynthesis, enhanced CT/MR) are refused: the suite classifies
  single images, so export the frame to use as its own file.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from bench.errors import UserError

DICOM_EXTENSIONS = (".dcm", ".dicom")
INSTALL = 'pip install "medpeft-bench[dicom]"  (or: pip install "pydicom>=2.4")'
GREY = ("MONOCHROME1", "MONOCHROME2")
# 2.x converts these from uncompressed data itself; pydicom 3 converts every YBR in pixel_array
_YBR_2X = ("YBR_FULL", "YBR_FULL_422")


def has_dicom_name(name: str) -> bool:
    """True for a `.dcm` / `.dicom` file name (any case)."""
    return name.lower().endswith(DICOM_EXTENSIONS)


def has_dicom_marker(path: Path) -> bool:
    """True when the file holds "DICM" at byte 128 (a DICOM Part 10 file, whatever its name)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def require_pydicom() -> ModuleType:
    """The pydicom module, or a UserError with the line that installs it."""
    try:
        import pydicom
    except ImportError:
        raise UserError(
            f"reading DICOM files needs pydicom, which is not installed: {INSTALL}"
        ) from None
    return pydicom


def _is_v3(pydicom: ModuleType) -> bool:
    return int(pydicom.__version__.split(".")[0]) >= 3


def _pixels_api(pydicom: ModuleType) -> ModuleType:
    """The module holding apply_modality_lut / apply_voi_lut / convert_color_space: moved to
    `pydicom.pixels` in 3.0 (the 2.x path is deprecated there)."""
    if _is_v3(pydicom):
        import pydicom.pixels as api
    else:  # pragma: no cover - exercised where pydicom 2.x is installed
        import pydicom.pixel_data_handlers.util as api
    return api


def decode_dicom(path: Path) -> np.ndarray:
    """The image of one DICOM file, full size: uint8 [H, W] (windowed grey), uint16 [H, W] (grey
    without a window, for the dataset's bit depth to map), or uint8 [H, W, 3] (colour).
    A UserError says why a file cannot be used."""
    pydicom = require_pydicom()
    api = _pixels_api(pydicom)
    ds = pydicom.dcmread(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UserError(
            f"{path.name} is a multi-frame DICOM ({frames} frames); the suite reads single "
            "images: export the frame to use as its own file"
        )
    pi = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    arr = ds.pixel_array
    if pi in GREY:
        return _grey(arr, ds, api, invert=pi == "MONOCHROME1")
    if pi == "RGB" or pi.startswith("YBR"):
        return _colour(arr, ds, api, pi, pydicom)
    raise UserError(
        f"{path.name}: PhotometricInterpretation {pi or '(missing)'} is not supported; "
        "convert the file to MONOCHROME2 or RGB"
    )


def _grey(arr: np.ndarray, ds: Any, api: ModuleType, *, invert: bool) -> np.ndarray:
    """Modality LUT, then the first VOI (LUT or window) onto 0..255, or without a VOI the stored
    range shifted to 0 (uint16, or uint8 when it fits 8 bits); MONOCHROME1 inverted."""
    values = api.apply_modality_lut(arr, ds)
    if _has_voi(ds):
        if _voi_lut(ds) is not None:
            values = np.rint(values).astype(np.int64)  # a LUT is indexed by whole numbers
        out = api.apply_voi_lut(values, ds, index=0)
        y_min, y_max = _voi_range(ds, api)
        unit = np.clip((out.astype(np.float64) - y_min) / (y_max - y_min), 0.0, 1.0)
        unit = 1.0 - unit if invert else unit
        return np.rint(unit * 255).astype(np.uint8)
    lo, hi = _stored_range(ds, api)
    span = hi - lo
    # a span past 16 bits (a slope > 1 on 16-bit data) is squeezed into 16 bits
    top = min(span, 65535)
    shifted = np.clip((values.astype(np.float64) - lo) * (top / span), 0, top)
    shifted = top - shifted if invert else shifted
    return np.rint(shifted).astype(np.uint8 if top <= 255 else np.uint16)


def _stored_range(ds: Any, api: ModuleType) -> tuple[float, float]:
    """The lowest and highest value the stored bits allow, through the modality LUT."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.int64)
    else:
        stored = np.array([0, 2**bits - 1], dtype=np.int64)
    ends = api.apply_modality_lut(stored, ds).astype(np.float64)
    return float(ends.min()), float(ends.max())


def _voi_lut(ds: Any) -> Any | None:
    """The VOI LUT Sequence's first item when usable (`apply_voi_lut` prefers it to a window)."""
    seq = ds.get("VOILUTSequence")
    if seq and None not in (seq[0].get("LUTDescriptor"), seq[0].get("LUTData")):
        return seq[0]
    return None


def _has_voi(ds: Any) -> bool:
    """A usable VOI LUT or window, as `apply_voi_lut` decides."""
    return _voi_lut(ds) is not None or None not in (ds.get("WindowCenter"), ds.get("WindowWidth"))


def _voi_range(ds: Any, api: ModuleType) -> tuple[float, float]:
    """The output range of the VOI `apply_voi_lut` applies: a LUT's entries hold LUTDescriptor[2]
    bits (PS3.3 C.11.2.1.1); a window's range is what pydicom maps values far outside it to."""
    item = _voi_lut(ds)
    if item is not None:
        return 0.0, float(2 ** int(item.LUTDescriptor[2]) - 1)
    ends = api.apply_voi_lut(np.array([-np.inf, np.inf]), ds, index=0)
    return float(ends[0]), float(ends[1])


def _colour(arr: np.ndarray, ds: Any, api: ModuleType, pi: str, pydicom: ModuleType) -> np.ndarray:
    """RGB uint8 [H, W, 3]; samples wider than 8 bits scaled by BitsStored."""
    if pi != "RGB" and not _is_v3(pydicom):  # pragma: no cover - 2.x
        if pi not in _YBR_2X or ds.file_meta.TransferSyntaxUID.is_compressed:
            raise UserError(
                f"PhotometricInterpretation {pi} (compressed, or other than YBR_FULL/_422) "
                "needs pydicom >= 3: pip install -U pydicom"
            )
        arr = api.convert_color_space(arr, pi, "RGB")
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise UserError(f"colour DICOM with pixel array of shape {arr.shape}; expected [H, W, 3]")
    bits = int(ds.get("BitsStored", 8))
    if bits <= 8:
        return arr.astype(np.uint8)
    return np.rint(arr.astype(np.float64) * 255 / (2**bits - 1)).astype(np.uint8)
