//! Faults on real resources: a PostgreSQL cluster of the test's own that can be restarted
//! and stopped, and small file systems that can be filled.
//!
//! [`PgCluster`] never touches the machine's shared PostgreSQL: `initdb` makes a cluster
//! in a temporary directory and its `postgres` is a child of the test (as user
//! `postgres` when the test runs as root, through `setpriv`, which keeps the death
//! signal), so it dies with the test binary. Stopping it is `pg_ctl stop -m fast`, as an
//! operator's restart would do.
//!
//! [`PrivateTmpfs`] wraps a process under test in its own mount namespace (`unshare -m`)
//! where a small tmpfs is mounted: nothing stays mounted when the process dies, whatever
//! kills it. The test reaches that file system through `/proc/<pid>/root`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process;

/// The newest PostgreSQL server installed (Debian: `/usr/lib/postgresql/<major>/bin`).
fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("/usr/lib/postgresql: install PostgreSQL's server package")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    dirs.sort_by_key(|p| p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()));
    dirs.pop().expect("no PostgreSQL server under /usr/lib/postgresql")
}

/// Whether the tests run as root.
fn is_root() -> bool {
    // SAFETY: `geteuid` has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A PostgreSQL cluster of one test, on its own port.
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    child: Option<Child>,
    /// A tmpfs mounted in the server's own mount namespace (for a tablespace on it).
    tmpfs: Option<std::sync::Arc<PrivateTmpfs>>,
}

impl PgCluster {
    /// `initdb` (trust authentication, no fsync) and a first start.
    pub async fn start() -> PgCluster {
        Self::start_in(None).await
    }

    /// As [`PgCluster::start`], the server running with `tmpfs` mounted in a mount
    /// namespace of its own (see [`PgCluster::database_on_tmpfs`]).
    pub async fn start_in(tmpfs: Option<std::sync::Arc<PrivateTmpfs>>) -> PgCluster {
        let dir = tempfile::Builder::new().prefix("cohort-pg-").tempdir().expect("temp dir");
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown").arg("postgres:").arg(dir.path()).status().expect("chown");
            assert!(status.success(), "chown postgres {}", dir.path().display());
        }
        let mut cluster = PgCluster { bin: pg_bin(), dir, port: 0, as_postgres, child: None, tmpfs };
        let out = cluster
            .tool("initdb")
            .arg("-D")
            .arg(cluster.data())
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "--no-instructions"])
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        for attempt in 1..=8 {
            cluster.port = process::random_port();
            match cluster.spawn().await {
                Ok(()) => return cluster,
                Err(log) if log.contains("could not bind") || log.contains("could not create any TCP/IP sockets") => {
                    eprintln!("PostgreSQL: port {} in use (attempt {attempt}), trying another", cluster.port);
                }
                Err(log) => panic!("PostgreSQL did not start; its log:\n{log}"),
            }
        }
        panic!("PostgreSQL found no free port in 8 attempts");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A PostgreSQL program run as the cluster's owner.
    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut cmd = process::command("/usr/bin/setpriv");
            cmd.args(["--reuid", "postgres", "--regid", "postgres", "--init-groups", "--"]).arg(program);
            cmd
        } else {
            process::command(program)
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database (Cohort migrates it at start-up).
    pub async fn create_database(&self, name: &str) -> String {
        use sqlx::{ConnectOptions, Connection};
        let options: sqlx::postgres::PgConnectOptions = self.url("postgres").parse().expect("url");
        let mut conn = options.connect().await.expect("connect to the test cluster");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
        let _ = conn.close().await;
        self.url(name)
    }

    /// Starts the server (after [`PgCluster::stop`]) and waits until it accepts connections.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "PostgreSQL is running");
        if let Err(log) = self.spawn().await {
            panic!("PostgreSQL did not start again on port {}; its log:\n{log}", self.port);
        }
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let from = process::file_len(&self.log_path());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log");
        if self.as_postgres {
            let _ = Command::new("chown").arg("postgres:").arg(self.log_path()).status();
        }
        let socket_dir = self.dir.path().to_path_buf();
        let mut server = match &self.tmpfs {
            Some(tmpfs) if self.as_postgres => {
                let mut cmd = tmpfs.command("/usr/bin/setpriv");
                cmd.args(["--reuid", "postgres", "--regid", "postgres", "--init-groups", "--"]).arg(self.bin.join("postgres"));
                cmd
            }
            Some(tmpfs) => tmpfs.command(self.bin.join("postgres")),
            None => self.tool("postgres"),
        };
        let child = server
            .stdin(Stdio::null())
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100"])
            .arg("-k")
            .arg(&socket_dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("(exited with {status})\n{}", process::read_from(&self.log_path(), from)));
            }
            if process::read_from(&self.log_path(), from).contains("ready to accept connections")
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start within 60 s; its log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Makes tablespace `name` in directory `sub` of the server's tmpfs and a database
    /// `database` in it; returns the database's URL.
    pub async fn database_on_tmpfs(&self, name: &str, sub: &str, database: &str) -> String {
        use sqlx::{ConnectOptions, Connection};
        let tmpfs = self.tmpfs.as_ref().expect("a cluster started with a tmpfs");
        let outside = tmpfs.seen_through(self.pid()).join(sub);
        std::fs::create_dir_all(&outside).expect("tablespace directory");
        if self.as_postgres {
            let status = Command::new("chown").arg("postgres:").arg(&outside).status().expect("chown");
            assert!(status.success(), "chown postgres {}", outside.display());
        }
        let options: sqlx::postgres::PgConnectOptions = self.url("postgres").parse().expect("url");
        let mut conn = options.connect().await.expect("connect to the test cluster");
        let location = tmpfs.path().join(sub);
        sqlx::query(&format!("CREATE TABLESPACE {name} LOCATION '{}'", location.display()))
            .execute(&mut conn)
            .await
            .expect("create tablespace");
        sqlx::query(&format!("CREATE DATABASE {database} TABLESPACE {name}")).execute(&mut conn).await.expect("create database");
        let _ = conn.close().await;
        self.url(database)
    }

    /// `pg_ctl stop -m fast`: open sessions are ended, the server stops; waits for it.
    pub fn stop(&mut self) {
        let out = self.tool("pg_ctl").arg("-D").arg(self.data()).args(["-m", "fast", "-w", "-t", "60", "stop"]).output().expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// `pg_ctl restart -m fast`, the server staying a child of the test: stop, then start.
    pub async fn restart(&mut self) {
        self.stop();
        self.start_again().await;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- PostgreSQL log (last 40 lines) ----\n{}", crate::orthanc::tail(&self.log(), 40));
        }
    }
}

/// A tmpfs of `size` bytes mounted at `dir` in a private mount namespace around one
/// process (see [`PrivateTmpfs::command`]), with `subdirs` made in it before the process
/// starts.
#[derive(Debug)]
pub struct PrivateTmpfs {
    /// The mount point (an empty directory outside the namespace).
    dir: tempfile::TempDir,
    pub size: u64,
    pub subdirs: Vec<String>,
}

impl PrivateTmpfs {
    /// Whether this machine lets the tests mount a tmpfs in a private namespace (root, or
    /// the capability, and `unshare`); the reason when not. Checked by doing it once.
    pub fn available() -> Result<(), String> {
        static CHECK: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        CHECK
            .get_or_init(|| {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let out = Command::new("unshare")
                    .args(["-m", "--propagation", "private", "--", "mount", "-t", "tmpfs", "-o", "size=64k", "cohort-test"])
                    .arg(dir.path())
                    .output()
                    .map_err(|e| format!("cannot run unshare: {e}"))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!("cannot mount a tmpfs in a private mount namespace: {}", String::from_utf8_lossy(&out.stderr).trim()))
                }
            })
            .clone()
    }

    pub fn new(size: u64, subdirs: &[&str]) -> PrivateTmpfs {
        PrivateTmpfs {
            dir: tempfile::Builder::new().prefix("cohort-tmpfs-").tempdir().expect("temp dir"),
            size,
            subdirs: subdirs.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Where the file system is mounted, as the process inside sees it.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A command for `program` that runs it in a new mount namespace with the tmpfs
    /// mounted (and dies with the thread that spawns it, as [`process::command`]). The
    /// wrappers exec one another, so the process id is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = process::command("unshare");
        cmd.args(["-m", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o "size=$2" cohort-test "$1" && cd "$1" && mkdir -p $3 && cd / && shift 3 && exec "$@""#)
            .arg("sh")
            .arg(self.path())
            .arg(self.size.to_string())
            .arg(if self.subdirs.is_empty() { ".".to_string() } else { self.subdirs.join(" ") })
            .arg(program);
        cmd
    }

    /// The file system as seen from outside, through process `pid` (one started by
    /// [`PrivateTmpfs::command`]).
    pub fn seen_through(&self, pid: u32) -> PathBuf {
        PathBuf::from(format!("/proc/{pid}/root")).join(self.path().strip_prefix("/").expect("absolute"))
    }

    /// Free bytes on the file system (through process `pid`).
    pub fn free_bytes(&self, pid: u32) -> u64 {
        let out = Command::new("stat").args(["-f", "-c", "%a %S"]).arg(self.seen_through(pid)).output().expect("stat -f");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace().map(|n| n.parse::<u64>().expect("stat -f output"));
        let (blocks, size) = (it.next().expect("free blocks"), it.next().expect("block size"));
        blocks * size
    }

    /// Fills the file system until `leave` bytes at most are free, with a file named
    /// `filler` at its root; [`PrivateTmpfs::free`] removes it.
    pub fn fill(&self, pid: u32, leave: u64) {
        use std::io::Write;
        let path = self.seen_through(pid).join("filler");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("filler");
        let chunk = vec![0xA5u8; 4096];
        loop {
            let free = self.free_bytes(pid);
            if free <= leave {
                break;
            }
            let n = usize::try_from((free - leave).min(1 << 20)).expect("size").max(1);
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len());
                match f.write(&chunk[..k]) {
                    Ok(w) => left -= w,
                    Err(e) if e.raw_os_error() == Some(28) => return,
                    Err(e) => panic!("filling {}: {e}", path.display()),
                }
            }
        }
    }

    /// Removes the filler: the space is back.
    pub fn free(&self, pid: u32) {
        std::fs::remove_file(self.seen_through(pid).join("filler")).expect("remove the filler");
    }

    /// Runs one SQL statement on the SQLite file `file` of the file system, from inside the
    /// process's mount namespace (`nsenter`; SQLite resolves `/proc/<pid>/root` to the
    /// outer root), with Python's `sqlite3`; returns the rows as JSON.
    pub fn sqlite(&self, pid: u32, file: &str, sql: &str) -> serde_json::Value {
        const SCRIPT: &str = "import json, sqlite3, sys\n\
            c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
            print(json.dumps(c.execute(sys.argv[2]).fetchall()))\n";
        let out = Command::new("nsenter")
            .args(["--target", &pid.to_string(), "--mount", "--"])
            .arg(crate::dicom::python())
            .args(["-c", SCRIPT])
            .arg(self.path().join(file))
            .arg(sql)
            .output()
            .expect("nsenter");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("rows as JSON")
    }

    /// The names in directory `sub` of the file system.
    pub fn list(&self, pid: u32, sub: &str) -> Vec<String> {
        std::fs::read_dir(self.seen_through(pid).join(sub))
            .expect("read_dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }
}
