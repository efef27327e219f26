//! One temporary directory per process for everything the harness (and the bench) writes:
//! `TMPDIR` points there from before `main`, so every `tempfile` directory, and every
//! child (Orthanc, the sidecar's spool, Python's generator, Chromium, `initdb`) that
//! takes its temporary files from `TMPDIR`, lands in it.
//!
//! - It is `cohort-e2e-<pid>-<start>` in the system's temporary directory, `<start>`
//!   the process's start time (`/proc/self/stat`, in clock ticks since boot), so that a
//!   process id used again is told apart.
//! - It is removed when the process exits normally. That takes what a fixture kept in a
//!   `static` left behind too: Rust runs no destructor of a static.
//! - A process that is killed (Ctrl-C on `scripts/bench`, a test run stopped) leaves its
//!   directory behind, with its Orthanc storage and generated DICOM. The next process
//!   sweeps the directories of processes that are gone: those of this user whose process
//!   id is not running, or runs a process started at another time.
//!
//! Nothing here may panic: it runs before `main` and in `exit`.

use std::path::{Path, PathBuf};

const PREFIX: &str = "cohort-e2e-";

/// Runs before `main` (and before libtest starts its threads, so changing the
/// environment races with no reader).
#[used]
#[link_section = ".init_array"]
static AT_START: extern "C" fn() = at_start;

extern "C" fn at_start() {
    let base = std::env::temp_dir();
    let Some(own) = start_time(std::process::id()) else { return };
    sweep(&base);
    let dir = base.join(format!("{PREFIX}{}-{own}", std::process::id()));
    // Traversable by other users, whatever the umask: a PostgreSQL cluster of a test run
    // as root belongs to `postgres` (the directories `tempfile` makes in it are private).
    let made = std::fs::create_dir(&dir).and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
    });
    if let Err(e) = made {
        eprintln!("cohort-e2e: cannot make {}: {e}; temporary files go to {}", dir.display(), base.display());
        return;
    }
    // SAFETY: before `main`, no other thread exists: nothing reads the environment now.
    std::env::set_var("TMPDIR", &dir);
    // SAFETY: `at_exit` is a plain `extern "C"` function that takes nothing and does not
    // unwind (nothing in it panics), as a handler run by `exit` must.
    if unsafe { libc::atexit(at_exit) } != 0 {
        eprintln!("cohort-e2e: cannot register the removal of {} at exit", dir.display());
    }
}

/// Removes this process's directory (children still running when it exits may keep a
/// file or two in it: the next process sweeps what is left).
extern "C" fn at_exit() {
    if let Some(dir) = own_dir() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// This process's directory, if it has one.
pub fn own_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("TMPDIR")?);
    let name = dir.file_name()?.to_str()?;
    (owner_of(name)? == (std::process::id(), start_time(std::process::id())?)).then_some(dir)
}

/// The process id and start time a directory's name gives, if it is one of ours.
fn owner_of(name: &str) -> Option<(u32, u64)> {
    let (pid, start) = name.strip_prefix(PREFIX)?.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`'s 22nd
/// field); `None` if no such process runs (a zombie, dead but not yet reaped, does not).
fn start_time(pid: u32) -> Option<u64> {
    stat(pid).filter(|(state, _)| !matches!(state, 'Z' | 'X')).map(|(_, start)| start)
}

/// Process `pid`'s state (`/proc/PID/stat`'s 3rd field) and start time, if it exists.
fn stat(pid: u32) -> Option<(char, u64)> {
    let fields = crate::process::stat_fields(pid).ok()?;
    Some((fields.first()?.chars().next()?, fields.get(22 - 3)?.parse().ok()?))
}

/// Removes the directories in `base` of processes that are gone (this user's only).
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let Some((pid, start)) = entry.file_name().to_str().and_then(owner_of) else { continue };
        if start_time(pid) == Some(start) || !owned_by_me(&entry.path()) {
            continue;
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

fn owned_by_me(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: `geteuid` has no preconditions.
    let me = unsafe { libc::geteuid() };
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.uid() == me)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_of_processes_gone_are_swept() {
        let base = tempfile::tempdir().expect("temp dir");
        let me = std::process::id();
        let started = start_time(me).expect("this process's start time");
        // A child that exited and is not reaped yet: a zombie, gone for the sweep.
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let zombie = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let zombie_started = loop {
            match stat(zombie) {
                Some(('Z', start)) => break start,
                Some(_) => {}
                None => panic!("the child was reaped before it was waited for"),
            }
            assert!(std::time::Instant::now() < deadline, "the child never exited");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(start_time(zombie), None);
        // This process; this process id with another start time (the id used again);
        // a process id no process has (above Linux's largest, 2^22); the zombie; not
        // ours at all.
        let names = [
            format!("{PREFIX}{me}-{started}"),
            format!("{PREFIX}{me}-{}", started + 1),
            format!("{PREFIX}4194305-{started}"),
            format!("{PREFIX}{zombie}-{zombie_started}"),
            "cohort-e2e-notes".to_string(),
        ];
        for name in &names {
            std::fs::create_dir(base.path().join(name)).expect("dir");
            std::fs::write(base.path().join(name).join("file"), b"x").expect("file");
        }
        sweep(base.path());
        let left: Vec<bool> = names.iter().map(|n| base.path().join(n).exists()).collect();
        child.wait().expect("reap the child");
        assert_eq!(left, [true, false, false, false, true]);
    }
}
