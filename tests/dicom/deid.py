#!/usr/bin/env python3
"""Helpers of the de-identification tests (tests/tests/research.rs).

enrich OUT PATHS...   copy DICOM files to OUT, adding what a hospital's files carry and
                      a de-identification must remove: physicians and operators,
                      institution address, station, other patient ids, device serial,
                      more dates, private tags; the first file gets BurnedInAnnotation=YES.
facts PATHS...        the identifying values of files (every string of an identifying
                      attribute, at any depth, and every private string), their UIDs,
                      pixel-data digests and study/series structure, as JSON.
check ZIP             what a de-identified archive holds, per DICOM entry, as JSON.
"""
import hashlib
import io
import json
import os
import shutil
import sys
import zipfile

import pydicom
from pydicom.dataset import Dataset

IDENTIFYING = {
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "OtherPatientIDs", "OtherPatientNames",
    "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName", "MedicalRecordLocator",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
    "ReferringPhysicianAddress", "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy", "RequestingPhysician", "AccessionNumber", "StationName", "DeviceSerialNumber",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate", "AcquisitionDateTime",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "ReferencedSOPInstanceUID",
    "StudyID", "RequestedProcedureID", "ScheduledProcedureStepID", "PerformedProcedureStepID", "RequestAttributesSequence",
    "PatientComments", "AdditionalPatientHistory", "ImageComments", "StudyDescription", "SeriesDescription",
}
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def dicom_files(paths):
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in sorted(os.walk(p)):
                for n in sorted(names):
                    yield os.path.join(root, n)
        else:
            yield p


def enrich(out, paths):
    os.makedirs(out, exist_ok=True)
    written = []
    for i, path in enumerate(dicom_files(paths)):
        ds = pydicom.dcmread(path)
        ds.OperatorsName = "Opérateur^Gaston"
        ds.PerformingPhysicianName = "Perfor^Mireille"
        ds.PhysiciansOfRecord = "Record^Bertrand"
        ds.InstitutionAddress = "12 rue des Lilas, 75020 Paris"
        ds.StationName = "CTSTATION7"
        ds.OtherPatientIDs = "NIR-1780412099123"
        ds.DeviceSerialNumber = "SN-88451234"
        ds.AcquisitionDate = ds.StudyDate
        ds.ContentDate = ds.StudyDate
        ds.PatientComments = "Allergic to iodine, lives in Lyon"
        block = ds.private_block(0x0011, "COHORT TEST PRIVATE", create=True)
        block.add_new(0x01, "LO", f"PRIVATE-SECRET-{i:04d}")
        block.add_new(0x02, "PN", "Secret^Surgeon")
        if i == 0:
            ds.BurnedInAnnotation = "YES"
        elif "BurnedInAnnotation" not in ds:
            ds.BurnedInAnnotation = "NO"
        dest = os.path.join(out, f"IM{i:04d}.dcm")
        ds.save_as(dest, write_like_original=False)
        written.append(dest)
    print(json.dumps({"files": written}))


def walk_strings(ds, into, private_into, benign):
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                walk_strings(item, into, private_into, benign)
            continue
        if elem.tag.group == 0x0002 or elem.value is None or elem.VR in ("OB", "OW", "OF", "OD", "UN", "US", "SS", "UL", "SL", "FL", "FD", "AT"):
            continue
        values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
        for v in values:
            s = str(v).strip()
            if elem.tag.is_private:
                if elem.VR in ("LO", "PN", "SH", "LT", "ST", "UT") and len(s) >= 6:
                    private_into.add(s)
            elif elem.keyword in IDENTIFYING and len(s) >= 6:
                into.add(s)
                if elem.VR == "PN":
                    for part in s.replace("=", "^").split("^"):
                        if len(part) >= 4:
                            into.add(part)
            else:
                benign.add(s)


def pixel_digest(ds):
    if "PixelData" not in ds:
        return None
    return hashlib.sha256(ds.PixelData).hexdigest()


def facts(paths):
    values, private, benign, uids, pixels, structure, withheld = set(), set(), set(), set(), [], {}, []
    for path in dicom_files(paths):
        ds = pydicom.dcmread(path)
        walk_strings(ds, values, private, benign)
        for k in UIDS:
            if k in ds and ds.get(k):
                uids.add(str(ds[k].value))
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            withheld.append(str(ds.SOPInstanceUID))
            continue
        pixels.append(pixel_digest(ds))
        key = (str(ds.PatientID), str(ds.StudyInstanceUID))
        structure.setdefault(key, {}).setdefault(str(ds.SeriesInstanceUID), 0)
        structure[key][str(ds.SeriesInstanceUID)] += 1
    shape = sorted(sorted(series.values()) for series in structure.values())
    # A string that a non-identifying attribute also holds (a manufacturer, a body part,
    # a code meaning) proves nothing when found in an export.
    values = {v for v in values if not any(v in b for b in benign)}
    private = {v for v in private if not any(v in b for b in benign)}
    print(json.dumps({
        "values": sorted(values), "private": sorted(private), "uids": sorted(uids),
        "pixels": sorted(p or "" for p in pixels), "structure": shape, "withheld": withheld,
    }))


def check(archive):
    out = {"instances": [], "json": {}}
    structure = {}
    with zipfile.ZipFile(archive) as z:
        for name in z.namelist():
            data = z.read(name)
            if name.endswith("patient.json"):
                out["json"][name] = json.loads(data)
                continue
            ds = pydicom.dcmread(io.BytesIO(data))
            private = [str(e.tag) for e in ds.iterall() if e.tag.is_private]
            dates = sorted({str(e.value) for e in ds.iterall() if e.VR in ("DA", "DT") and e.value})
            ds_pixels = pixel_digest(ds)
            if ds_pixels is not None:
                try:
                    ds.pixel_array  # decodes: the pixels are usable
                    decodable = True
                except Exception as e:  # a codec pydicom lacks (JPEG 2000) is not the export's fault
                    decodable = repr(e)
            else:
                decodable = None
            out["instances"].append({
                "name": name,
                "patient_id": str(ds.get("PatientID", "")),
                "patient_name": str(ds.get("PatientName", "")),
                "study": str(ds.StudyInstanceUID),
                "series": str(ds.SeriesInstanceUID),
                "sop": str(ds.SOPInstanceUID),
                "media_sop": str(ds.file_meta.get("MediaStorageSOPInstanceUID", "")),
                "frame_of_reference": str(ds.get("FrameOfReferenceUID", "")),
                "identity_removed": str(ds.get("PatientIdentityRemoved", "")),
                "method": str(ds.get("DeidentificationMethod", "")),
                "private_tags": private,
                "dates": dates,
                "pixels": ds_pixels,
                "decodable": decodable,
                "burned_in": str(ds.get("BurnedInAnnotation", "")),
            })
            key = (str(ds.PatientID), str(ds.StudyInstanceUID))
            structure.setdefault(key, {}).setdefault(str(ds.SeriesInstanceUID), 0)
            structure[key][str(ds.SeriesInstanceUID)] += 1
    out["structure"] = sorted(sorted(series.values()) for series in structure.values())
    out["pixels"] = sorted(i["pixels"] or "" for i in out["instances"])
    print(json.dumps(out))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "enrich":
        enrich(args[0], args[1:])
    elif cmd == "facts":
        facts(args)
    elif cmd == "check":
        check(args[0])
    else:
        sys.exit(f"unknown command {cmd}")
