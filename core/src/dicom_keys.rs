//! A study's keys (PatientID and StudyInstanceUID) read from the start of a DICOM file,
//! before the file is sent to Orthanc, so that an import can write down which studies
//! it is about to store (the import journal, `services::reconcile`).
//!
//! Pure and bounded: it walks the data elements in order (file meta group first, then
//! the data set in its transfer syntax: implicit or explicit VR, little or big endian,
//! deflated) up to (0020,000D), skipping values and sequences of undefined length
//! without allocating, and gives up (`None`) on anything it does not understand. It
//! never decides whether a file is imported: Orthanc does.

use std::io::Read;

/// What identifies a study in Orthanc: the PatientID and the StudyInstanceUID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StudyKey {
    /// Trimmed; empty when the file has none (Orthanc then keys the study by "").
    pub patient_id: String,
    pub study_instance_uid: String,
}

const PATIENT_ID: (u16, u16) = (0x0010, 0x0020);
const STUDY_INSTANCE_UID: (u16, u16) = (0x0020, 0x000D);
const TRANSFER_SYNTAX: (u16, u16) = (0x0002, 0x0010);
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const UNDEFINED: u32 = u32::MAX;
/// Sequences nested deeper than this are not believed.
const MAX_DEPTH: u8 = 16;
/// A deflated data set is inflated at most this far (the keys come early).
const INFLATE_MAX: u64 = 4 << 20;

#[derive(Clone, Copy, Debug)]
struct Syntax {
    explicit: bool,
    big_endian: bool,
}

const EXPLICIT_LE: Syntax = Syntax { explicit: true, big_endian: false };
const IMPLICIT_LE: Syntax = Syntax { explicit: false, big_endian: false };

/// The keys of the study a DICOM file (or the start of one) belongs to.
pub fn study_key(bytes: &[u8]) -> Option<StudyKey> {
    let mut meta = MetaGroup::of(bytes);
    let mut transfer_syntax = None;
    let mut has_meta = false;
    for element in &mut meta {
        has_meta = true;
        let (tag, value) = element?;
        if tag == TRANSFER_SYNTAX {
            transfer_syntax = Some(text(value));
        }
    }
    let rest = &bytes[meta.0.pos..];
    // Little endian data sets are read as their first element shows, whatever the meta
    // group says: writers get it wrong (pydicom's SC_rgb_jpeg.dcm claims JPEG, hence
    // explicit VR, over an implicit VR data set), and DCMTK reads them the same way.
    let little_endian = || if looks_explicit(rest) { EXPLICIT_LE } else { IMPLICIT_LE };
    match transfer_syntax.as_deref() {
        Some("1.2.840.10008.1.2.2") => scan(rest, Syntax { explicit: true, big_endian: true }),
        Some("1.2.840.10008.1.2.1.99") => scan(&inflate(rest), EXPLICIT_LE),
        Some(_) => scan(rest, little_endian()),
        // No meta group, or no transfer syntax in it.
        None if !has_meta || !rest.is_empty() => scan(rest, little_endian()),
        None => None,
    }
}

const MEDIA_STORAGE_SOP_CLASS: (u16, u16) = (0x0002, 0x0002);
/// The Media Storage SOP Class of a DICOMDIR (Media Storage Directory Storage).
pub const DICOMDIR_SOP_CLASS: &str = "1.2.840.10008.1.3.10";

/// The Media Storage SOP Class UID of a DICOM file's meta group, when `bytes` (the
/// start of the file) reaches it.
pub fn media_storage_sop_class(bytes: &[u8]) -> Option<String> {
    for element in MetaGroup::of(bytes) {
        let (tag, value) = element?;
        if tag == MEDIA_STORAGE_SOP_CLASS {
            return Some(text(value));
        }
        if tag > MEDIA_STORAGE_SOP_CLASS {
            return None;
        }
    }
    None
}

/// The file meta group's elements (tag, value) in order, from the start of a file (after
/// its preamble and `DICM` when it has them); the group is always explicit VR little
/// endian. An element that cannot be read (cut short, or of undefined length) is `None`,
/// and the last. The cursor is left just after the group.
struct MetaGroup<'a>(Cursor<'a>);

impl<'a> MetaGroup<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        let start = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" { 132 } else { 0 };
        MetaGroup(Cursor { buf: bytes, pos: start })
    }
}

impl<'a> Iterator for MetaGroup<'a> {
    type Item = Option<((u16, u16), &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.peek_group(EXPLICIT_LE) != Some(0x0002) {
            return None;
        }
        let element =
            self.0.header(EXPLICIT_LE).filter(|&(_, _, len)| len != UNDEFINED).and_then(|(tag, _, len)| Some((tag, self.0.take(len)?)));
        if element.is_none() {
            // Nothing after an unreadable element is believed.
            self.0.pos = self.0.buf.len();
        }
        Some(element)
    }
}

/// An explicit VR element has two upper-case letters after its tag.
fn looks_explicit(data: &[u8]) -> bool {
    data.len() >= 6 && data[4].is_ascii_uppercase() && data[5].is_ascii_uppercase()
}

/// A raw deflate stream, inflated as far as it goes (a truncated head still yields
/// its first elements).
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::DeflateDecoder::new(data).take(INFLATE_MAX);
    let mut chunk = [0u8; 8192];
    while let Ok(n) = decoder.read(&mut chunk) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    out
}

/// Walks the top-level elements of a data set up to the StudyInstanceUID.
fn scan(data: &[u8], syntax: Syntax) -> Option<StudyKey> {
    let mut c = Cursor { buf: data, pos: 0 };
    let mut patient_id = String::new();
    while c.pos < data.len() {
        let (tag, vr, len) = c.header(syntax)?;
        if tag > STUDY_INSTANCE_UID || tag.0 == 0xFFFE {
            // Elements come in ascending order: it has no StudyInstanceUID.
            return None;
        }
        if len == UNDEFINED {
            c.skip_sequence(inner_syntax(syntax, vr), 0)?;
            continue;
        }
        let value = c.take(len)?;
        if tag == PATIENT_ID {
            patient_id = text(value);
        } else if tag == STUDY_INSTANCE_UID {
            let study_instance_uid = text(value);
            return (!study_instance_uid.is_empty()).then_some(StudyKey { patient_id, study_instance_uid });
        }
    }
    None
}

/// An `UN` element of undefined length holds an implicit VR little endian sequence
/// (PS3.5 6.2.2).
fn inner_syntax(syntax: Syntax, vr: Option<[u8; 2]>) -> Syntax {
    if vr == Some(*b"UN") {
        IMPLICIT_LE
    } else {
        syntax
    }
}

/// A value as text: UTF-8 when it is, else Latin-1; padding (spaces, NULs) trimmed.
fn text(value: &[u8]) -> String {
    let s = match std::str::from_utf8(value) {
        Ok(s) => s.to_string(),
        Err(_) => value.iter().map(|&b| char::from(b)).collect(),
    };
    s.trim_matches(|c: char| c == ' ' || c == '\0').to_string()
}

/// A data element's tag, VR (explicit syntaxes only) and value length.
type Header = ((u16, u16), Option<[u8; 2]>, u32);

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u32) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(usize::try_from(n).ok()?)?;
        let slice = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn u16(&mut self, big_endian: bool) -> Option<u16> {
        let b: [u8; 2] = self.take(2)?.try_into().ok()?;
        Some(if big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    }

    fn u32(&mut self, big_endian: bool) -> Option<u32> {
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    fn peek_group(&self, syntax: Syntax) -> Option<u16> {
        let b: [u8; 2] = self.buf.get(self.pos..self.pos + 2)?.try_into().ok()?;
        Some(if syntax.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    }

    /// An element's tag, VR (explicit syntaxes) and value length.
    fn header(&mut self, syntax: Syntax) -> Option<Header> {
        let tag = (self.u16(syntax.big_endian)?, self.u16(syntax.big_endian)?);
        if tag.0 == 0xFFFE || !syntax.explicit {
            // Items and delimiters carry no VR in any syntax.
            return Some((tag, None, self.u32(syntax.big_endian)?));
        }
        let vr: [u8; 2] = self.take(2)?.try_into().ok()?;
        let len = match &vr {
            b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"SV" | b"UC" | b"UN" | b"UR" | b"UT" | b"UV" => {
                self.take(2)?;
                self.u32(syntax.big_endian)?
            }
            _ => u32::from(self.u16(syntax.big_endian)?),
        };
        Some((tag, Some(vr), len))
    }

    /// Skips a sequence (or encapsulated data) of undefined length, up to its delimiter.
    fn skip_sequence(&mut self, syntax: Syntax, depth: u8) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        loop {
            let (tag, _, len) = self.header(syntax)?;
            match tag {
                SEQUENCE_END => return Some(()),
                ITEM if len == UNDEFINED => self.skip_item(syntax, depth + 1)?,
                ITEM => {
                    self.take(len)?;
                }
                _ => return None,
            }
        }
    }

    /// Skips the elements of an item of undefined length, up to its delimiter.
    fn skip_item(&mut self, syntax: Syntax, depth: u8) -> Option<()> {
        loop {
            let (tag, vr, len) = self.header(syntax)?;
            if tag == ITEM_END {
                return Some(());
            }
            if len == UNDEFINED {
                self.skip_sequence(inner_syntax(syntax, vr), depth + 1)?;
            } else {
                self.take(len)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One element, encoded in `syntax`.
    fn element(syntax: Syntax, tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (g, e, be) = (tag.0, tag.1, syntax.big_endian);
        let u16b = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let u32b = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        out.extend_from_slice(&u16b(g));
        out.extend_from_slice(&u16b(e));
        let len = if value.is_empty() && vr == b"SQ" { UNDEFINED } else { value.len() as u32 };
        if syntax.explicit {
            out.extend_from_slice(vr);
            if matches!(vr, b"OB" | b"SQ" | b"UN" | b"UT") {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&u32b(len));
            } else {
                out.extend_from_slice(&u16b(value.len() as u16));
            }
        } else {
            out.extend_from_slice(&u32b(len));
        }
        out.extend_from_slice(value);
        out
    }

    fn delimiter(syntax: Syntax, tag: (u16, u16), len: u32) -> Vec<u8> {
        let be = syntax.big_endian;
        let mut out = Vec::new();
        for v in [tag.0, tag.1] {
            out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
        }
        out.extend_from_slice(&if be { len.to_be_bytes() } else { len.to_le_bytes() });
        out
    }

    fn meta(transfer_syntax: &str) -> Vec<u8> {
        let mut ts = transfer_syntax.as_bytes().to_vec();
        if ts.len() % 2 == 1 {
            ts.push(0);
        }
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        out.extend(element(EXPLICIT_LE, (0x0002, 0x0001), b"OB", &[0, 1]));
        out.extend(element(EXPLICIT_LE, TRANSFER_SYNTAX, b"UI", &ts));
        out
    }

    /// A data set with a sequence of undefined length (an item of undefined length in
    /// it, holding another sequence) before the keys.
    fn data_set(syntax: Syntax) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(element(syntax, (0x0008, 0x0005), b"CS", b"ISO_IR 100"));
        out.extend(element(syntax, (0x0008, 0x1110), b"SQ", b""));
        out.extend(delimiter(syntax, ITEM, UNDEFINED));
        out.extend(element(syntax, (0x0008, 0x1150), b"UI", b"1.2.3\0"));
        out.extend(element(syntax, (0x0008, 0x1115), b"SQ", b""));
        out.extend(delimiter(syntax, ITEM, 0));
        out.extend(delimiter(syntax, SEQUENCE_END, 0));
        out.extend(delimiter(syntax, ITEM_END, 0));
        out.extend(delimiter(syntax, SEQUENCE_END, 0));
        out.extend(element(syntax, (0x0010, 0x0010), b"PN", b"Dupr\xe9^Eloise"));
        out.extend(element(syntax, PATIENT_ID, b"LO", b"IPP-42 "));
        out.extend(element(syntax, (0x0010, 0x0030), b"DA", b"19800131"));
        out.extend(element(syntax, STUDY_INSTANCE_UID, b"UI", b"1.2.826.0.1.7\0"));
        out.extend(element(syntax, (0x0020, 0x000E), b"UI", b"1.2.826.0.1.8\0"));
        out
    }

    fn expected() -> Option<StudyKey> {
        Some(StudyKey { patient_id: "IPP-42".into(), study_instance_uid: "1.2.826.0.1.7".into() })
    }

    #[test]
    fn keys_are_read_in_every_transfer_syntax() {
        let explicit = [meta("1.2.840.10008.1.2.1"), data_set(EXPLICIT_LE)].concat();
        assert_eq!(study_key(&explicit), expected());
        let implicit = [meta("1.2.840.10008.1.2"), data_set(IMPLICIT_LE)].concat();
        assert_eq!(study_key(&implicit), expected());
        let be = Syntax { explicit: true, big_endian: true };
        let big_endian = [meta("1.2.840.10008.1.2.2"), data_set(be)].concat();
        assert_eq!(study_key(&big_endian), expected());
        let mut deflater = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut deflater, &data_set(EXPLICIT_LE)).expect("deflate");
        let deflated = [meta("1.2.840.10008.1.2.1.99"), deflater.finish().expect("deflate")].concat();
        assert_eq!(study_key(&deflated), expected());
        // JPEG and other compressed syntaxes keep an explicit VR little endian data set.
        let jpeg = [meta("1.2.840.10008.1.2.4.50"), data_set(EXPLICIT_LE)].concat();
        assert_eq!(study_key(&jpeg), expected());
        // A meta group that claims an explicit syntax over an implicit data set.
        let mislabelled = [meta("1.2.840.10008.1.2.4.50"), data_set(IMPLICIT_LE)].concat();
        assert_eq!(study_key(&mislabelled), expected());
    }

    #[test]
    fn files_without_preamble_or_meta_are_read() {
        assert_eq!(study_key(&data_set(IMPLICIT_LE)), expected());
        assert_eq!(study_key(&data_set(EXPLICIT_LE)), expected());
        let no_preamble = [meta("1.2.840.10008.1.2")[132..].to_vec(), data_set(IMPLICIT_LE)].concat();
        assert_eq!(study_key(&no_preamble), expected());
    }

    #[test]
    fn a_missing_patient_id_is_empty_and_a_missing_study_uid_is_none() {
        let mut set = Vec::new();
        set.extend(element(EXPLICIT_LE, (0x0010, 0x0010), b"PN", b"Doe^J"));
        set.extend(element(EXPLICIT_LE, STUDY_INSTANCE_UID, b"UI", b"1.2.3\0"));
        let key = study_key(&[meta("1.2.840.10008.1.2.1"), set].concat()).expect("keys");
        assert_eq!((key.patient_id.as_str(), key.study_instance_uid.as_str()), ("", "1.2.3"));

        let mut set = Vec::new();
        set.extend(element(EXPLICIT_LE, PATIENT_ID, b"LO", b"P1"));
        set.extend(element(EXPLICIT_LE, (0x0020, 0x000E), b"UI", b"1.2.3\0"));
        assert_eq!(study_key(&[meta("1.2.840.10008.1.2.1"), set].concat()), None);
    }

    #[test]
    fn truncated_and_hostile_heads_give_up() {
        let full = [meta("1.2.840.10008.1.2.1"), data_set(EXPLICIT_LE)].concat();
        // The last element (the SeriesInstanceUID, 22 bytes) comes after the keys.
        assert_eq!(study_key(&full[..full.len() - 22]), expected());
        for cut in [0, 10, 131, 140, 200, full.len() - 30] {
            assert_eq!(study_key(&full[..cut]), None, "cut at {cut}");
        }
        // A length that runs past the end, and sequences nested past the bound.
        let mut huge = meta("1.2.840.10008.1.2.1");
        huge.extend(element(EXPLICIT_LE, (0x0008, 0x0005), b"UT", b""));
        let at = huge.len() - 4;
        huge[at..].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        huge.extend(element(EXPLICIT_LE, STUDY_INSTANCE_UID, b"UI", b"1.2\0"));
        assert_eq!(study_key(&huge), None);
        let mut deep = meta("1.2.840.10008.1.2.1");
        for _ in 0..40 {
            deep.extend(element(EXPLICIT_LE, (0x0008, 0x1110), b"SQ", b""));
            deep.extend(delimiter(EXPLICIT_LE, ITEM, UNDEFINED));
        }
        assert_eq!(study_key(&deep), None);
        assert_eq!(study_key(b"PK\x03\x04 not dicom"), None);
    }

    #[test]
    fn latin1_values_are_decoded() {
        let mut set = Vec::new();
        set.extend(element(EXPLICIT_LE, PATIENT_ID, b"LO", b"J\xe9r\xf4me"));
        set.extend(element(EXPLICIT_LE, STUDY_INSTANCE_UID, b"UI", b"1.2\0"));
        let key = study_key(&[meta("1.2.840.10008.1.2.1"), set].concat()).expect("keys");
        assert_eq!(key.patient_id, "Jérôme");
    }
}
