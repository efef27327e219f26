//! Realistic DICOM test data, made by `tests/dicom/gen.py` (pydicom, highdicom,
//! pynetdicom): generated patients and studies that Orthanc accepts, a few of pydicom's
//! own sample files, ZIP archives with the junk real archives carry, broken and hostile
//! archives, and a C-STORE client.
//!
//! Everything here is synchronous (`std::process::Command`) and panics with the tool's
//! stderr when it fails, except [`storescu`], whose failure is what a test may want to
//! observe. Files live in a [`tempfile::TempDir`] owned by the returned value: keep it
//! alive as long as the files are needed.
//!
//! The interpreter is `python3`, or `COHORT_TEST_PYTHON` when set; it needs pydicom,
//! highdicom and pynetdicom (`scripts/test` installs them).
//!
//! Deterministic outputs (seeded studies, archives of given files, pydicom's samples) are
//! made once and then copied: each is kept in a cache directory under a key hashed from
//! `gen.py`'s text, the arguments and the input files' names and bytes.
//! `COHORT_TEST_DICOM_CACHE` names that directory (`scripts/test` uses a fresh one per
//! run and removes it); by default it is `<target>/<profile>/cohort-dicom-cache` (delete
//! it after upgrading pydicom or highdicom).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{anyhow, Context};
use serde::Deserialize;
use serde_json::Value;
use tempfile::TempDir;

/// `tests/dicom/gen.py`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dicom").join("gen.py")
}

/// The Python interpreter that runs the tool.
pub fn python() -> String {
    std::env::var("COHORT_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// One file the tool wrote. The DICOM fields are `None` for files that are not DICOM
/// (archives) and for attributes the file does not have.
#[derive(Debug, Clone, Deserialize)]
pub struct GeneratedFile {
    pub path: PathBuf,
    pub size: u64,
    #[serde(default)]
    pub patient_id: Option<String>,
    /// As the tool wrote it, e.g. `Dupré^Éloïse`.
    #[serde(default)]
    pub patient_name: Option<String>,
    #[serde(default)]
    pub study_instance_uid: Option<String>,
    #[serde(default)]
    pub series_instance_uid: Option<String>,
    #[serde(default)]
    pub sop_instance_uid: Option<String>,
    #[serde(default)]
    pub sop_class_uid: Option<String>,
    #[serde(default)]
    pub modality: Option<String>,
    #[serde(default)]
    pub instance_number: Option<i64>,
    #[serde(default)]
    pub transfer_syntax_uid: Option<String>,
    #[serde(default)]
    pub study_description: Option<String>,
    #[serde(default)]
    pub series_description: Option<String>,
}

/// DICOM files in a temporary directory (removed when this is dropped).
#[derive(Debug)]
pub struct Generated {
    pub dir: TempDir,
    pub files: Vec<GeneratedFile>,
    /// The seed the tool used (given or drawn); `None` for the pydicom samples.
    pub seed: Option<u64>,
}

impl Generated {
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    /// Distinct PatientIDs.
    pub fn patient_ids(&self) -> BTreeSet<String> {
        self.files.iter().filter_map(|f| f.patient_id.clone()).collect()
    }

    /// Distinct StudyInstanceUIDs.
    pub fn study_uids(&self) -> BTreeSet<String> {
        self.files.iter().filter_map(|f| f.study_instance_uid.clone()).collect()
    }

    /// Distinct SeriesInstanceUIDs.
    pub fn series_uids(&self) -> BTreeSet<String> {
        self.files.iter().filter_map(|f| f.series_instance_uid.clone()).collect()
    }

    /// Distinct SOPInstanceUIDs.
    pub fn sop_uids(&self) -> BTreeSet<String> {
        self.files.iter().filter_map(|f| f.sop_instance_uid.clone()).collect()
    }

    /// The files of one study.
    pub fn of_study(&self, study_uid: &str) -> Vec<&GeneratedFile> {
        self.files.iter().filter(|f| f.study_instance_uid.as_deref() == Some(study_uid)).collect()
    }
}

/// SpecificCharacterSet of the generated files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Charset {
    /// `ISO_IR 192`
    #[default]
    Utf8,
    /// `ISO_IR 100`; names must be representable in Latin-1.
    Latin1,
}

impl Charset {
    pub fn as_dicom(self) -> &'static str {
        match self {
            Charset::Utf8 => "ISO_IR 192",
            Charset::Latin1 => "ISO_IR 100",
        }
    }
}

/// Transfer syntax of the generated files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TransferSyntax {
    #[default]
    ExplicitLe,
    ImplicitLe,
    Deflated,
    /// RLE Lossless (pydicom's encoder).
    Rle,
    /// JPEG-LS Lossless (pyjpegls, which highdicom brings).
    JpegLs,
    /// JPEG Baseline 8-bit (highdicom's encoder): only for the 8-bit modalities US, OT, SC.
    JpegBaseline,
}

impl TransferSyntax {
    pub fn as_arg(self) -> &'static str {
        match self {
            TransferSyntax::ExplicitLe => "explicit-le",
            TransferSyntax::ImplicitLe => "implicit-le",
            TransferSyntax::Deflated => "deflated",
            TransferSyntax::Rle => "rle",
            TransferSyntax::JpegLs => "jpeg-ls",
            TransferSyntax::JpegBaseline => "jpeg-baseline",
        }
    }
}

/// What [`study`] generates. `None` fields take the tool's defaults: a PatientID derived
/// from the seed, `Dupré^Éloïse`, born 19780412, F, one CT study of one instance, 64x64,
/// first study on 20240115 (later ones 35 days apart), "Research protocol".
///
/// Modalities are cycled per series: CT, MR, PT, CR, US, OT (pydicom) and SC (highdicom
/// Secondary Capture, Modality OT in the file).
#[derive(Debug, Clone)]
pub struct StudySpec {
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    /// `Some("")` writes an empty PatientBirthDate.
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    /// More than one: PatientIDs get `-1`, `-2`... (same name).
    pub patients: u32,
    pub studies: u32,
    pub series: u32,
    pub instances: u32,
    pub modalities: Vec<String>,
    pub charset: Charset,
    pub transfer_syntax: TransferSyntax,
    pub rows: u16,
    pub cols: u16,
    pub study_date: Option<String>,
    /// Numbered (" 1", " 2"...) when there is more than one study.
    pub study_description: Option<String>,
    /// Same seed (and spec), same bytes: UIDs and pixels derive from it.
    pub seed: Option<u64>,
}

impl Default for StudySpec {
    fn default() -> Self {
        StudySpec {
            patient_id: None,
            patient_name: None,
            birth_date: None,
            sex: None,
            patients: 1,
            studies: 1,
            series: 1,
            instances: 1,
            modalities: vec!["CT".to_string()],
            charset: Charset::Utf8,
            transfer_syntax: TransferSyntax::ExplicitLe,
            rows: 64,
            cols: 64,
            study_date: None,
            study_description: None,
            seed: None,
        }
    }
}

impl StudySpec {
    pub fn new(patient_id: &str) -> Self {
        StudySpec { patient_id: Some(patient_id.to_string()), ..StudySpec::default() }
    }

    /// DICOM PN, `Family^Given`.
    pub fn name(mut self, name: &str) -> Self {
        self.patient_name = Some(name.to_string());
        self
    }

    /// `YYYYMMDD`, or `""` for none.
    pub fn birth_date(mut self, date: &str) -> Self {
        self.birth_date = Some(date.to_string());
        self
    }

    /// `F`, `M` or `O`.
    pub fn sex(mut self, sex: &str) -> Self {
        self.sex = Some(sex.to_string());
        self
    }

    pub fn patients(mut self, n: u32) -> Self {
        self.patients = n;
        self
    }

    pub fn studies(mut self, n: u32) -> Self {
        self.studies = n;
        self
    }

    pub fn series(mut self, n: u32) -> Self {
        self.series = n;
        self
    }

    pub fn instances(mut self, n: u32) -> Self {
        self.instances = n;
        self
    }

    pub fn modalities(mut self, modalities: &[&str]) -> Self {
        self.modalities = modalities.iter().map(|m| m.to_string()).collect();
        self
    }

    pub fn charset(mut self, charset: Charset) -> Self {
        self.charset = charset;
        self
    }

    pub fn transfer_syntax(mut self, ts: TransferSyntax) -> Self {
        self.transfer_syntax = ts;
        self
    }

    pub fn size(mut self, rows: u16, cols: u16) -> Self {
        self.rows = rows;
        self.cols = cols;
        self
    }

    /// `YYYYMMDD` of the first study.
    pub fn study_date(mut self, date: &str) -> Self {
        self.study_date = Some(date.to_string());
        self
    }

    pub fn study_description(mut self, description: &str) -> Self {
        self.study_description = Some(description.to_string());
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec!["study".to_string()];
        let mut opt = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                args.push(format!("--{name}={value}"));
            }
        };
        opt("patient-id", self.patient_id.clone());
        opt("patient-name", self.patient_name.clone());
        opt("birth-date", self.birth_date.clone());
        opt("sex", self.sex.clone());
        opt("patients", Some(self.patients.to_string()));
        opt("studies", Some(self.studies.to_string()));
        opt("series", Some(self.series.to_string()));
        opt("instances", Some(self.instances.to_string()));
        opt("modalities", Some(self.modalities.join(",")));
        opt("charset", Some(self.charset.as_dicom().to_string()));
        opt("transfer-syntax", Some(self.transfer_syntax.as_arg().to_string()));
        opt("rows", Some(self.rows.to_string()));
        opt("cols", Some(self.cols.to_string()));
        opt("study-date", self.study_date.clone());
        opt("study-description", self.study_description.clone());
        opt("seed", self.seed.map(|s| s.to_string()));
        args
    }
}

/// Generates the patients, studies, series and instances of `spec`: one file per
/// instance under `dir/<PatientID>/STnn/SEnn/IMnnnn.dcm`, in that order in `files`.
pub fn study(spec: &StudySpec) -> Generated {
    // Without a seed the tool draws one: a new study each time, never cached.
    let (dir, summary) = generate(&spec.args(), &[], spec.seed.is_some());
    let summary: Summary = parse(&summary, "study");
    Generated { dir, files: summary.files, seed: summary.seed }
}

/// A copy of the pydicom test files that Orthanc 1.10.1 stores (`PYDICOM_SAMPLES` in
/// gen.py: CT, MR, JPEG lossy/baseline/2000, US multi-frame, RT plan/dose, SEG, ECG), one
/// patient each.
pub fn pydicom_samples() -> Generated {
    let (dir, summary) = generate(&["pydicom-samples".to_string()], &[], true);
    let summary: Summary = parse(&summary, "pydicom-samples");
    Generated { dir, files: summary.files, seed: None }
}

/// What goes into a [`zip`] besides the given files.
#[derive(Debug, Clone, Copy, Default)]
pub struct ZipOptions {
    /// `__MACOSX/…/._<first file>`, `.DS_Store`, `report.pdf` (a real PDF), `DICOMDIR` (a
    /// real, empty DICOMDIR: `DICM` at 128 but no image), `notes.txt`.
    pub junk: bool,
    /// The files go into `inner.zip` (depth 1), plus `level1.zip` holding `level2.zip`
    /// holding `deep.dcm` (depth 2): a copy of the first DICOM file with a new SOP
    /// Instance UID.
    pub nested: bool,
    /// Adds `../../evil.dcm`, `/abs/path.dcm`, `..\..\evil-windows.dcm` and
    /// `ok/../../../escape.dcm`, each a copy of the first DICOM file with a new SOP
    /// Instance UID.
    pub dotdot: bool,
    /// Stored (uncompressed) entries instead of deflated ones.
    pub store: bool,
}

/// One entry of a generated archive (nested ones included).
#[derive(Debug, Clone, Deserialize)]
pub struct ZipEntry {
    /// The name inside its own archive.
    pub name: String,
    /// `dicom`, `file`, `zip`, `junk:<what>`; for bad zips also `corrupt`, `bomb`,
    /// `lying-size`.
    pub kind: String,
    /// 0 for the outer archive, 1 inside `inner.zip` / `level1.zip`, 2 below.
    #[serde(default)]
    pub depth: u32,
    /// The archive entries that enclose this one, outermost first.
    #[serde(default)]
    pub container: Vec<String>,
    #[serde(default)]
    pub sop_instance_uid: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    /// The input file it came from.
    #[serde(default)]
    pub source: Option<PathBuf>,
    #[serde(default)]
    pub compressed_size: Option<u64>,
    #[serde(default)]
    pub declared_uncompressed_size: Option<u64>,
    #[serde(default)]
    pub actual_uncompressed_size: Option<u64>,
}

impl ZipEntry {
    pub fn is_dicom(&self) -> bool {
        self.kind == "dicom"
    }
}

/// An archive in a temporary directory (removed when this is dropped).
#[derive(Debug)]
pub struct GeneratedZip {
    pub dir: TempDir,
    pub path: PathBuf,
    pub size: u64,
    pub entries: Vec<ZipEntry>,
    /// The tool's whole summary (e.g. `corrupt_entry`, `cut_at`, `declared_ratio`).
    pub summary: Value,
}

impl GeneratedZip {
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_else(|e| panic!("read {}: {e}", self.path.display()))
    }

    /// SOP Instance UIDs of the DICOM entries at `depth`.
    pub fn dicom_uids_at(&self, depth: u32) -> BTreeSet<String> {
        self.entries.iter().filter(|e| e.is_dicom() && e.depth == depth).filter_map(|e| e.sop_instance_uid.clone()).collect()
    }

    pub fn into_parts(self) -> (TempDir, PathBuf) {
        (self.dir, self.path)
    }
}

/// A ZIP of `files` (files, or directories whose files are added relative to them).
pub fn zip(files: &[PathBuf], opts: ZipOptions) -> GeneratedZip {
    let mut args = vec!["zip".to_string()];
    for (on, flag) in [(opts.junk, "--junk"), (opts.nested, "--nested"), (opts.dotdot, "--dotdot"), (opts.store, "--store")] {
        if on {
            args.push(flag.to_string());
        }
    }
    args.push("--".to_string());
    args.extend(files.iter().map(|f| path_arg(f)));
    zip_result(&args, files)
}

/// A broken or hostile archive. Unless said otherwise it holds a generated 4-instance
/// CT series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadZip {
    /// The valid archive cut in the middle: no central directory.
    Truncated,
    /// One stored entry (named in `summary["corrupt_entry"]`) has 16 bytes of its pixel
    /// data flipped; headers and central directory are intact, only the CRC-32 tells.
    CorruptCrc,
    /// One valid DICOM entry, then `bomb.dcm`: a DICOM file followed by zeros, 1 GB
    /// (1e9 bytes) deflated into ~0.98 MB, sizes declared honestly. Deflate cannot beat
    /// about 1030:1, hence 1 GB and not 2.
    Bomb,
    /// Like `Bomb` but bzip2 (ZIP method 12): 2e9 bytes in ~7 KB (~290000:1); takes ~10 s
    /// to make. The workspace's `zip` crate is built without bzip2: expect "unsupported
    /// method" unless the declared sizes are checked first.
    BombBzip2,
    /// One valid DICOM entry, then `lying.dcm`, whose headers declare the size of the
    /// DICOM file it starts with (~10 kB) but which inflates to 256 MiB (CRC-32 of all of
    /// it).
    LyingSize,
    /// That many 1-byte entries plus one DICOM entry.
    ManyEntries(u32),
}

/// Writes `kind` into a new temporary directory.
pub fn bad_zip(kind: BadZip) -> GeneratedZip {
    bad_zip_with(kind, &[])
}

/// Like [`bad_zip`], with the DICOM files (or directories) to put in it.
pub fn bad_zip_with(kind: BadZip, dicom: &[PathBuf]) -> GeneratedZip {
    let mut args = vec!["bad-zip".to_string()];
    let kind_arg = match kind {
        BadZip::Truncated => "truncated",
        BadZip::CorruptCrc => "corrupt-crc",
        BadZip::Bomb => "bomb",
        BadZip::BombBzip2 => {
            args.push("--method=bzip2".to_string());
            "bomb"
        }
        BadZip::LyingSize => "lying-size",
        BadZip::ManyEntries(count) => {
            args.push(format!("--count={count}"));
            "many-entries"
        }
    };
    args.push(format!("--kind={kind_arg}"));
    args.push("--".to_string());
    args.extend(dicom.iter().map(|f| path_arg(f)));
    zip_result(&args, dicom)
}

/// C-STOREs `files` (files or directories) to `aet` at `host:port` over one association
/// (calling AE `COHORTGEN`). Fails, with the reason, if the association is refused or any
/// C-STORE does not answer success (0x0000, or a B0xx warning).
pub fn storescu(files: &[PathBuf], host: &str, port: u16, aet: &str) -> anyhow::Result<()> {
    let mut args =
        vec!["storescu".to_string(), format!("--host={host}"), format!("--port={port}"), format!("--aet={aet}"), "--".to_string()];
    args.extend(files.iter().map(|f| path_arg(f)));
    let output = command(&args).output().with_context(|| format!("run {} {}", python(), script().display()))?;
    if !output.status.success() {
        return Err(anyhow!(
            "gen.py storescu to {aet}@{host}:{port} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Summary {
    #[serde(default)]
    seed: Option<u64>,
    files: Vec<GeneratedFile>,
}

fn zip_result(args: &[String], inputs: &[PathBuf]) -> GeneratedZip {
    let (dir, summary) = generate(args, inputs, true);
    let summary: Value = parse(&summary, &args[0]);
    let file: GeneratedFile = summary
        .get("files")
        .and_then(|f| f.get(0))
        .cloned()
        .map(serde_json::from_value)
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("gen.py {}: no archive in its summary: {summary}", args[0]));
    let entries: Vec<ZipEntry> = summary
        .get("entries")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .unwrap_or_else(|e| panic!("gen.py {}: entries: {e}", args[0]))
        .unwrap_or_default();
    GeneratedZip { dir, path: file.path, size: file.size, entries, summary }
}

/// A directory for a generated output, removed on drop. Those of fixtures kept in a
/// `static` (never dropped) go with the process's own directory at exit
/// ([`crate::scratch`]).
fn temp_dir() -> TempDir {
    tempfile::Builder::new().prefix("cohort-dicom-").tempdir().expect("temp dir")
}

fn path_arg(path: &Path) -> String {
    path.to_str().unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display())).to_string()
}

fn command(args: &[String]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(script()).args(args).env("PYTHONIOENCODING", "utf-8");
    cmd
}

/// Runs the tool's subcommand `args[0]` with `--out` a new temporary directory (the
/// rest of `args` after it) and returns that directory and the tool's summary. When
/// `cacheable`, the output comes from the cache when it is there (paths in the summary
/// rewritten to the new directory), and goes into it otherwise.
fn generate(args: &[String], inputs: &[PathBuf], cacheable: bool) -> (TempDir, String) {
    let dir = temp_dir();
    if !cacheable {
        let summary = run(args, dir.path());
        return (dir, summary);
    }
    let entry = cache_root().join(cache_key(args, inputs));
    if !entry.join("summary.json").exists() {
        let staging = cache_root().join(format!("tmp-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(staging.join("out")).expect("create the DICOM cache");
        let summary = run(args, &staging.join("out"));
        // Paths are plain JSON strings: the output directory becomes a placeholder.
        let summary = summary.replace(&path_arg(&staging.join("out")), OUT_PLACEHOLDER);
        std::fs::write(staging.join("summary.json"), &summary).expect("write the DICOM cache");
        // Another process may have made the same entry meanwhile: either copy will do.
        if std::fs::rename(&staging, &entry).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    copy_tree(&entry.join("out"), dir.path());
    let summary = std::fs::read_to_string(entry.join("summary.json")).expect("read the DICOM cache");
    let summary = summary.replace(OUT_PLACEHOLDER, &path_arg(dir.path()));
    (dir, summary)
}

/// Stands for the output directory in a cached summary.
const OUT_PLACEHOLDER: &str = "@COHORT_DICOM_OUT@";

fn cache_root() -> PathBuf {
    let root =
        std::env::var_os("COHORT_TEST_DICOM_CACHE").map(PathBuf::from).unwrap_or_else(|| crate::target_dir().join("cohort-dicom-cache"));
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
    root
}

/// A hash of the tool's text, the arguments (input paths by name and content, not by
/// where they are).
fn cache_key(args: &[String], inputs: &[PathBuf]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    std::fs::read(script()).expect("read gen.py").hash(&mut h);
    let input_args: BTreeSet<String> = inputs.iter().map(|p| path_arg(p)).collect();
    for a in args.iter().filter(|a| !input_args.contains(*a)) {
        a.hash(&mut h);
    }
    for input in inputs {
        input.file_name().hash(&mut h);
        let mut files = Vec::new();
        list_files(input, &mut files);
        files.sort();
        for f in files {
            f.strip_prefix(input).unwrap_or(&f).hash(&mut h);
            std::fs::read(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display())).hash(&mut h);
        }
    }
    format!("{:016x}", h.finish())
}

fn list_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())).flatten() {
            list_files(&e.path(), out);
        }
    } else {
        out.push(path.to_path_buf());
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())).flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            std::fs::create_dir_all(&target).expect("create dir");
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap_or_else(|err| panic!("copy {}: {err}", e.path().display()));
        }
    }
}

/// Runs the tool with `--out out`, panics with its stderr if it fails, returns its JSON
/// summary.
fn run(args: &[String], out: &Path) -> String {
    let mut full = vec![args[0].clone(), "--out".to_string(), path_arg(out)];
    full.extend(args[1..].iter().cloned());
    let output: Output = command(&full).output().unwrap_or_else(|e| {
        panic!("cannot run {} {}: {e} (Python 3 with pydicom, highdicom, pynetdicom is needed)", python(), script().display())
    });
    if !output.status.success() {
        panic!("gen.py {} failed ({}):\n{}", full.join(" "), output.status, String::from_utf8_lossy(&output.stderr));
    }
    String::from_utf8(output.stdout).unwrap_or_else(|e| panic!("gen.py {}: summary is not UTF-8: {e}", full.join(" ")))
}

fn parse<T: serde::de::DeserializeOwned>(summary: &str, what: &str) -> T {
    serde_json::from_str(summary).unwrap_or_else(|e| panic!("gen.py {what}: unreadable summary ({e}):\n{summary}"))
}
