#!/usr/bin/env python3
"""Realistic DICOM test data for Cohort's end-to-end suite.

Every subcommand writes into --out DIR (storescu writes nothing) and prints one JSON
document on stdout:

    {"command": "...", "seed": N, "files": [{"path", "size", "patient_id", "patient_name",
      "study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid",
      "modality", "instance_number", "transfer_syntax_uid", "study_description",
      "series_description"}],
     "entries": [...]}            # zip / bad-zip: what is inside the archive

DICOM fields are null for files that are not DICOM (the archives). Diagnostics go to
stderr; the exit status is 0 on success, 1 on failure, 2 on a usage error.

Subcommands:
  study            patients / studies / series / instances of valid DICOM (CT, MR, PT, CR,
                   US, OT built with pydicom; SC built with highdicom)
  pydicom-samples  a few of pydicom's bundled test files that Orthanc 1.10.1 stores
  zip              a ZIP of files and directories, optionally with junk, nesting, and
                   path-traversal entry names
  bad-zip          broken or hostile archives: truncated, corrupt-crc, bomb, lying-size,
                   many-entries
  storescu         C-STORE files to a DICOM peer (pynetdicom)

With --seed the output is byte-for-byte reproducible (UIDs, pixels, ZIP timestamps);
without it a random seed is drawn and reported in the summary.

Only the standard library, pydicom, highdicom (and what they depend on: numpy, Pillow,
pyjpegls) and pynetdicom are used.
"""

from __future__ import annotations

import argparse
import bz2
import datetime as dt
import hashlib
import io
import json
import random
import shutil
import struct
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

# --------------------------------------------------------------------------------------
# Constants

TRANSFER_SYNTAXES = {
    "explicit-le": ExplicitVRLittleEndian,
    "implicit-le": ImplicitVRLittleEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
    "rle": RLELossless,  # pydicom's own RLE encoder
    "jpeg-ls": JPEGLSLossless,  # pydicom + pyjpegls (a highdicom dependency)
    "jpeg-baseline": JPEGBaseline8Bit,  # highdicom's encoder (Pillow); 8-bit modalities only
}

# pydicom's bundled test files that Orthanc 1.10.1 stores ("Success" to POST /instances,
# checked by hand), all with the DICM preamble, a PatientID and distinct SOP Instance
# UIDs. Left out on purpose: rtstruct.dcm (Orthanc stores it, but it has no preamble /
# "DICM", so it does not sniff as DICOM), image_dfl.dcm / test-SR.dcm / reportsi.dcm (no
# PatientID), the MR_small_* / rtdose_* / JPGExtended / JPEG2000 variants (same SOP
# Instance UID as a file above), and the truncated or broken files pydicom keeps for its
# own error paths (Orthanc answers "Bad file format" or "Inexistent tag").
PYDICOM_SAMPLES = (
    "CT_small.dcm",  # CT, explicit VR LE, ISO_IR 100
    "MR_small.dcm",  # MR, explicit VR LE
    "JPEG-lossy.dcm",  # NM secondary capture, JPEG Extended (process 2 & 4), 12-bit
    "693_J2KI.dcm",  # CT, JPEG 2000
    "SC_rgb_jpeg_dcmtk.dcm",  # RGB secondary capture, JPEG Baseline, ISO_IR 192
    "examples_ybr_color.dcm",  # US multi-frame (30), JPEG Baseline YBR
    "rtplan.dcm",  # RT Plan, implicit VR LE, no pixel data
    "rtdose.dcm",  # RT Dose, 15 frames, implicit VR LE
    "liver_1frame.dcm",  # Segmentation
    "waveform_ecg.dcm",  # 12-lead ECG waveform, no image
)

FIXED_ZIP_TIME = (2024, 1, 15, 12, 0, 0)
ZIP_DOS_TIME = (12 << 11) | (0 << 5) | 0
ZIP_DOS_DATE = ((2024 - 1980) << 9) | (1 << 5) | 15

MANUFACTURER = "Cohort Research Imaging"
MODEL = "cohort-dicomgen"
SOFTWARE = "gen.py 1"


@dataclass(frozen=True)
class ModalitySpec:
    sop_class: str
    descriptions: tuple[str, ...]
    body_parts: tuple[str, ...]
    bits_stored: int  # 8 means 8-bit allocation
    max_value: int
    plane: bool  # Image Plane module (CT, MR, PT) vs. Patient Orientation (projection images)


MODALITIES = {
    "CT": ModalitySpec(
        "1.2.840.10008.5.1.4.1.1.2",
        ("CT Thorax 5mm", "CT Abdomen Pelvis 3mm", "CT Head non-contrast"),
        ("CHEST", "ABDOMEN", "HEAD"),
        12,
        2400,
        True,
    ),
    "MR": ModalitySpec(
        "1.2.840.10008.5.1.4.1.1.4",
        ("MR Brain T1 SE axial", "MR Brain T2 TSE axial", "MR Brain FLAIR"),
        ("BRAIN", "BRAIN", "BRAIN"),
        12,
        1800,
        True,
    ),
    "PT": ModalitySpec(
        "1.2.840.10008.5.1.4.1.1.128",
        ("PET FDG whole body AC", "PET FDG whole body NAC"),
        ("WHOLEBODY", "WHOLEBODY"),
        16,
        30000,
        True,
    ),
    "CR": ModalitySpec(
        "1.2.840.10008.5.1.4.1.1.1",
        ("Chest PA", "Chest lateral"),
        ("CHEST", "CHEST"),
        12,
        4000,
        False,
    ),
    "US": ModalitySpec(
        "1.2.840.10008.5.1.4.1.1.6.1",
        ("US Abdomen", "US Thyroid"),
        ("ABDOMEN", "NECK"),
        8,
        255,
        False,
    ),
    "OT": ModalitySpec(
        "1.2.840.10008.5.1.4.1.1.7",
        ("Scanned document", "Screen capture"),
        ("", ""),
        8,
        255,
        False,
    ),
    # Built with highdicom's SCImage (Secondary Capture, Modality OT in the file).
    "SC": ModalitySpec(
        "1.2.840.10008.5.1.4.1.1.7",
        ("Secondary capture (highdicom)",),
        ("",),
        8,
        255,
        False,
    ),
}


class UsageError(Exception):
    """A bad option: exit status 2."""


def log(msg: str) -> None:
    print(f"gen.py: {msg}", file=sys.stderr)


def new_seed() -> int:
    return random.SystemRandom().randrange(1, 2**62)


def uid(seed: int, *parts: object) -> UID:
    """A valid UID (pydicom's root + a hash), deterministic in the seed and the parts."""
    return generate_uid(entropy_srcs=[f"cohort-dicomgen:{seed}", *(str(p) for p in parts)])


def rng(seed: int, *parts: object) -> np.random.Generator:
    digest = hashlib.sha256(repr((seed, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def python_codecs(charset: str) -> list[str]:
    from pydicom.charset import convert_encodings

    return convert_encodings([c.strip() for c in charset.split("\\")])


def check_encodable(text: str, charset: str, what: str) -> None:
    if charset.strip() in ("ISO_IR 192", "GB18030", "GBK"):
        return
    codecs = python_codecs(charset)
    try:
        text.encode(codecs[0])
    except UnicodeEncodeError as e:
        raise UsageError(f"{what} {text!r} cannot be encoded in {charset!r} ({codecs[0]}): {e}") from None


def parse_date(value: str, what: str) -> dt.date:
    try:
        return dt.datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        raise UsageError(f"{what} must be YYYYMMDD, got {value!r}") from None


def age_string(birth: dt.date, on: dt.date) -> str:
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return f"{max(years, 0):03d}Y"


def dicom_summary(path: Path, ds: Dataset | None = None) -> dict:
    if ds is None:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    meta = getattr(ds, "file_meta", None)

    def get(keyword: str):
        value = ds.get(keyword)
        return None if value is None else str(value)

    number = ds.get("InstanceNumber")
    return {
        "path": str(path.resolve()),
        "size": path.stat().st_size,
        "patient_id": get("PatientID"),
        "patient_name": get("PatientName"),
        "study_instance_uid": get("StudyInstanceUID"),
        "series_instance_uid": get("SeriesInstanceUID"),
        "sop_instance_uid": get("SOPInstanceUID"),
        "sop_class_uid": get("SOPClassUID"),
        "modality": get("Modality"),
        "instance_number": None if number in (None, "") else int(number),
        "transfer_syntax_uid": str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else None,
        "study_description": get("StudyDescription"),
        "series_description": get("SeriesDescription"),
    }


def plain_summary(path: Path) -> dict:
    return {"path": str(path.resolve()), "size": path.stat().st_size}


def emit(command: str, files: list[dict], seed: int | None = None, **extra) -> None:
    doc = {"command": command, "seed": seed, "files": files}
    doc.update(extra)
    json.dump(doc, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


# --------------------------------------------------------------------------------------
# study


def phantom(spec: ModalitySpec, rows: int, cols: int, index: int, count: int, r: np.random.Generator) -> np.ndarray:
    """A body-like ellipse with an 'organ' that grows and shrinks along the slices, and noise."""
    y, x = np.mgrid[-1 : 1 : rows * 1j, -1 : 1 : cols * 1j]
    img = np.zeros((rows, cols), dtype=np.float64)
    body = (x / 0.85) ** 2 + (y / 0.7) ** 2 < 1.0
    img[body] = 0.45
    ring = body & ((x / 0.85) ** 2 + (y / 0.7) ** 2 > 0.82)
    img[ring] = 0.9
    radius = 0.1 + 0.25 * np.sin(np.pi * (index + 1) / (count + 1))
    organ = (x + 0.25) ** 2 + (y - 0.05) ** 2 < radius**2
    img[organ] = 0.7
    lesion = (x - 0.3) ** 2 + (y + 0.2) ** 2 < (0.06 + 0.02 * (index % 3)) ** 2
    img[lesion] = 1.0
    img += r.normal(0.0, 0.02, size=img.shape)
    img = np.clip(img, 0.0, 1.0)
    arr = np.round(img * spec.max_value)
    return arr.astype(np.uint8 if spec.bits_stored == 8 else np.uint16)


def add_common(
    ds: Dataset,
    *,
    opts: argparse.Namespace,
    patient_id: str,
    birth: dt.date | None,
    study_date: dt.date,
    study_time: str,
    study_no: int,
    study_uid: str,
    study_desc: str,
    accession: str,
    modality: str,
    series_uid: str,
    series_no: int,
    series_desc: str,
    body_part: str,
    frame_uid: str,
    instance_no: int,
) -> None:
    date = study_date.strftime("%Y%m%d")
    ds.SpecificCharacterSet = opts.charset
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = study_time
    # Patient
    ds.PatientName = opts.patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth.strftime("%Y%m%d") if birth else ""
    ds.PatientSex = opts.sex
    if birth:
        ds.PatientAge = age_string(birth, study_date)
    # General Study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = date
    ds.StudyTime = study_time
    ds.ReferringPhysicianName = opts.referring_physician
    ds.StudyID = f"S{study_no}"
    ds.AccessionNumber = accession
    ds.StudyDescription = study_desc
    ds.InstitutionName = opts.institution
    # General Series
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_no
    ds.SeriesDescription = series_desc
    ds.SeriesDate = date
    ds.SeriesTime = study_time
    if body_part:
        ds.BodyPartExamined = body_part
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL
    ds.SoftwareVersions = SOFTWARE
    ds.StationName = "COHORTGEN"
    # General Image / Acquisition
    ds.InstanceNumber = instance_no
    ds.ContentDate = date
    ds.ContentTime = study_time
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = date
    ds.AcquisitionTime = study_time
    if frame_uid:
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""


def add_pixels(ds: Dataset, arr: np.ndarray, bits_stored: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated = 8 if bits_stored == 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OB" if bits_stored == 8 else "OW"


def build_pydicom_instance(
    spec: ModalitySpec, modality: str, arr: np.ndarray, index: int, count: int, common: dict, opts: argparse.Namespace
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = spec.sop_class
    ds.SOPInstanceUID = common.pop("sop_uid")
    add_common(ds, opts=opts, modality=modality, **common)
    thickness = 5.0 if modality != "MR" else 4.0
    spacing = round(350.0 / arr.shape[1], 4)
    if spec.plane:
        ds.PatientPosition = "HFS"
        ds.PixelSpacing = [spacing, spacing]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        z = -100.0 + index * thickness
        ds.ImagePositionPatient = [-175.0, -175.0, z]
        ds.SliceThickness = thickness
        ds.SliceLocation = z
    else:
        ds.PatientOrientation = ["L", "F"] if modality == "CR" else ["A", "F"]
        if modality in ("CR",):
            ds.ImagerPixelSpacing = [0.2, 0.2]
    add_pixels(ds, arr, spec.bits_stored)

    if modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.KVP = 120
        ds.XRayTubeCurrent = 200
        ds.ConvolutionKernel = "STANDARD"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
    elif modality == "MR":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = "se2d1"
        ds.RepetitionTime = 500.0
        ds.EchoTime = 15.0
        ds.EchoTrainLength = 1
        ds.ImagingFrequency = 63.87
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = 1.5
        ds.SpacingBetweenSlices = thickness
        ds.WindowCenter = 600
        ds.WindowWidth = 1200
    elif modality == "PT":
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.Units = "BQML"
        ds.CountsSource = "EMISSION"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.CorrectedImage = ["DECY", "ATTN", "SCAT"]
        ds.DecayCorrection = "START"
        ds.RandomsCorrectionMethod = "DLYD"
        ds.AttenuationCorrectionMethod = "CT"
        ds.ReconstructionMethod = "OSEM"
        ds.NumberOfSlices = count
        ds.ImageIndex = index + 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 0.5
        ds.FrameReferenceTime = 0
        ds.ActualFrameDuration = 120000
        ds.DecayFactor = 1.0
        ds.PatientOrientationCodeSequence = Sequence()
        radio = Dataset()
        radio.Radiopharmaceutical = "Fluorodeoxyglucose"
        radio.RadiopharmaceuticalStartTime = "080000"
        radio.RadionuclideTotalDose = 250000000
        radio.RadionuclideHalfLife = 6586.2
        radio.RadionuclidePositronFraction = 0.967
        code = Dataset()
        code.CodeValue = "C-111A1"
        code.CodingSchemeDesignator = "SRT"
        code.CodeMeaning = "^18^Fluorine"
        radio.RadionuclideCodeSequence = Sequence([code])
        ds.RadiopharmaceuticalInformationSequence = Sequence([radio])
    elif modality == "CR":
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.ViewPosition = "PA" if index % 2 == 0 else "LL"
        ds.KVP = 125
        ds.WindowCenter = 2000
        ds.WindowWidth = 4000
    elif modality == "US":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    elif modality == "OT":
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.ConversionType = "WSD"
    return ds


def build_highdicom_sc(arr: np.ndarray, common: dict, opts: argparse.Namespace, ts: str) -> Dataset:
    import highdicom as hd

    birth = common["birth"]
    ds = hd.sc.SCImage(
        pixel_array=arr,
        photometric_interpretation="MONOCHROME2",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=common["study_uid"],
        series_instance_uid=common["series_uid"],
        series_number=common["series_no"],
        sop_instance_uid=common["sop_uid"],
        instance_number=common["instance_no"],
        manufacturer=MANUFACTURER,
        patient_id=common["patient_id"],
        patient_name=opts.patient_name,
        patient_birth_date=birth.strftime("%Y%m%d") if birth else None,
        patient_sex=opts.sex,
        accession_number=common["accession"],
        study_id=f"S{common['study_no']}",
        study_date=common["study_date"],
        study_time=dt.datetime.strptime(common["study_time"], "%H%M%S").time(),
        referring_physician_name=opts.referring_physician or None,
        pixel_spacing=(0.5, 0.5),
        patient_orientation=("L", "P"),
        transfer_syntax_uid=ts,
        specific_character_set=opts.charset,
        series_description=common["series_desc"],
    )
    date = common["study_date"].strftime("%Y%m%d")
    ds.StudyDescription = common["study_desc"]
    ds.InstitutionName = opts.institution
    ds.ManufacturerModelName = MODEL
    ds.SoftwareVersions = SOFTWARE
    ds.ContentDate = date
    ds.ContentTime = common["study_time"]
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = common["study_time"]
    ds.SeriesDate = date
    ds.SeriesTime = common["study_time"]
    if birth:
        ds.PatientAge = age_string(birth, common["study_date"])
    # highdicom stamps the wall clock in these: pin them for reproducible files
    ds.DateOfSecondaryCapture = date
    ds.TimeOfSecondaryCapture = common["study_time"]
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + common["study_time"]
    return ds


def encode(ds: Dataset, arr: np.ndarray, ts: UID, bits_stored: int) -> None:
    """Sets the file meta and, for the compressed syntaxes, compresses the pixel data."""
    if not hasattr(ds, "file_meta") or ds.file_meta is None or len(ds.file_meta) == 0:
        ds.file_meta = FileMetaDataset()
    ds.preamble = b"\x00" * 128
    meta = ds.file_meta
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationVersionName = "COHORT_GEN_1"
    if ts == JPEGBaseline8Bit:
        if "TransferSyntaxUID" in meta and meta.TransferSyntaxUID == JPEGBaseline8Bit:
            return  # highdicom already encoded it
        from highdicom.frame import encode_frame
        from pydicom.encaps import encapsulate

        frame = encode_frame(arr, JPEGBaseline8Bit, 8, 8, "MONOCHROME2")
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = round(arr.nbytes / len(frame), 2)
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        meta.TransferSyntaxUID = JPEGBaseline8Bit
    elif ts in (RLELossless, JPEGLSLossless):
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(ts, arr=arr, generate_instance_uid=False)
    else:
        meta.TransferSyntaxUID = ts


def cmd_study(opts: argparse.Namespace) -> int:
    seed = opts.seed if opts.seed is not None else new_seed()
    out = Path(opts.out)
    modalities = [m.strip().upper() for m in opts.modalities.split(",") if m.strip()]
    for m in modalities:
        if m not in MODALITIES:
            raise UsageError(f"unknown modality {m!r}; known: {', '.join(MODALITIES)}")
    ts = TRANSFER_SYNTAXES[opts.transfer_syntax]
    if ts == JPEGBaseline8Bit:
        wide = [m for m in modalities if MODALITIES[m].bits_stored != 8]
        if wide:
            raise UsageError(
                f"jpeg-baseline is 8-bit and the {'/'.join(wide)} IODs require 16-bit pixels; "
                "use US, OT or SC, or the lossless rle / jpeg-ls syntaxes"
            )
    counts = {
        "--patients": opts.patients,
        "--studies": opts.studies,
        "--series": opts.series,
        "--instances": opts.instances,
        "--rows": opts.rows,
        "--cols": opts.cols,
    }
    for what, n in counts.items():
        if n < 1:
            raise UsageError(f"{what} must be at least 1")
    birth = parse_date(opts.birth_date, "--birth-date") if opts.birth_date else None
    first_date = parse_date(opts.study_date, "--study-date")
    check_encodable(opts.patient_name, opts.charset, "--patient-name")
    check_encodable(opts.study_description, opts.charset, "--study-description")
    check_encodable(opts.institution, opts.charset, "--institution")
    check_encodable(opts.referring_physician, opts.charset, "--referring-physician")
    try:
        python_codecs(opts.charset)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"unknown --charset {opts.charset!r}: {e}") from None
    base_id = opts.patient_id or f"GEN{seed % 10**10:010d}"

    files = []
    for p in range(1, opts.patients + 1):
        patient_id = base_id if opts.patients == 1 else f"{base_id}-{p}"
        safe_pid = "".join(c if c.isalnum() or c in "-_." else "_" for c in patient_id)
        for s in range(1, opts.studies + 1):
            study_uid = uid(seed, patient_id, "study", s)
            study_date = first_date + dt.timedelta(days=35 * (s - 1))
            study_time = f"{(8 + s) % 24:02d}{(7 * s) % 60:02d}00"
            study_desc = opts.study_description if opts.studies == 1 else f"{opts.study_description} {s}"
            accession = f"A{hashlib.sha256(f'{seed}:{patient_id}:{s}'.encode()).hexdigest()[:12].upper()}"
            frame_uid = uid(seed, patient_id, "frame", s)
            for e in range(1, opts.series + 1):
                modality = modalities[(e - 1) % len(modalities)]
                spec = MODALITIES[modality]
                nth = (e - 1) // len(modalities)
                series_desc = spec.descriptions[nth % len(spec.descriptions)]
                body_part = spec.body_parts[nth % len(spec.body_parts)]
                series_uid = uid(seed, patient_id, "series", s, e)
                for i in range(opts.instances):
                    sop_uid = uid(seed, patient_id, "instance", s, e, i + 1)
                    arr = phantom(spec, opts.rows, opts.cols, i, opts.instances, rng(seed, patient_id, s, e, i))
                    common = dict(
                        patient_id=patient_id,
                        birth=birth,
                        study_date=study_date,
                        study_time=study_time,
                        study_no=s,
                        study_uid=study_uid,
                        study_desc=study_desc,
                        accession=accession,
                        series_uid=series_uid,
                        series_no=e,
                        series_desc=series_desc,
                        body_part=body_part,
                        frame_uid=frame_uid if spec.plane else "",
                        instance_no=i + 1,
                        sop_uid=sop_uid,
                    )
                    if modality == "SC":
                        native = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit)
                        hd_ts = ts if ts in native else ExplicitVRLittleEndian
                        ds = build_highdicom_sc(arr, common, opts, hd_ts)
                    else:
                        ds = build_pydicom_instance(spec, modality, arr, i, opts.instances, common, opts)
                    encode(ds, arr, ts, spec.bits_stored)
                    path = out / safe_pid / f"ST{s:02d}" / f"SE{e:02d}" / f"IM{i + 1:04d}.dcm"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    ds.save_as(path, enforce_file_format=True)
                    files.append(dicom_summary(path, ds))
    emit("study", files, seed)
    return 0


def generated_dicoms(seed: int, instances: int = 4) -> list[tuple[str, bytes]]:
    """A small default study (one CT series) for the archive commands, as (name, bytes)."""
    with tempfile.TemporaryDirectory(prefix="dicomgen-") as tmp:
        opts = study_parser().parse_args(
            ["--out", tmp, "--seed", str(seed), "--instances", str(instances), "--modalities", "CT",
             "--patient-id", f"ZIP{seed % 10**8:08d}"]
        )
        saved = sys.stdout
        sys.stdout = io.StringIO()
        try:
            cmd_study(opts)
        finally:
            sys.stdout = saved
        paths = sorted(Path(tmp).rglob("*.dcm"))
        return [(p.relative_to(tmp).as_posix(), p.read_bytes()) for p in paths]


# --------------------------------------------------------------------------------------
# pydicom-samples


def cmd_pydicom_samples(opts: argparse.Namespace) -> int:
    from pydicom.data import get_testdata_file

    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    names = opts.names.split(",") if opts.names else PYDICOM_SAMPLES
    files = []
    for name in names:
        src = get_testdata_file(name, download=False)
        if src is None:
            raise RuntimeError(f"pydicom test file {name!r} is not available in this pydicom ({pydicom.__version__})")
        dst = out / name
        shutil.copyfile(src, dst)
        files.append(dicom_summary(dst))
    emit("pydicom-samples", files, None)
    return 0


# --------------------------------------------------------------------------------------
# zip


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def derive(data: bytes, tag: str) -> tuple[bytes, str]:
    """The same instance with a new (deterministic) SOP Instance UID, so that it stores
    as a distinct instance."""
    ds = pydicom.dcmread(io.BytesIO(data))
    new_uid = generate_uid(entropy_srcs=["cohort-dicomgen-derived", str(ds.SOPInstanceUID), tag])
    ds.SOPInstanceUID = new_uid
    ds.file_meta.MediaStorageSOPInstanceUID = new_uid
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), str(new_uid)


def sop_uid_of(data: bytes) -> str | None:
    if not is_dicom(data):
        return None
    try:
        return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
    except Exception:  # noqa: BLE001
        return None


def collect_inputs(paths: list[str]) -> list[tuple[str, Path]]:
    """(entry name, file) for every file given or found under a directory given."""
    result: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file())
            items = [(f.relative_to(p).as_posix(), f) for f in found]
        elif p.is_file():
            items = [(p.name, p)]
        else:
            raise UsageError(f"no such file or directory: {arg}")
        for name, f in items:
            unique, n = name, 1
            while unique in seen:
                n += 1
                unique = f"dup{n}/{name}"
            seen.add(unique)
            result.append((unique, f))
    return result


def junk_entries(first_name: str) -> list[tuple[str, bytes, str]]:
    """(name, bytes, what) of the non-DICOM things real archives carry."""
    folder, _, base = first_name.rpartition("/")
    apple = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + struct.pack(">H", 1)
    apple += struct.pack(">III", 9, 50, 32) + b"\x00" * 32  # one Finder Info entry
    ds_store = b"\x00\x00\x00\x01Bud1" + b"\x00\x00\x10\x00" * 4
    ds_store = ds_store + b"\x00" * (6148 - len(ds_store))
    pdf = (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )
    notes = "Notes de l'étude — protocole IRM, relu par Dr Lefèvre.\n".encode()
    return [
        (f"__MACOSX/{folder + '/' if folder else ''}._{base}", apple, "apple-double"),
        (".DS_Store", ds_store, "ds-store"),
        ("report.pdf", pdf, "pdf"),
        ("DICOMDIR", make_dicomdir(), "dicomdir"),
        ("notes.txt", notes, "text"),
    ]


def make_dicomdir() -> bytes:
    """A real (empty) DICOMDIR: DICM at offset 128, Media Storage Directory SOP class,
    no image in it."""
    ds = Dataset()
    ds.FileSetID = "COHORT"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = Sequence()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["cohort-dicomgen-dicomdir"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def zip_bytes(items: list[tuple[str, bytes]], compression: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, data in items:
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            info.compress_type = compression
            info.external_attr = 0o100644 << 16
            z.writestr(info, data)
    return buf.getvalue()


def cmd_zip(opts: argparse.Namespace) -> int:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    compression = zipfile.ZIP_STORED if opts.store else zipfile.ZIP_DEFLATED
    inputs = collect_inputs(opts.paths)
    if not inputs:
        raise UsageError("nothing to zip: give files or directories")
    contents = [(name, f.read_bytes(), f) for name, f in inputs]
    dicoms = [(name, data) for name, data, _ in contents if is_dicom(data)]
    if (opts.nested or opts.dotdot) and not dicoms:
        raise UsageError("--nested and --dotdot need at least one DICOM file among the inputs")

    entries: list[dict] = []
    outer: list[tuple[str, bytes]] = []

    def record(name: str, data: bytes, kind: str, depth: int, container: list[str], source: Path | None = None):
        entries.append(
            {
                "name": name,
                "container": container,
                "depth": depth,
                "kind": kind,
                "size": len(data),
                "sop_instance_uid": sop_uid_of(data) if kind == "dicom" else None,
                "source": str(source.resolve()) if source else None,
            }
        )

    if opts.nested:
        inner = []
        for name, data, src in contents:
            inner.append((name, data))
            record(name, data, "dicom" if is_dicom(data) else "file", 1, ["inner.zip"], src)
        inner_zip = zip_bytes(inner, compression)
        outer.append(("inner.zip", inner_zip))
        record("inner.zip", inner_zip, "zip", 0, [])
        deep, _ = derive(dicoms[0][1], "nested-deep")
        level2 = zip_bytes([("deep.dcm", deep)], compression)
        level1 = zip_bytes([("level2.zip", level2)], compression)
        outer.append(("level1.zip", level1))
        record("level1.zip", level1, "zip", 0, [])
        record("level2.zip", level2, "zip", 1, ["level1.zip"])
        record("deep.dcm", deep, "dicom", 2, ["level1.zip", "level2.zip"])
    else:
        for name, data, src in contents:
            outer.append((name, data))
            record(name, data, "dicom" if is_dicom(data) else "file", 0, [], src)

    if opts.junk:
        first = dicoms[0][0] if dicoms else contents[0][0]
        for name, data, kind in junk_entries(first):
            outer.append((name, data))
            record(name, data, f"junk:{kind}", 0, [])

    if opts.dotdot:
        for k, name in enumerate(("../../evil.dcm", "/abs/path.dcm", "..\\..\\evil-windows.dcm", "ok/../../../escape.dcm")):
            data, _ = derive(dicoms[0][1], f"dotdot-{k}")
            outer.append((name, data))
            record(name, data, "dicom", 0, [])

    path = out / opts.name
    path.write_bytes(zip_bytes(outer, compression))
    emit("zip", [plain_summary(path)], None, entries=entries)
    return 0


# --------------------------------------------------------------------------------------
# bad-zip


def dos_header_fields(name: str) -> tuple[bytes, int]:
    try:
        return name.encode("ascii"), 0
    except UnicodeEncodeError:
        return name.encode("utf-8"), 0x800


@dataclass
class RawEntry:
    name: str
    method: int  # 0 stored, 8 deflate, 12 bzip2
    crc: int
    compressed_size: int  # what the headers declare
    uncompressed_size: int  # what the headers declare
    chunks: object  # iterable of bytes: the compressed data as written


def write_raw_zip(path: Path, entries: list[RawEntry]) -> None:
    """A ZIP written by hand, so that the headers can say what we want (no Zip64)."""
    central = []
    with path.open("wb") as f:
        for e in entries:
            name, flags = dos_header_fields(e.name)
            for v in (e.compressed_size, e.uncompressed_size):
                if not 0 <= v < 0xFFFFFFFF:
                    raise UsageError("sizes must stay below 4 GiB (this writer does not do Zip64)")
            version = 46 if e.method == 12 else 20
            offset = f.tell()
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, version, flags, e.method, ZIP_DOS_TIME, ZIP_DOS_DATE,
                                e.crc, e.compressed_size, e.uncompressed_size, len(name), 0))
            f.write(name)
            written = 0
            for chunk in e.chunks:
                f.write(chunk)
                written += len(chunk)
            if written != e.compressed_size:
                raise RuntimeError(f"internal: wrote {written} bytes for {e.name}, declared {e.compressed_size}")
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | version, version, flags, e.method,
                                       ZIP_DOS_TIME, ZIP_DOS_DATE, e.crc, e.compressed_size, e.uncompressed_size,
                                       len(name), 0, 0, 0, 0, 0o100644 << 16, offset) + name)
        cd_offset = f.tell()
        for c in central:
            f.write(c)
        cd_size = f.tell() - cd_offset
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), cd_size, cd_offset, 0))


def stored_entry(name: str, data: bytes) -> RawEntry:
    return RawEntry(name, 0, zlib.crc32(data), len(data), len(data), [data])


def deflate_zeros(prefix: bytes, total: int, chunk: int = 16 << 20) -> tuple[list[bytes], int, int]:
    """Raw deflate of `prefix` followed by zeros up to `total` bytes, without building
    the data: after a full flush zlib's state is reset, so every further chunk of zeros
    compresses to the same bytes and is written by repetition. Returns (pieces to write
    in order, as a lazy list; compressed size; CRC-32 of the inflated data)."""
    zeros_len = total - len(prefix)
    if zeros_len < 0:
        raise UsageError("size is smaller than the DICOM prefix")
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    zero = bytes(chunk)
    seg = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    if seg != again:
        raise RuntimeError("zlib did not repeat itself after a full flush")
    reps, rest = divmod(zeros_len, chunk)
    tail = c.compress(bytes(rest)) + c.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    for _ in range(reps):
        crc = zlib.crc32(zero, crc)
    crc = zlib.crc32(bytes(rest), crc)
    size = len(head) + reps * len(seg) + len(tail)

    def pieces():
        yield head
        for _ in range(reps):
            yield seg
        yield tail

    return pieces(), size, crc


def bzip2_zeros(prefix: bytes, total: int, chunk: int = 16 << 20) -> tuple[list[bytes], int, int]:
    c = bz2.BZ2Compressor(9)
    parts = [c.compress(prefix)]
    crc = zlib.crc32(prefix)
    left = total - len(prefix)
    zero = bytes(chunk)
    while left > 0:
        n = min(left, chunk)
        block = zero if n == chunk else bytes(n)
        parts.append(c.compress(block))
        crc = zlib.crc32(block, crc)
        left -= n
    parts.append(c.flush())
    parts = [p for p in parts if p]
    return parts, sum(len(p) for p in parts), crc


def cmd_bad_zip(opts: argparse.Namespace) -> int:
    seed = opts.seed if opts.seed is not None else new_seed()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if opts.paths:
        dicoms = [(name, f.read_bytes()) for name, f in collect_inputs(opts.paths)]
        dicoms = [(n, d) for n, d in dicoms if is_dicom(d)]
        if not dicoms:
            raise UsageError("no DICOM file among the inputs")
    else:
        dicoms = generated_dicoms(seed)
    path = out / (opts.name or f"{opts.kind}.zip")
    entries: list[dict] = []
    extra: dict = {}

    def note(name: str, data: bytes | None, kind: str, **more):
        entries.append({"name": name, "kind": kind, "sop_instance_uid": sop_uid_of(data) if data else None, **more})

    if opts.kind == "truncated":
        whole = zip_bytes(dicoms, zipfile.ZIP_DEFLATED)
        cut = len(whole) // 2
        path.write_bytes(whole[:cut])
        for name, data in dicoms:
            note(name, data, "dicom")
        extra = {"original_size": len(whole), "cut_at": cut}
    elif opts.kind == "corrupt-crc":
        # Deflated entries around one stored entry whose last bytes (pixel data) are
        # flipped: the headers and the central directory are intact, the DICOM still
        # parses, only the CRC-32 check finds it.
        victim = len(dicoms) // 2
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for k, (name, data) in enumerate(dicoms):
                info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
                info.compress_type = zipfile.ZIP_STORED if k == victim else zipfile.ZIP_DEFLATED
                z.writestr(info, data)
        raw = bytearray(buf.getvalue())
        with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
            info = z.getinfo(dicoms[victim][0])
        name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len
        end = start + info.compress_size
        flip_at = end - 64
        for k in range(flip_at, flip_at + 16):
            raw[k] ^= 0xFF
        path.write_bytes(bytes(raw))
        for k, (name, data) in enumerate(dicoms):
            note(name, data, "corrupt" if k == victim else "dicom")
        extra = {"corrupt_entry": dicoms[victim][0], "flipped_offset": flip_at, "flipped_bytes": 16}
    elif opts.kind in ("bomb", "lying-size"):
        ok_name, ok_data = dicoms[0]
        prefix, prefix_uid = derive(dicoms[-1][1], opts.kind)
        if opts.kind == "bomb":
            total = opts.size or (2_000_000_000 if opts.method == "bzip2" else 1_000_000_000)
        else:
            total = opts.size or 256 << 20
        if opts.method == "bzip2":
            pieces, csize, crc = bzip2_zeros(prefix, total)
            method = 12
        else:
            pieces, csize, crc = deflate_zeros(prefix, total)
            method = 8
        declared = total if opts.kind == "bomb" else len(prefix)
        name = "bomb.dcm" if opts.kind == "bomb" else "lying.dcm"
        write_raw_zip(path, [stored_entry(ok_name, ok_data), RawEntry(name, method, crc, csize, declared, pieces)])
        note(ok_name, ok_data, "dicom")
        entries.append({"name": name, "kind": opts.kind, "sop_instance_uid": prefix_uid, "compressed_size": csize,
                        "declared_uncompressed_size": declared, "actual_uncompressed_size": total,
                        "method": opts.method})
        extra = {"declared_ratio": round(declared / csize, 1), "actual_ratio": round(total / csize, 1)}
        if opts.kind == "bomb" and opts.method == "deflate" and total / csize < 1000:
            log(f"note: deflate ratio is {total / csize:.0f}:1 (deflate cannot exceed about 1032:1)")
    elif opts.kind == "many-entries":
        if opts.count < 1:
            raise UsageError("--count must be at least 1")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
            for k in range(opts.count):
                info = zipfile.ZipInfo(f"entries/e{k:07d}.txt", date_time=FIXED_ZIP_TIME)
                z.writestr(info, b"x")
            # and one real DICOM, so an importer that does not count entries stores it
            info = zipfile.ZipInfo(dicoms[0][0], date_time=FIXED_ZIP_TIME)
            z.writestr(info, dicoms[0][1])
        path.write_bytes(buf.getvalue())
        note(dicoms[0][0], dicoms[0][1], "dicom")
        extra = {"tiny_entries": opts.count, "total_entries": opts.count + 1}
    else:
        raise UsageError(f"unknown --kind {opts.kind}")
    emit("bad-zip", [plain_summary(path)], seed, kind=opts.kind, entries=entries, **extra)
    return 0


# --------------------------------------------------------------------------------------
# storescu


def cmd_storescu(opts: argparse.Namespace) -> int:
    import logging

    from pynetdicom import AE

    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    files = [f for _, f in collect_inputs(opts.paths)]
    todo = []
    for f in files:
        with f.open("rb") as fh:
            head = fh.read(132)
        if not is_dicom(head):
            log(f"skipping {f}: not a DICOM file (no DICM at offset 128)")
            continue
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        todo.append((f, str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID), str(ds.SOPInstanceUID)))
    if not todo:
        raise UsageError("no DICOM file to send")
    contexts = sorted({(sop, ts) for _, sop, ts, _ in todo})
    if len(contexts) > 128:
        raise UsageError(f"{len(contexts)} SOP class / transfer syntax pairs: more than one association can carry (128)")
    ae = AE(ae_title=opts.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = opts.timeout
    for sop, ts in contexts:
        ae.add_requested_context(sop, ts)
    assoc = ae.associate(opts.host, opts.port, ae_title=opts.aet)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
        log(f"association with {opts.aet}@{opts.host}:{opts.port} {why}")
        return 1
    results, failures = [], []
    try:
        for f, sop, ts, sop_uid in todo:
            accepted = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == sop and cx.transfer_syntax[0] == ts]
            if not accepted:
                failures.append(f"{f}: the peer accepted no presentation context for {sop} / {ts}")
                results.append({"path": str(f.resolve()), "sop_instance_uid": sop_uid, "status": None, "ok": False})
                continue
            try:
                status = assoc.send_c_store(f)
            except Exception as e:  # noqa: BLE001
                failures.append(f"{f}: {e}")
                results.append({"path": str(f.resolve()), "sop_instance_uid": sop_uid, "status": None, "ok": False})
                continue
            code = status.get("Status") if status else None
            # 0x0000 success; 0xB000, 0xB006, 0xB007 stored with a warning
            ok = code is not None and (code == 0 or code in (0xB000, 0xB006, 0xB007))
            if not ok:
                failures.append(f"{f}: C-STORE status {'none (connection lost?)' if code is None else hex(code)}")
            results.append({"path": str(f.resolve()), "sop_instance_uid": sop_uid,
                            "status": None if code is None else f"0x{code:04X}", "ok": ok})
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    if len(results) < len(todo):
        failures.append(f"association lost after {len(results)} of {len(todo)} files")
    emit("storescu", [], None, sent=results, failed=len(failures))
    for msg in failures:
        log(msg)
    return 1 if failures else 0


# --------------------------------------------------------------------------------------
# command line


def study_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="gen.py study")
    p.add_argument("--out", required=True, help="directory to write into (created)")
    p.add_argument("--seed", type=int, help="make the output reproducible (UIDs, pixels)")
    p.add_argument("--patient-id", help="PatientID (default: GEN + digits of the seed)")
    p.add_argument("--patient-name", default="Dupré^Éloïse", help="PatientName, DICOM PN (Family^Given)")
    p.add_argument("--birth-date", default="19780412", help="PatientBirthDate YYYYMMDD ('' for none)")
    p.add_argument("--sex", default="F", choices=["F", "M", "O"], help="PatientSex")
    p.add_argument("--patients", type=int, default=1, help="patients (IDs get -1, -2... when more than one)")
    p.add_argument("--studies", type=int, default=1, help="studies per patient (35 days apart)")
    p.add_argument("--series", type=int, default=1, help="series per study")
    p.add_argument("--instances", type=int, default=1, help="instances per series")
    p.add_argument("--modalities", default="CT", help=f"cycled per series; of {','.join(MODALITIES)}")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--cols", type=int, default=64)
    p.add_argument("--charset", default="ISO_IR 192",
                   help="SpecificCharacterSet: 'ISO_IR 192' (UTF-8), 'ISO_IR 100' (Latin-1)...")
    p.add_argument("--transfer-syntax", default="explicit-le", choices=list(TRANSFER_SYNTAXES))
    p.add_argument("--study-date", default="20240115", help="date of the first study, YYYYMMDD")
    p.add_argument("--study-description", default="Research protocol", help="numbered when --studies > 1")
    p.add_argument("--institution", default="CHU Cohort", help="InstitutionName")
    p.add_argument("--referring-physician", default="Lefèvre^Hélène", help="ReferringPhysicianName")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gen.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    study_parser(sub.add_parser("study", help="generate patients/studies/series/instances"))

    p = sub.add_parser("pydicom-samples", help="copy pydicom test files that Orthanc stores")
    p.add_argument("--out", required=True)
    p.add_argument("--names", help=f"comma-separated test file names (default: {','.join(PYDICOM_SAMPLES)})")

    p = sub.add_parser("zip", help="ZIP files and directories (entries relative to each directory)")
    p.add_argument("--out", required=True)
    p.add_argument("--name", default="archive.zip", help="file name of the archive in --out")
    p.add_argument("--junk", action="store_true", help="add __MACOSX/._*, .DS_Store, report.pdf, DICOMDIR, notes.txt")
    p.add_argument("--nested", action="store_true",
                   help="inputs go into inner.zip; level1.zip/level2.zip/deep.dcm holds one more (new-UID) instance")
    p.add_argument("--dotdot", action="store_true",
                   help="add ../../evil.dcm, /abs/path.dcm, ..\\..\\evil-windows.dcm, ok/../../../escape.dcm (new-UID instances)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--deflate", action="store_true", help="deflate entries (default)")
    g.add_argument("--store", action="store_true", help="store entries uncompressed")
    p.add_argument("paths", nargs="+", help="files and directories")

    p = sub.add_parser("bad-zip", help="broken or hostile archives")
    p.add_argument("--out", required=True)
    p.add_argument("--kind", required=True, choices=["truncated", "corrupt-crc", "bomb", "lying-size", "many-entries"])
    p.add_argument("--name", help="file name of the archive (default: KIND.zip)")
    p.add_argument("--seed", type=int, help="seed of the generated DICOM inside")
    p.add_argument("--count", type=int, default=10000, help="many-entries: number of tiny entries")
    p.add_argument("--size", type=int,
                   help="bomb: declared and real inflated size (default 1e9 deflate, 2e9 bzip2); "
                        "lying-size: real inflated size (default 256 MiB)")
    p.add_argument("--method", choices=["deflate", "bzip2"], default="deflate", help="bomb / lying-size compression")
    p.add_argument("paths", nargs="*", help="DICOM files/directories to use (default: a generated 4-instance CT series)")

    p = sub.add_parser("storescu", help="C-STORE files to a DICOM peer")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--aet", default="ORTHANC", help="called AE title")
    p.add_argument("--calling-aet", default="COHORTGEN")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("paths", nargs="+", help="files and directories")
    return parser


COMMANDS = {
    "study": cmd_study,
    "pydicom-samples": cmd_pydicom_samples,
    "zip": cmd_zip,
    "bad-zip": cmd_bad_zip,
    "storescu": cmd_storescu,
}


def main(argv: list[str] | None = None) -> int:
    # The summary names patients: UTF-8 whatever the locale says.
    sys.stdout.reconfigure(encoding="utf-8")
    sys.stderr.reconfigure(encoding="utf-8", errors="backslashreplace")
    opts = build_parser().parse_args(argv)
    try:
        return COMMANDS[opts.command](opts)
    except UsageError as e:
        log(f"error: {e}")
        return 2
    except Exception as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        log(f"error: {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
