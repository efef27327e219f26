//! De-identification keys and names: per-group pseudonyms and deterministic UIDs, and
//! the request that asks Orthanc's anonymizer (PS3.15 Basic Application Level
//! Confidentiality Profile) to apply them. Pure functions; the export service does the
//! I/O.
//!
//! Everything derives from HMAC-SHA256 under the group's 256-bit key (kept in the
//! database, never sent anywhere), so the same patient exported twice by one group gets
//! the same pseudonym and UIDs, and two groups get unrelated ones.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// A group's de-identification key.
#[derive(Clone)]
pub struct DeidKey([u8; 32]);

impl std::fmt::Debug for DeidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeidKey(..)")
    }
}

impl DeidKey {
    /// 256 random bits from the OS.
    pub fn generate() -> DeidKey {
        use rand::RngCore;
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        DeidKey(k)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<DeidKey> {
        if s.len() != 64 {
            return None;
        }
        let mut k = [0u8; 32];
        for (i, byte) in k.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(DeidKey(k))
    }

    fn mac(&self, parts: &[&str]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        for p in parts {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// `COH-` + 16 base32 characters (80 bits) of HMAC(key, external_id).
    pub fn pseudonym(&self, external_id: &str) -> String {
        let mac = self.mac(&["patient", external_id]);
        format!("COH-{}", base32(&mac[..10]))
    }

    /// `2.25.` + the decimal of a UUID (version 8, RFC 9562) made of HMAC(key,
    /// external_id, uid): a valid UID of at most 44 characters. The patient is part of
    /// the input because Orthanc keys a study by PatientID and StudyInstanceUID.
    pub fn uid(&self, external_id: &str, original: &str) -> String {
        let mac = self.mac(&["uid", external_id, original.trim_end_matches(['\0', ' '])]);
        let mut b = [0u8; 16];
        b.copy_from_slice(&mac[..16]);
        b[6] = (b[6] & 0x0f) | 0x80;
        b[8] = (b[8] & 0x3f) | 0x80;
        format!("2.25.{}", u128::from_be_bytes(b))
    }
}

/// RFC 4648 base32 without padding (for 10 bytes: exactly 16 characters).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Whether `q` could be (the start of) a pseudonym: `COH-` and base32 characters.
pub fn looks_like_pseudonym(q: &str) -> bool {
    let q = q.trim().to_ascii_uppercase();
    q.len() > 4 && q.len() <= 20 && q.starts_with("COH-") && q[4..].bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// `DeidentificationMethod` (LO, at most 64 characters).
pub const METHOD: &str = "PS3.15 E.1 Basic Profile (Orthanc 2021b); Cohort HMAC pseudonyms";

/// Dates and times Orthanc 1.10.1's Basic Profile keeps, removed as well (all optional,
/// type 3, attributes): instance creation, secondary capture, last calibration.
pub const EXTRA_REMOVED: [&str; 6] = ["0008,0012", "0008,0013", "0018,1012", "0018,1014", "0018,1200", "0018,1201"];

/// The original identifiers of one instance that the export replaces.
#[derive(Clone, Debug, Default)]
pub struct InstanceIds<'a> {
    pub study_uid: &'a str,
    pub series_uid: &'a str,
    pub sop_uid: &'a str,
    /// Present in most cross-sectional images; shared by a series, so it must map the
    /// same way in every instance.
    pub frame_of_reference_uid: Option<&'a str>,
}

/// The new identifiers of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewIds {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
}

/// The body of Orthanc's `POST /instances/{id}/anonymize`: the Basic Profile (dates,
/// names, institutions, physicians, accession numbers and descriptions removed or
/// emptied, private tags removed, other UIDs replaced), with the patient replaced by
/// the pseudonym and the main UIDs by deterministic ones.
pub fn anonymize_request(key: &DeidKey, external_id: &str, pseudonym: &str, ids: &InstanceIds<'_>) -> (Value, NewIds) {
    let new = NewIds {
        study_uid: key.uid(external_id, ids.study_uid),
        series_uid: key.uid(external_id, ids.series_uid),
        sop_uid: key.uid(external_id, ids.sop_uid),
    };
    let mut replace = json!({
        "PatientID": pseudonym,
        "PatientName": pseudonym,
        "StudyInstanceUID": new.study_uid,
        "SeriesInstanceUID": new.series_uid,
        "SOPInstanceUID": new.sop_uid,
        "PatientIdentityRemoved": "YES",
        "DeidentificationMethod": METHOD,
    });
    if let Some(f) = ids.frame_of_reference_uid.filter(|f| !f.trim().is_empty()) {
        replace["FrameOfReferenceUID"] = json!(key.uid(external_id, f));
    }
    let body = json!({
        "Replace": replace,
        "Remove": EXTRA_REMOVED,
        "Force": true,
        "KeepPrivateTags": false,
        "DicomVersion": "2021b",
    });
    (body, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_and_uids_are_keyed_and_stable() {
        let a = DeidKey::from_hex(&"11".repeat(32)).expect("key");
        let b = DeidKey::from_hex(&"22".repeat(32)).expect("key");
        let p = a.pseudonym("IPP-1");
        assert!(p.starts_with("COH-") && p.len() == 20 && looks_like_pseudonym(&p), "{p}");
        assert_eq!(p, a.pseudonym("IPP-1"));
        assert_ne!(p, b.pseudonym("IPP-1"));
        assert_ne!(p, a.pseudonym("IPP-2"));
        let u = a.uid("IPP-1", "1.2.3.4");
        assert!(u.starts_with("2.25.") && u.len() <= 44 && u[5..].bytes().all(|c| c.is_ascii_digit()), "{u}");
        assert_eq!(u, a.uid("IPP-1", "1.2.3.4\0"));
        assert_ne!(u, b.uid("IPP-1", "1.2.3.4"));
        assert_ne!(u, a.uid("IPP-2", "1.2.3.4"));
        assert!(METHOD.len() <= 64);
    }

    #[test]
    fn keys_round_trip_and_base32_matches_rfc4648() {
        let k = DeidKey::generate();
        assert_eq!(DeidKey::from_hex(&k.to_hex()).map(|k| k.0), Some(k.0));
        assert!(DeidKey::from_hex("zz").is_none());
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert!(!looks_like_pseudonym("COH-") && !looks_like_pseudonym("IPP-1") && looks_like_pseudonym("coh-abc2"));
    }
}
