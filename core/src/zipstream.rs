//! A ZIP writer that never seeks, for archives streamed to the client as they are
//! built. Entries are stored (DICOM pixel data rarely deflates well, and storing keeps
//! export at disk speed); each entry's data is in hand before its header is written, so
//! sizes and CRCs go in the local header and no data descriptor is needed. ZIP64
//! records are written when sizes, offsets or the entry count need them.

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{Datelike, Timelike};

struct CentralEntry {
    name: String,
    crc: u32,
    size: u64,
    offset: u64,
}

/// Builds an archive piece by piece; each call returns the bytes to send next.
pub struct ZipStream {
    offset: u64,
    entries: Vec<CentralEntry>,
    dos_time: u16,
    dos_date: u16,
}

impl std::fmt::Debug for ZipStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZipStream").field("entries", &self.entries.len()).field("offset", &self.offset).finish()
    }
}

const U32_MAX: u64 = 0xFFFF_FFFF;
/// Version 4.5: ZIP64.
const VERSION_ZIP64: u16 = 45;
const VERSION_PLAIN: u16 = 20;
/// General purpose flag bit 11: names are UTF-8.
const FLAG_UTF8: u16 = 1 << 11;

impl Default for ZipStream {
    fn default() -> Self {
        Self::new()
    }
}

impl ZipStream {
    pub fn new() -> Self {
        let now = chrono::Utc::now();
        let dos_time = ((now.hour() as u16) << 11) | ((now.minute() as u16) << 5) | (now.second() as u16 / 2);
        let year = (now.year().clamp(1980, 2107) - 1980) as u16;
        let dos_date = (year << 9) | ((now.month() as u16) << 5) | now.day() as u16;
        ZipStream { offset: 0, entries: Vec::new(), dos_time, dos_date }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.offset
    }

    /// The local header of an entry holding `data`; send it, then `data`.
    pub fn entry_header(&mut self, name: &str, data: &[u8]) -> Bytes {
        let crc = crc32fast::hash(data);
        let size = data.len() as u64;
        let zip64 = size >= U32_MAX || self.offset >= U32_MAX;
        let mut h = BytesMut::with_capacity(30 + name.len() + 20);
        h.put_u32_le(0x0403_4b50);
        h.put_u16_le(if zip64 { VERSION_ZIP64 } else { VERSION_PLAIN });
        h.put_u16_le(FLAG_UTF8);
        h.put_u16_le(0); // stored
        h.put_u16_le(self.dos_time);
        h.put_u16_le(self.dos_date);
        h.put_u32_le(crc);
        if zip64 {
            h.put_u32_le(U32_MAX as u32);
            h.put_u32_le(U32_MAX as u32);
        } else {
            h.put_u32_le(size as u32);
            h.put_u32_le(size as u32);
        }
        h.put_u16_le(name.len() as u16);
        h.put_u16_le(if zip64 { 20 } else { 0 });
        h.put_slice(name.as_bytes());
        if zip64 {
            h.put_u16_le(0x0001);
            h.put_u16_le(16);
            h.put_u64_le(size);
            h.put_u64_le(size);
        }
        self.entries.push(CentralEntry { name: name.to_string(), crc, size, offset: self.offset });
        self.offset += h.len() as u64 + size;
        h.freeze()
    }

    /// The central directory and end records; the last bytes of the archive.
    pub fn finish(self) -> Bytes {
        let mut cd = BytesMut::new();
        let cd_start = self.offset;
        for e in &self.entries {
            let big_size = e.size >= U32_MAX;
            let big_offset = e.offset >= U32_MAX;
            let mut extra = BytesMut::new();
            if big_size || big_offset {
                extra.put_u16_le(0x0001);
                extra.put_u16_le(if big_size { 16 } else { 0 } + if big_offset { 8 } else { 0 });
                if big_size {
                    extra.put_u64_le(e.size);
                    extra.put_u64_le(e.size);
                }
                if big_offset {
                    extra.put_u64_le(e.offset);
                }
            }
            let version = if extra.is_empty() { VERSION_PLAIN } else { VERSION_ZIP64 };
            cd.put_u32_le(0x0201_4b50);
            cd.put_u16_le((3 << 8) | version); // made by: Unix
            cd.put_u16_le(version);
            cd.put_u16_le(FLAG_UTF8);
            cd.put_u16_le(0);
            cd.put_u16_le(self.dos_time);
            cd.put_u16_le(self.dos_date);
            cd.put_u32_le(e.crc);
            let size32 = if big_size { U32_MAX as u32 } else { e.size as u32 };
            cd.put_u32_le(size32);
            cd.put_u32_le(size32);
            cd.put_u16_le(e.name.len() as u16);
            cd.put_u16_le(extra.len() as u16);
            cd.put_u16_le(0); // comment
            cd.put_u16_le(0); // disk
            cd.put_u16_le(0); // internal attributes
            cd.put_u32_le(0o100644 << 16); // external attributes: regular file, rw-r--r--
            cd.put_u32_le(if big_offset { U32_MAX as u32 } else { e.offset as u32 });
            cd.put_slice(e.name.as_bytes());
            cd.put_slice(&extra);
        }
        let cd_size = cd.len() as u64;
        let count = self.entries.len() as u64;
        let zip64 = count >= 0xFFFF || cd_start >= U32_MAX || cd_size >= U32_MAX;
        if zip64 {
            let eocd64_offset = cd_start + cd_size;
            cd.put_u32_le(0x0606_4b50);
            cd.put_u64_le(44);
            cd.put_u16_le((3 << 8) | VERSION_ZIP64);
            cd.put_u16_le(VERSION_ZIP64);
            cd.put_u32_le(0);
            cd.put_u32_le(0);
            cd.put_u64_le(count);
            cd.put_u64_le(count);
            cd.put_u64_le(cd_size);
            cd.put_u64_le(cd_start);
            cd.put_u32_le(0x0706_4b50);
            cd.put_u32_le(0);
            cd.put_u64_le(eocd64_offset);
            cd.put_u32_le(1);
        }
        cd.put_u32_le(0x0605_4b50);
        cd.put_u16_le(0);
        cd.put_u16_le(0);
        let count16 = count.min(0xFFFF) as u16;
        cd.put_u16_le(count16);
        cd.put_u16_le(count16);
        cd.put_u32_le(cd_size.min(U32_MAX) as u32);
        cd.put_u32_le(cd_start.min(U32_MAX) as u32);
        cd.put_u16_le(0);
        cd.freeze()
    }
}

/// A name safe inside an archive: letters, digits, `.`, `-`, `_`; never `.` or `..`.
pub fn safe_name(raw: &str) -> String {
    let s: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    match s.as_str() {
        "" | "." | ".." => format!("_{s}"),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn build(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut z = ZipStream::new();
        let mut out = Vec::new();
        for (name, data) in entries {
            out.extend_from_slice(&z.entry_header(name, data));
            out.extend_from_slice(data);
        }
        out.extend_from_slice(&z.finish());
        out
    }

    #[test]
    fn archives_read_back_with_the_zip_crate() {
        let entries = vec![
            ("patient.json", br#"{"a":1}"#.to_vec()),
            ("DICOM/1.2/1.2.3/1.2.3.4.dcm", vec![7u8; 100_000]),
            ("empty", Vec::new()),
            ("accentué.txt", b"x".to_vec()),
        ];
        let bytes = build(&entries);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("valid archive");
        assert_eq!(archive.len(), entries.len());
        for (name, data) in &entries {
            let mut f = archive.by_name(name).expect("entry");
            let mut got = Vec::new();
            f.read_to_end(&mut got).expect("read (CRC checked)");
            assert_eq!(&got, data);
        }
    }

    #[test]
    fn many_entries_switch_to_zip64() {
        let entries: Vec<(String, Vec<u8>)> = (0..70_000).map(|i| (format!("{i}"), vec![(i % 251) as u8])).collect();
        let refs: Vec<(&str, Vec<u8>)> = entries.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
        let bytes = build(&refs);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("zip64 archive");
        assert_eq!(archive.len(), 70_000);
        let mut f = archive.by_name("69999").expect("last entry");
        let mut got = Vec::new();
        f.read_to_end(&mut got).expect("read");
        assert_eq!(got, vec![(69_999 % 251) as u8]);
    }

    #[test]
    fn generated_names_are_safe() {
        assert_eq!(safe_name("../etc/passwd"), ".._etc_passwd");
        assert_eq!(safe_name(".."), "_..");
        assert_eq!(safe_name("IPP 123/é"), "IPP_123__");
        assert_eq!(safe_name("1.2.840.113619"), "1.2.840.113619");
    }
}
