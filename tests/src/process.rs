//! Child processes of the harness, and the ports they listen on.
//!
//! Every child is started through [`command`], which makes the kernel kill it
//! (`PR_SET_PDEATHSIG`, via util-linux's `setpriv --pdeathsig KILL`) when the thread that
//! started it ends: a test binary that is killed, aborts or times out leaves no Orthanc
//! or sidecar behind. The handles kill their child on drop too, panics included.
//!
//! The death signal follows the *thread* that forked, so start long-lived children from
//! a thread that lives as long as they should (a test's own thread or runtime worker
//! for a test's processes, a dedicated thread for processes shared across tests), never
//! from `spawn_blocking`, whose threads end when idle.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// `setpriv` from util-linux (Debian: essential).
const SETPRIV: &str = "/usr/bin/setpriv";

/// A command for `program` that dies with the thread spawning it (when `setpriv` is
/// installed; otherwise a plain command, killed only by its handle's drop).
pub fn command(program: impl AsRef<OsStr>) -> Command {
    if Path::new(SETPRIV).exists() {
        let mut cmd = Command::new(SETPRIV);
        cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// The fields of `/proc/PID/stat` after the command name (its 2nd field, in parentheses,
/// which may itself hold spaces and parentheses): the state (the 3rd field) is the
/// first; the `n`th field of `proc(5)` is at `n - 3`.
pub fn stat_fields(pid: u32) -> std::io::Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, after_name) = stat
        .rsplit_once(')')
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: no command name")))?;
    Ok(after_name.split_whitespace().map(str::to_string).collect())
}

/// A TCP port for a server that cannot bind port 0 itself (Orthanc), drawn at random
/// below the kernel's ephemeral range, so that the harness's own outgoing connections
/// never take it. The port is not reserved: the caller starts its server and, when the
/// server reports the port in use, draws another ([`crate::Orthanc`] does).
pub fn random_port() -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let high = ephemeral_start.clamp(12_000, 61_000);
    rand::random::<u16>() % (high - 10_000) + 10_000
}

/// The text that `path` gained after byte `from` (a log being appended to).
pub fn read_from(path: &Path, from: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The length of the file at `path` (0 when missing).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// `text` without ANSI colour escapes (`ESC [ … m`), as tracing writes to a terminal-less
/// file when colours are on.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
