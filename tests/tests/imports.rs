//! Importing what people actually bring (issue 14), against each deployment: DICOM
//! written without the 128-byte preamble (pydicom's own `rtstruct.dcm`), ZIP archives
//! compressed with Deflate64 (hand-made, and by Debian's `7z`), encrypted ZIPs made by
//! `7z` (ZipCrypto, AES-256), archives whose method Cohort still cannot read, and a
//! CD/DVD tree (`DICOMDIR` made by dcmtk's `dcmmkdir`, files without an extension
//! several levels deep) through `cohort import`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use cohort_e2e::deploy::sidecar_command;
use cohort_e2e::dicom::{self, StudySpec};
use cohort_e2e::{per_backend, per_deployment, Backend, Client, Deployment, Host, Resp};
use reqwest::Method;
use serde_json::json;

async fn import(c: &Client, content_type: &str, body: Vec<u8>) -> Resp {
    c.req(Method::POST, "/api/patients/import").body(content_type, body).send().await
}

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new(dicom::python()).arg("-c").arg(script).args(args).output().expect("run python");
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8").trim().to_string()
}

/// pydicom's `rtstruct.dcm`: a dataset written without preamble, `DICM` or file meta
/// (implicit VR little endian, starting with (0008,0005)). Orthanc stores it.
fn rtstruct() -> PathBuf {
    PathBuf::from(python("from pydicom.data import get_testdata_file as g; print(g('rtstruct.dcm'))", &[]))
}

/// Python's `zipfile` cannot write Deflate64. A Deflate stream of stored blocks is a
/// valid Deflate64 stream (the formats differ only in the window size and in length
/// code 285, which stored blocks never use), so the archive is written with Deflate at
/// level 0 and every entry relabelled as method 9 (or `method`), in the local headers
/// and the central directory alike.
const RELABEL: &str = r#"
import struct, sys, zipfile
out, method, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=0) as z:
    for i, f in enumerate(files):
        z.write(f, "CD/DICOM/ST%04d/IM%06d" % (i // 3, i))
data = bytearray(open(out, "rb").read())
with zipfile.ZipFile(out) as z:
    locals_ = [i.header_offset for i in z.infolist()]
    eocd = data.rindex(b"PK\x05\x06")
    count, size, start = struct.unpack("<HII", data[eocd + 10:eocd + 20])
for off in locals_:
    assert data[off:off + 4] == b"PK\x03\x04"
    data[off + 8:off + 10] = struct.pack("<H", method)
at = start
for _ in range(count):
    assert data[at:at + 4] == b"PK\x01\x02"
    data[at + 10:at + 12] = struct.pack("<H", method)
    n, m, k = struct.unpack("<HHH", data[at + 28:at + 34])
    at += 46 + n + m + k
open(out, "wb").write(bytes(data))
print(out)
"#;

fn relabelled_zip(dir: &Path, files: &[PathBuf], method: u16) -> Vec<u8> {
    let out = dir.join(format!("method-{method}.zip"));
    let mut args = vec![out.to_str().expect("path").to_string(), method.to_string()];
    args.extend(files.iter().map(|f| f.to_str().expect("path").to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    python(RELABEL, &args);
    std::fs::read(out).expect("read the archive")
}

/// Writes a tar with Python's `tarfile`: `mode` is "w", "w:gz"; each spec is
/// `file=NAME` (a regular file from a path), `symlink=NAME` or `zeros=NAME:SIZE`.
const TAR: &str = r#"
import io, sys, tarfile
out, mode, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
with tarfile.open(out, mode, format=tarfile.GNU_FORMAT) as t:
    for spec in specs:
        kind, rest = spec.split("=", 1)
        if kind == "file":
            path, name = rest.split("@", 1)
            info = t.gettarinfo(path)
            info.name = name  # as given: `add` would strip a leading "/"
            with open(path, "rb") as f:
                t.addfile(info, f)
        elif kind == "symlink":
            info = tarfile.TarInfo(rest)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            t.addfile(info)
        elif kind == "zeros":
            name, size = rest.split(":")
            info = tarfile.TarInfo(name)
            info.size = int(size)
            class Zeros(io.RawIOBase):
                left = int(size)
                def readinto(self, b):
                    n = min(len(b), self.left); b[:n] = bytes(n); self.left -= n; return n
            t.addfile(info, Zeros())
print(out)
"#;

fn tar_of(out: &Path, mode: &str, specs: &[String]) -> Vec<u8> {
    let mut args = vec![out.to_str().expect("path").to_string(), mode.to_string()];
    args.extend(specs.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    python(TAR, &args);
    std::fs::read(out).expect("read the archive")
}

fn members(files: &[PathBuf], prefix: &str) -> Vec<String> {
    files.iter().enumerate().map(|(i, f)| format!("file={}@{prefix}/IM{i:06}", f.display())).collect()
}

async fn patient_total(c: &Client) -> u64 {
    c.get("/api/patients").await.expect_status(200)["total"].as_u64().expect("total")
}

async fn tar_archives(d: Deployment) {
    let admin = d.admin().await;
    let dir = tempfile::tempdir().expect("temp dir");

    // A .tgz of a generated study, as a body and as a form part.
    let study = dicom::study(&StudySpec::new("IPP-TGZ").studies(1).series(2).instances(2).seed(143));
    let tgz = tar_of(&dir.path().join("study.tgz"), "w:gz", &members(&study.paths(), "study"));
    assert_eq!(&tgz[..2], b"\x1f\x8b");
    let r = import(&admin, "application/octet-stream", tgz.clone()).await.expect_status(200);
    assert_eq!(r["instances"], json!({"received": 4, "stored": 4, "already_stored": 0, "failed": 0}), "{r}");
    assert_eq!(r["patients"].as_array().map(Vec::len), Some(1), "{r}");
    let external = r["patients"][0]["external_id"].as_str().unwrap_or_default().to_string();
    let list = admin.get("/api/patients").await.expect_status(200);
    assert!(list.to_string().contains(&external), "registered: {list}");
    let r = import(&admin, "application/gzip", tgz).await.expect_status(200);
    assert_eq!(r["instances"]["already_stored"], 4, "{r}");

    // A .tar.zst, made by the zstd command line tool from a plain tar.
    let zst_study = dicom::study(&StudySpec::new("IPP-TZST").studies(1).series(1).instances(3).seed(144));
    let plain = dir.path().join("zst.tar");
    tar_of(&plain, "w", &members(&zst_study.paths(), "zst"));
    let zst = dir.path().join("zst.tar.zst");
    let made = Command::new("zstd").arg("-q").arg(&plain).arg("-o").arg(&zst).output().expect("zstd");
    assert!(made.status.success(), "zstd: {}", String::from_utf8_lossy(&made.stderr));
    let zst = std::fs::read(zst).expect("read");
    assert_eq!(&zst[..4], b"\x28\xb5\x2f\xfd");
    let r = import(&admin, "application/octet-stream", zst).await.expect_status(200);
    assert_eq!(r["instances"], json!({"received": 3, "stored": 3, "already_stored": 0, "failed": 0}), "{r}");
    // The plain tar, sniffed by `ustar` at offset 257.
    let r = import(&admin, "application/octet-stream", std::fs::read(&plain).expect("read")).await.expect_status(200);
    assert_eq!(r["instances"]["already_stored"], 3, "{r}");

    // A CD's tree as a research cluster hands it back, made by GNU tar and gzip: the
    // DICOMDIR (dcmtk's dcmmkdir) and a PDF are skipped, each with its reason in words.
    let cd_study = dicom::study(&StudySpec::new("IPP-GNUTAR").studies(1).series(2).instances(2).seed(150));
    let cd = dir.path().join("cd");
    for (i, file) in cd_study.paths().iter().enumerate() {
        let series = cd.join("DICOM").join("ST000000").join(format!("SE{:06}", i / 2));
        std::fs::create_dir_all(&series).expect("mkdir");
        std::fs::copy(file, series.join(format!("IM{i:06}"))).expect("copy");
    }
    let made = Command::new("dcmmkdir").current_dir(&cd).args(["--recurse", "DICOM"]).output().expect("dcmmkdir");
    assert!(made.status.success(), "dcmmkdir: {}", String::from_utf8_lossy(&made.stderr));
    std::fs::write(cd.join("report.pdf"), b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n").expect("write");
    let tgz = dir.path().join("cd.tgz");
    let made = Command::new("tar").current_dir(dir.path()).args(["--sort=name", "-czf"]).arg(&tgz).arg("cd").output().expect("tar");
    assert!(made.status.success(), "tar: {}", String::from_utf8_lossy(&made.stderr));
    let r = import(&admin, "application/gzip", std::fs::read(&tgz).expect("read")).await.expect_status(200);
    assert_eq!(r["instances"], json!({"received": 4, "stored": 4, "already_stored": 0, "failed": 0}), "{r}");
    assert_eq!(
        r["errors"],
        json!([
            {"file": "cd/DICOMDIR", "error": "skipped: DICOMDIR index (the images are imported on their own)"},
            {"file": "cd/report.pdf", "error": "skipped: not DICOM: PDF document"},
        ]),
        "{r}"
    );

    // Links and hostile names are skipped, each with its reason; the rest is imported.
    let hostile = dicom::study(&StudySpec::new("IPP-HOSTILE").studies(1).series(1).instances(3).seed(145));
    let p = hostile.paths();
    let specs = vec![
        format!("file={}@ok/IM0", p[0].display()),
        "symlink=link.dcm".to_string(),
        format!("file={}@/abs/IM1", p[1].display()),
        format!("file={}@../../evil/IM2", p[2].display()),
    ];
    let r = import(&admin, "application/x-tar", tar_of(&dir.path().join("hostile.tar"), "w", &specs)).await.expect_status(200);
    assert_eq!(r["instances"], json!({"received": 1, "stored": 1, "already_stored": 0, "failed": 0}), "{r}");
    assert_eq!(r["skipped"], 3, "{r}");
    let text = r["errors"].to_string();
    assert!(text.contains("symbolic link"), "{r}");
    assert!(text.contains("absolute name or `..`"), "{r}");

    // A gzip bomb: one DICOM file, then 64 MiB of zeros. Refused whole; nothing stored.
    let before = patient_total(&admin).await;
    let bomb_study = dicom::study(&StudySpec::new("IPP-TARBOMB").studies(1).series(1).instances(1).seed(146));
    let mut specs = members(&bomb_study.paths(), "bomb");
    specs.push(format!("zeros=bomb/zeros:{}", 64 << 20));
    let bomb = tar_of(&dir.path().join("bomb.tgz"), "w:gz", &specs);
    assert!(bomb.len() < 1 << 20, "the bomb is small: {}", bomb.len());
    import(&admin, "application/octet-stream", bomb).await.expect_error(422, "zip_bomb");
    assert_eq!(patient_total(&admin).await, before, "nothing stored from the bomb");

    // Corrupt: a truncated .tgz is refused whole.
    let cut = tar_of(&dir.path().join("cut.tgz"), "w:gz", &members(&bomb_study.paths(), "cut"));
    import(&admin, "application/octet-stream", cut[..cut.len() / 2].to_vec()).await.expect_error(422, "invalid_archive");
    assert_eq!(patient_total(&admin).await, before, "nothing stored from the truncated archive");
}
per_deployment!(tar_archives);

/// One entry of a ZIP as its headers say: the name, the general-purpose flags and the
/// method of the central directory, and the method of the local header.
#[derive(Debug)]
struct RawEntry {
    name: String,
    flags: u16,
    central_method: u16,
    local_method: u16,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// Reads the central directory and each entry's local header, so a test knows what the
/// tool really wrote (7-Zip silently falls back to another method for some inputs).
fn raw_entries(zip: &[u8]) -> Vec<RawEntry> {
    let eocd = zip.windows(4).rposition(|w| w == b"PK\x05\x06").expect("end of central directory");
    let (count, mut at) = (u16_at(zip, eocd + 10), u32_at(zip, eocd + 16));
    let mut entries = Vec::new();
    for _ in 0..count {
        assert_eq!(&zip[at..at + 4], b"PK\x01\x02", "central directory entry");
        let (n, m, k) = (u16_at(zip, at + 28) as usize, u16_at(zip, at + 30) as usize, u16_at(zip, at + 32) as usize);
        let local = u32_at(zip, at + 42);
        assert_eq!(&zip[local..local + 4], b"PK\x03\x04", "local header");
        entries.push(RawEntry {
            name: String::from_utf8_lossy(&zip[at + 46..at + 46 + n]).into_owned(),
            flags: u16_at(zip, at + 8),
            central_method: u16_at(zip, at + 10),
            local_method: u16_at(zip, local + 8),
        });
        at += 46 + n + m + k;
    }
    entries
}

/// The files laid out as a CD would hold them, `CD/DICOM/ST…/IM…` without extensions, in
/// `dir`; returns their names in the archive.
fn cd_layout(dir: &Path, files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = format!("CD/DICOM/ST{:04}/IM{i:06}", i / 3);
            let to = dir.join(&name);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(f, to).expect("copy");
            name
        })
        .collect()
}

/// Runs Debian's `7z` (package p7zip-full) in `dir`: `7z a -tzip OPTIONS out.zip NAMES…`.
fn seven_zip(dir: &Path, out: &str, options: &[&str], names: &[String]) -> Vec<u8> {
    let made = Command::new("7z")
        .current_dir(dir)
        .args(["a", "-tzip", "-bd"])
        .args(options)
        .arg(out)
        .args(names)
        .output()
        .expect("run 7z (Debian's p7zip-full)");
    assert!(made.status.success(), "7z: {}{}", String::from_utf8_lossy(&made.stdout), String::from_utf8_lossy(&made.stderr));
    std::fs::read(dir.join(out)).expect("read the archive")
}

/// Archives made by 7-Zip, as users make them: Deflate64 is read; encrypted entries
/// (ZipCrypto and AES) are skipped and named with what to do, and nothing is stored
/// from an archive that holds only those; a method Cohort does not read is named.
async fn archives_made_by_7z(admin: &Client, dir: &Path) {
    let study = dicom::study(&StudySpec::new("IPP-7Z-D64").studies(1).series(2).instances(3).seed(148));
    let mut files = study.paths();
    files.push(rtstruct());
    let names = cd_layout(dir, &files);

    let d64 = seven_zip(dir, "deflate64.zip", &["-mm=Deflate64"], &["CD".to_string()]);
    let entries = raw_entries(&d64);
    let dicom: Vec<&RawEntry> = entries.iter().filter(|e| !e.name.ends_with('/')).collect();
    assert_eq!(dicom.len(), files.len(), "{entries:?}");
    for e in &dicom {
        assert_eq!((e.central_method, e.local_method), (9, 9), "7z wrote Deflate64: {e:?}");
    }
    let before = patient_total(admin).await;
    let r = import(admin, "application/zip", d64).await.expect_status(200);
    // rtstruct.dcm was imported on its own before: already stored.
    assert_eq!(r["instances"], json!({"received": 7, "stored": 6, "already_stored": 1, "failed": 0}), "{r}");
    assert_eq!(r["skipped"], 0, "{r}");
    assert_eq!(patient_total(admin).await, before + 1, "the study's patient is registered");
    let list = admin.get("/api/patients?q=IPP-7Z-D64").await.expect_status(200);
    assert_eq!(list["total"], 1, "{list}");
    let id = list["items"][0]["id"].as_i64().expect("id");
    let instances = admin.get(&format!("/api/patients/{id}/instances")).await.expect_status(200);
    let uids: std::collections::BTreeSet<String> =
        instances.as_array().expect("list").iter().filter_map(|i| i["sop_instance_uid"].as_str().map(String::from)).collect();
    assert_eq!(uids, study.sop_uids(), "every instance of the Deflate64 archive is registered");

    // Encrypted with a password, ZipCrypto (7z's default) and AES-256: refused whole when
    // nothing else is in the archive, each entry named with what to do; nothing stored.
    let secret = dicom::study(&StudySpec::new("IPP-7Z-SECRET").studies(1).series(1).instances(3).seed(149));
    let secret_dir = dir.join("secret");
    let secret_names = cd_layout(&secret_dir, &secret.paths());
    for (label, options, method) in [("ZipCrypto", &["-pcorrect horse"][..], 8), ("AES", &["-pcorrect horse", "-mem=AES256"][..], 99)] {
        let zip = seven_zip(&secret_dir, &format!("{label}.zip"), options, &["CD".to_string()]);
        for e in raw_entries(&zip).iter().filter(|e| !e.name.ends_with('/')) {
            assert!(e.flags & 1 == 1 && e.central_method == method && e.local_method == method, "{label}: {e:?}");
        }
        let e = import(admin, "application/zip", zip).await.expect_error(400, "no_dicom");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        for name in &secret_names {
            assert!(message.contains(&format!("{name}: skipped: encrypted ZIP entry: re-export without a password")), "{label}: {e}");
        }
        assert_eq!(patient_total(admin).await, before + 1, "{label}: nothing stored");
    }
    // One encrypted entry beside readable ones: the others are imported, it is reported.
    seven_zip(&secret_dir, "mixed.zip", &[], &secret_names[..2]);
    let mixed = seven_zip(&secret_dir, "mixed.zip", &["-pcorrect horse", "-mem=AES256"], &secret_names[2..]);
    let flags: Vec<(String, u16)> = raw_entries(&mixed).into_iter().map(|e| (e.name, e.flags & 1)).collect();
    let expected: Vec<(String, u16)> = secret_names.iter().enumerate().map(|(i, n)| (n.clone(), u16::from(i == 2))).collect();
    assert_eq!(flags, expected, "7z added the third entry encrypted and kept the first two as they were");
    let r = import(admin, "application/zip", mixed).await.expect_status(200);
    assert_eq!(r["instances"], json!({"received": 2, "stored": 2, "already_stored": 0, "failed": 0}), "{r}");
    assert_eq!(r["skipped"], 1, "{r}");
    assert_eq!(
        r["errors"],
        json!([{"file": secret_names[2], "error": "skipped: encrypted ZIP entry: re-export without a password"}]),
        "{r}"
    );

    // BZip2 and PPMd, which 7-Zip offers and Cohort does not read: refused, named.
    for (option, method) in [("-mm=BZip2", "BZIP2 (method 12)"), ("-mm=PPMd", "PPMd (method 98)")] {
        let zip = seven_zip(dir, &format!("{}.zip", &option[4..]), &[option], &names[..1]);
        let e = import(admin, "application/zip", zip).await.expect_error(422, "invalid_zip");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("{} is compressed with {method}", names[0])), "{e}");
        assert!(message.contains("re-create the archive with Deflate"), "{e}");
    }
}

async fn what_people_bring(d: Deployment) {
    let admin = d.admin().await;
    let dir = tempfile::tempdir().expect("temp dir");

    // DICOM without a preamble: sniffed and sent whole, as application/dicom or sniffed.
    let rt = std::fs::read(rtstruct()).expect("read rtstruct.dcm");
    assert!(rt.len() < 132 || &rt[128..132] != b"DICM", "rtstruct.dcm has a preamble now");
    assert_eq!(&rt[..4], b"\x08\x00\x05\x00");
    let r = import(&admin, "application/octet-stream", rt.clone()).await.expect_status(200);
    assert_eq!(r["instances"], json!({"received": 1, "stored": 1, "already_stored": 0, "failed": 0}), "{r}");
    assert_eq!(r["skipped"], 0, "{r}");
    let r = import(&admin, "application/dicom", rt.clone()).await.expect_status(200);
    assert_eq!(r["instances"]["already_stored"], 1, "{r}");

    // A Deflate64 ZIP of a study in CD layout (files without an extension), with the
    // preamble-less file among them.
    let study = dicom::study(&StudySpec::new("IPP-DEFLATE64").studies(1).series(2).instances(3).seed(141));
    let rt_path = dir.path().join("rtstruct");
    std::fs::write(&rt_path, &rt).expect("write");
    let mut files = study.paths();
    files.push(rt_path);
    let deflate64 = relabelled_zip(dir.path(), &files, 9);
    let r = import(&admin, "application/zip", deflate64.clone()).await.expect_status(200);
    assert_eq!(r["instances"], json!({"received": 7, "stored": 6, "already_stored": 1, "failed": 0}), "{r}");
    assert_eq!(r["skipped"], 0, "{r}");
    // Sniffed as well.
    let r = import(&admin, "application/octet-stream", deflate64).await.expect_status(200);
    assert_eq!(r["instances"]["already_stored"], 7, "{r}");

    // A method Cohort cannot read is named in the error, with what to do.
    let lzma = relabelled_zip(dir.path(), &files[..1], 14);
    let e = import(&admin, "application/zip", lzma).await.expect_error(422, "invalid_zip");
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("CD/DICOM/ST0000/IM000000 is compressed with LZMA (method 14)"), "{e}");
    assert!(message.contains("re-create the archive with Deflate"), "{e}");

    archives_made_by_7z(&admin, dir.path()).await;
}
per_deployment!(what_people_bring);

/// Runs `cohort ARGS` on `d`'s database and Orthanc; it must succeed. Returns its stdout.
fn cohort<S: AsRef<OsStr>>(d: &Deployment, args: impl IntoIterator<Item = S>) -> String {
    let out = sidecar_command(&d.db.url, &d.orthanc.url(), &Default::default()).args(args).output().expect("run cohort");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// A patient's CD as a PACS burns it: `DICOMDIR` at the root (made by dcmtk's
/// `dcmmkdir`), `DICOM/ST000000/SE00000N/IM00000N` without extensions, plus a
/// preamble-less file no index mentions. `cohort import` on the mount point, then with
/// `--url` and a token into the server.
async fn cd_media(backend: Backend) {
    let d = Deployment::start(Host::Sidecar, backend).await;
    let admin = d.admin().await;
    let study = dicom::study(&StudySpec::new("IPP-CDROM").studies(1).series(2).instances(2).seed(142));
    let cd = tempfile::tempdir().expect("temp dir");
    for (i, file) in study.paths().iter().enumerate() {
        let dir = cd.path().join("DICOM").join("ST000000").join(format!("SE{:06}", i / 2));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::copy(file, dir.join(format!("IM{i:06}"))).expect("copy");
    }
    let made = Command::new("dcmmkdir").current_dir(cd.path()).args(["--recurse", "DICOM"]).output().expect("dcmmkdir");
    assert!(made.status.success(), "dcmmkdir: {}", String::from_utf8_lossy(&made.stderr));
    assert!(cd.path().join("DICOMDIR").is_file());
    std::fs::copy(rtstruct(), cd.path().join("DICOM").join("ST000000").join("RTSTRUCT")).expect("copy");

    let stdout = cohort(&d, [OsStr::new("import"), cd.path().as_os_str()]);
    assert!(stdout.contains("5 received, 5 stored, 0 already stored, 0 failed"), "{stdout}");
    assert!(stdout.contains("DICOMDIR"), "the DICOMDIR is reported as skipped: {stdout}");
    let list = admin.get("/api/patients").await.expect_status(200);
    assert_eq!(list["total"], 2, "{list}");

    // The same tree into the server over HTTP with a token, one request per file: the
    // DICOMDIR is skipped before it is sent (alone, Orthanc would refuse it).
    let made = cohort(&d, ["token", "create", "--email", cohort_e2e::ADMIN_EMAIL, "--scope", "write"]);
    let token = tempfile::NamedTempFile::new().expect("token file").into_temp_path();
    std::fs::write(&token, made.trim()).expect("write the token");
    let stdout = cohort(
        &d,
        [
            OsStr::new("import"),
            cd.path().as_os_str(),
            OsStr::new("--url"),
            OsStr::new(&d.url),
            OsStr::new("--token-file"),
            token.as_os_str(),
        ],
    );
    assert!(stdout.contains("5 received, 0 stored, 5 already stored, 0 failed; 1 other file(s) skipped"), "{stdout}");
    assert!(stdout.contains("DICOMDIR: skipped: DICOMDIR index"), "{stdout}");
    // Sent alone, without its name, a DICOMDIR is known by its content and refused with
    // the reason; nothing reaches Orthanc.
    let before = d.orthanc_instances().await;
    let dicomdir = std::fs::read(cd.path().join("DICOMDIR")).expect("read DICOMDIR");
    let e = import(&admin, "application/dicom", dicomdir).await.expect_error(400, "no_dicom");
    assert!(e["error"]["message"].as_str().unwrap_or_default().contains("DICOMDIR index"), "{e}");
    assert_eq!(d.orthanc_instances().await, before);

    // `cohort import` on a .tgz a research cluster handed back.
    let tgz_study = dicom::study(&StudySpec::new("IPP-CLI-TGZ").studies(1).series(1).instances(3).seed(147));
    let tgz = cd.path().join("results.tgz");
    tar_of(&tgz, "w:gz", &members(&tgz_study.paths(), "results"));
    let stdout = cohort(&d, [OsStr::new("import"), tgz.as_os_str()]);
    assert!(stdout.contains("3 received, 3 stored, 0 already stored, 0 failed"), "{stdout}");
    assert_eq!(patient_total(&admin).await, 3);
}
per_backend!(cd_media);
