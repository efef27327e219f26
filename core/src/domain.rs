//! Domain values and the rules that make them valid. Storage keeps them as text; these
//! types are what the services and the API work with.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use utoipa::ToSchema;

/// Database ids are 64-bit integers in both databases.
pub type Id = i64;

/// Why a domain value was refused; the API turns it into a 422 naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(Invalid(format!(
                        "{other:?} is not one of {}",
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(s: String) -> Result<Self, Invalid> { s.parse() }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

text_enum!(
    /// What a user may do: `admin` manages users, groups, audit and deletions.
    Role { Admin = "admin", User = "user" }
);
text_enum!(
    /// Inactive users cannot log in and lose their sessions.
    UserStatus { Active = "active", Inactive = "inactive" }
);
text_enum!(
    /// What a personal API token may do: `read` allows GET and HEAD only; `write` allows
    /// what its user may do, except managing tokens, sessions and the profile.
    TokenScope { Read = "read", Write = "write" }
);
text_enum!(
    /// What a research group's users may export: `deidentified_only` refuses identified
    /// exports and image files to them (admins are not restricted).
    ExportPolicy { Any = "any", DeidentifiedOnly = "deidentified_only" }
);
text_enum!(
    /// The reading workflow of a patient record.
    PatientStatus { ToInterpret = "to_interpret", InProgress = "in_progress", Validated = "validated", Archived = "archived" }
);

impl PatientStatus {
    /// The French label the original front end shows.
    pub fn label(self) -> &'static str {
        match self {
            PatientStatus::ToInterpret => "À interpréter",
            PatientStatus::InProgress => "En cours",
            PatientStatus::Validated => "Validé",
            PatientStatus::Archived => "Archivé",
        }
    }
}

/// Lower-cases and checks an email address; emails are unique case-insensitively, so the
/// stored form is the lower-cased one.
pub fn normalize_email(raw: &str) -> Result<String, Invalid> {
    if raw.trim().len() > MAX_EMAIL_BYTES {
        return Err(Invalid(format!("must be at most {MAX_EMAIL_BYTES} bytes")));
    }
    let email = raw.trim().to_lowercase();
    let bad = || Invalid("not a valid email address".into());
    if email.len() > MAX_EMAIL_BYTES || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || domain.contains('@') || !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
        return Err(bad());
    }
    Ok(email)
}

pub const PASSWORD_MIN_BYTES: usize = 12;
/// bcrypt only reads the first 72 bytes; longer passwords are refused rather than truncated.
pub const PASSWORD_MAX_BYTES: usize = 72;

pub fn check_password_rules(password: &str) -> Result<(), Invalid> {
    let n = password.len();
    if n < PASSWORD_MIN_BYTES {
        return Err(Invalid(format!("must be at least {PASSWORD_MIN_BYTES} bytes long")));
    }
    if n > PASSWORD_MAX_BYTES {
        return Err(Invalid(format!("must be at most {PASSWORD_MAX_BYTES} bytes long")));
    }
    Ok(())
}

/// Names (people, groups) are at most this many characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Emails are at most this many bytes (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// A person's or group's name: trimmed, 1 to 100 characters, no control characters.
/// An empty string means "no value" for optional names.
pub fn clean_name(raw: &str) -> Result<Option<String>, Invalid> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > MAX_NAME_CHARS || s.chars().any(char::is_control) {
        return Err(Invalid(format!("must be at most {MAX_NAME_CHARS} printable characters")));
    }
    Ok(Some(s.to_string()))
}

/// Folds text for case- and accent-insensitive search: NFKD, combining marks dropped,
/// lower-cased. Both the stored search column and the query go through this, so the
/// same SQL `LIKE` works on SQLite and PostgreSQL.
pub fn fold_for_search(raw: &str) -> String {
    raw.nfkd().filter(|c| !unicode_normalization::char::is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern and wraps it in `%...%`.
pub fn like_contains(folded: &str) -> String {
    let mut out = String::with_capacity(folded.len() + 2);
    out.push('%');
    for c in folded.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(normalize_email("  Alice.Doe@Example.ORG ").as_deref(), Ok("alice.doe@example.org"));
        for bad in ["", "alice", "@example.org", "a@b", "a b@example.org", "a@@example.org", "a@example.org."] {
            assert!(normalize_email(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn password_length_is_counted_in_bytes() {
        assert!(check_password_rules("short").is_err());
        assert!(check_password_rules("exactly12chr").is_ok());
        assert!(check_password_rules(&"é".repeat(36)).is_ok()); // 72 bytes
        assert!(check_password_rules(&"é".repeat(37)).is_err()); // 74 bytes
    }

    #[test]
    fn search_folding_ignores_case_and_accents() {
        assert_eq!(fold_for_search("Éloïse DUPRÉ"), "eloise dupre");
        assert_eq!(like_contains("50%_a\\"), "%50\\%\\_a\\\\%");
    }

    #[test]
    fn statuses_round_trip() {
        for s in PatientStatus::ALL {
            assert_eq!(s.as_str().parse::<PatientStatus>(), Ok(*s));
        }
        assert_eq!(PatientStatus::ToInterpret.label(), "À interpréter");
        assert!("done".parse::<PatientStatus>().is_err());
    }
}
