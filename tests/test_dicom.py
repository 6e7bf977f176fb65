"""DICOM files (`bench.formats.dicom`): the modality LUT, the first VOI window, MONOCHROME1
inversion and colour conversion give the 8-bit values computed here by hand; folders and
manifests of .dcm files load, cache and train."""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from bench.catalog import get_card
from bench.data import load_dataset
from bench.errors import UserError
from bench.formats.csv_manifest import read_csv_manifest
from bench.formats.dicom import decode_dicom
from bench.formats.imagefolder import read_imagefolder

PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3


def write_dicom(path: Path, pixels: np.ndarray, photometric: str, **tags: object) -> Path:
    """A Part 10 file (preamble, DICM, file meta) holding `pixels` uncompressed, with `tags`."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    if not PYDICOM_3:  # 2.x takes the encoding from the dataset, 3.x from the transfer syntax
        ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = tags.pop("BitsStored", ds.BitsAllocated)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


# 12-bit stored values; slope 2, intercept -1024 make them -1024, 0, 976, 1476, 2000, 7166
STORED = np.array([[0, 512, 1000], [1250, 1512, 4095]], dtype=np.uint16)


def windowed(stored: np.ndarray, slope: float, intercept: float, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR windowing onto 0..255, written out: x <= c - 0.5 - (w-1)/2 is
    black, x > c - 0.5 + (w-1)/2 white, linear between."""
    x = stored.astype(np.float64) * slope + intercept
    unit = np.where(
        x <= c - 0.5 - (w - 1) / 2,
        0.0,
        np.where(x > c - 0.5 + (w - 1) / 2, 1.0, (x - (c - 0.5)) / (w - 1) + 0.5),
    )
    return np.rint(unit * 255).astype(np.uint8)


def test_monochrome1_12_bit_with_rescale_and_two_windows(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "x.dcm",
        STORED,
        "MONOCHROME1",
        BitsStored=12,
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=[1000, 40],  # the first window is used
        WindowWidth=[2000, 400],
    )
    out = decode_dicom(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3)
    # values -1024, 0, 976 | 1476, 2000, 7166; window 0..1999 (c - 0.5 +- (w - 1) / 2):
    # 976 -> (976 - 999.5) / 1999 + 0.5 = 0.4882 -> 124.50 -> 125, 1476 -> 188.28 -> 188
    by_hand = np.array([[255, 255, 255 - 125], [255 - 188, 0, 0]], dtype=np.uint8)
    assert np.array_equal(out, by_hand)
    # MONOCHROME1: high values dark, so the inverse of the windowed MONOCHROME2 value
    assert np.array_equal(out, 255 - windowed(STORED, 2, -1024, 1000, 2000))


def test_monochrome2_window_without_rescale(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "x.dcm", STORED, "MONOCHROME2", BitsStored=12, WindowCenter=1256, WindowWidth=513
    )
    out = decode_dicom(path)
    assert np.array_equal(out, windowed(STORED, 1, 0, 1256, 513))
    # window 999.5..1511.5; 1000 -> 0.00098 -> 0, 1250 -> (1250 - 1255.5) / 512 + 0.5 -> 124.76
    assert out.tolist() == [[0, 0, 0], [125, 255, 255]]


def test_voi_lut_sequence_is_preferred_to_the_window(tmp_path: Path) -> None:
    # a 12-bit VOI LUT (PS3.3 C.11.2.1.1) halving the rescaled value: output range 0..4095
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.add_new(0x00283006, "US", [v // 2 for v in range(4096)])  # LUT Data
    path = write_dicom(
        tmp_path / "lut.dcm",
        STORED,
        "MONOCHROME2",
        BitsStored=12,
        RescaleSlope=1,
        RescaleIntercept=0,
        VOILUTSequence=[item],
        WindowCenter=100,  # ignored: the LUT comes first, as in pydicom's apply_voi_lut
        WindowWidth=10,
    )
    by_hand = np.rint((STORED // 2).astype(np.float64) * 255 / 4095).astype(np.uint8)
    assert np.array_equal(decode_dicom(path), by_hand)


def test_no_window_goes_through_the_datasets_bit_depth(tmp_path: Path) -> None:
    # 12-bit MONOCHROME2 without a window comes back as stored, for the dataset's bit depth
    raw = decode_dicom(write_dicom(tmp_path / "x.dcm", STORED, "MONOCHROME2", BitsStored=12))
    assert raw.dtype == np.uint16 and np.array_equal(raw, STORED)
    # ... which maps it like a 12-bit PNG: v * 255 / 4095
    pixels = np.array([[0, 1000, 2048], [2048, 3000, 4095], [4095, 0, 1000]], dtype=np.uint16)
    for split, cls in (("train", "a"), ("train", "b"), ("test", "a")):
        write_dicom(tmp_path / "sq" / split / cls / "s.dcm", pixels, "MONOCHROME2", BitsStored=12)
    write_dicom(tmp_path / "sq" / "test" / "b" / "inv.dcm", pixels, "MONOCHROME1", BitsStored=12)
    out = read_imagefolder(tmp_path / "sq", ("a", "b"), size=3)
    by_hand = np.rint(pixels.astype(np.float64) * 255 / 4095).astype(np.uint8)
    assert out["train"].images.dtype == np.uint8
    assert np.array_equal(out["train"].images[0, :, :, 0], by_hand)
    assert np.array_equal(out["test"].images[1, :, :, 0], 255 - by_hand)  # MONOCHROME1


def test_signed_ct_without_window_spans_its_stored_range(tmp_path: Path) -> None:
    # 16-bit signed, intercept -1024: stored -32768..32767 is the range; shifted to 0..65535
    pixels = np.array([[-32768, 0], [1000, 32767]], dtype=np.int16)
    path = write_dicom(
        tmp_path / "ct.dcm", pixels, "MONOCHROME2", RescaleSlope=1, RescaleIntercept=-1024
    )
    out = decode_dicom(path)
    assert out.dtype == np.uint16
    assert out.tolist() == [[0, 32768], [33768, 65535]]


def test_rgb_and_ybr_become_rgb(tmp_path: Path) -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    assert np.array_equal(decode_dicom(write_dicom(tmp_path / "rgb.dcm", rgb, "RGB")), rgb)
    # YBR_FULL (PS3.3 C.7.6.3.1.2): Y 128, Cb 128, Cr 200 -> R = 128 + 1.402 * 72 = 228.9
    ybr = np.zeros((2, 2, 3), dtype=np.uint8)
    ybr[...] = (128, 128, 200)
    out = decode_dicom(write_dicom(tmp_path / "ybr.dcm", ybr, "YBR_FULL"))
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert np.abs(out[0, 0].astype(int) - (229, 77, 128)).max() <= 1


def test_multi_frame_and_palette_are_refused(tmp_path: Path) -> None:
    frames = np.zeros((2, 4, 4), dtype=np.uint8)
    path = write_dicom(tmp_path / "cine.dcm", frames.reshape(8, 4), "MONOCHROME2")
    ds = pydicom.dcmread(path)
    ds.Rows, ds.NumberOfFrames = 4, 2
    ds.save_as(path)
    with pytest.raises(UserError, match=r"multi-frame DICOM \(2 frames\).*own file"):
        decode_dicom(path)
    palette = write_dicom(tmp_path / "p.dcm", np.zeros((4, 4), np.uint8), "PALETTE COLOR")
    with pytest.raises(UserError, match="PALETTE COLOR is not supported"):
        decode_dicom(palette)


def test_a_broken_dicom_file_is_named(tmp_path: Path) -> None:
    for split, cls in (("train", "a"), ("train", "b"), ("test", "a")):
        write_dicom(tmp_path / split / cls / "x.dcm", STORED, "MONOCHROME2")
    (tmp_path / "train" / "b" / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 7)
    with pytest.raises(UserError, match=r"cannot read image train/b/x\.dcm .*replace or remove"):
        read_imagefolder(tmp_path, ("a", "b"), size=4)


def test_missing_pydicom_is_one_line_with_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for split, cls in (("train", "a"), ("train", "b"), ("test", "a")):
        write_dicom(tmp_path / split / cls / "x.dcm", STORED, "MONOCHROME2")
    real_import = builtins.__import__

    def no_pydicom(name, *args, **kwargs):
        if name == "pydicom" or name.startswith("pydicom."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pydicom)
    with pytest.raises(UserError) as caught:
        read_imagefolder(tmp_path, ("a", "b"), size=4)
    message = str(caught.value)
    assert "\n" not in message and "needs pydicom" in message
    assert 'pip install "medpeft-bench[dicom]"' in message


def test_extensionless_dicom_in_folders_and_manifests(tmp_path: Path) -> None:
    # a PACS export named IM0001 is found by its DICM marker; a README beside it is not an image
    pixels = np.full((4, 4), 4095, dtype=np.uint16)
    write_dicom(tmp_path / "train" / "a" / "IM0001", pixels, "MONOCHROME2", BitsStored=12)
    write_dicom(tmp_path / "train" / "b" / "IM0002", pixels // 2, "MONOCHROME2", BitsStored=12)
    write_dicom(tmp_path / "test" / "a" / "IM0003", pixels, "MONOCHROME2", BitsStored=12)
    (tmp_path / "train" / "a" / "README").write_text("not an image\n" * 20)
    out = read_imagefolder(tmp_path, ("a", "b"), size=4)
    assert out["train"].paths == ["train/a/IM0001", "train/b/IM0002"]
    assert (out["train"].images[0] == 255).all() and (
        out["train"].images[1] == 127
    ).all()  # 2047 * 255 / 4095
    (tmp_path / "labels.csv").write_text(
        "image,label,split\ntrain/a/IM0001,a,train\ntrain/b/IM0002,b,train\ntest/a/IM0003,a,test\n"
    )
    listed = read_csv_manifest(tmp_path, tmp_path / "labels.csv", ("a", "b"), size=4)
    assert np.array_equal(listed["train"].images, out["train"].images)


OLD = 1_600_000_000  # files settled long ago, so the decoded cache writes them


@pytest.fixture
def dicom_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A card `ctfolder` (imagefolder of windowed 12-bit .dcm files, two classes, learnable)."""
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "ctfolder.toml").write_text(
        'name = "ctfolder"\ntitle = "t"\nlicense = "t"\nsource = "t"\nlayout = "t"\n'
        'task = "binary"\nformat = "imagefolder"\nprimary_metric = "auc"\n'
        'classes = ["normal", "lesion"]\nimage_size = 32\nval_fraction = 0.25\nepochs = 1\n'
    )
    monkeypatch.setenv("MEDPEFT_CARDS", str(cards))
    monkeypatch.delenv("MEDPEFT_DECODED_CACHE", raising=False)
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        for label, cls in enumerate(("normal", "lesion")):
            for i in range(n):
                pixels = rng.integers(0, 2000, (32, 32)).astype(np.uint16)
                pixels[:16] += 2000 * label  # the lesion class is brighter on top
                path = write_dicom(
                    root / "ctfolder" / split / cls / f"{i}.dcm",
                    pixels,
                    "MONOCHROME2",
                    BitsStored=12,
                    WindowCenter=2048,
                    WindowWidth=4096,
                )
                os.utime(path, (OLD, OLD))
    return root


@pytest.mark.slow
def test_dicom_dataset_loads_caches_and_trains_a_cell(dicom_card: Path) -> None:
    from bench import harness
    from bench.grid import GridRequest, data_key, plan

    card = get_card("ctfolder")
    first = load_dataset(card, dicom_card)
    assert {k: len(v) for k, v in first.splits.items()} == {"train": 12, "val": 4, "test": 8}
    assert first.splits["train"].images.shape[1:] == (1, 32, 32)
    # the second load is the decoded cache's memory-mapped copy: the same pixels
    again = load_dataset(card, dicom_card)
    assert again.fingerprint == first.fingerprint
    assert not again.splits["train"].images.numpy().flags["OWNDATA"]
    req = GridRequest(methods=["linear"], datasets=["ctfolder"], seeds=[0], backbone="demo-vit",
                      pretrained=False, epochs=1, batch_size=8, device="cpu",
                      data_root=dicom_card, results=dicom_card / "results")  # fmt: skip
    p = plan(req, progress=False)
    record = harness.run_cell(p.cells[0], p.datasets[data_key(p.cells[0])], p.source)
    assert record["status"] == "ok", record.get("traceback")
    assert record["dataset"]["sizes"] == {"train": 12, "val": 4, "test": 8}
    assert 0.0 <= record["metrics"]["test"]["auc"] <= 1.0
