//! `cohort`: the sidecar server beside a stock Orthanc, and admin commands. This file
//! only wires configuration, logging and the core; the work is in `cohort-core`.

mod import;
mod memory;
mod orthanc;
mod serve;

use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use cohort_core::config::LogFormat;
use cohort_core::domain::{Role, TokenScope};
use cohort_core::pacs::{OrthancPacs, Pacs};
use cohort_core::services::tokens::{self, TokenRequest};
use cohort_core::services::users::NewUserInput;
use cohort_core::services::Actor;
use cohort_core::services::{reconcile, registry};
use cohort_core::{App, Config, Host};
use tokio::sync::Notify;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(name = "cohort", version, about = "Cohort: accounts, patients and DICOM import/export beside an Orthanc server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the /api (configured from COHORT_* variables; see the README).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage user accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Import DICOM from a folder (recursively), a ZIP archive or a single file, through
    /// the same service as the API, with a progress bar and a summary.
    Import {
        path: std::path::PathBuf,
        /// Research group of the patients this import creates (default: none, for
        /// admins to triage). Local imports only: a remote import puts new patients in
        /// the token owner's group.
        #[arg(long, conflicts_with = "url")]
        group: Option<String>,
        /// Import into the Cohort at this URL (e.g. https://cohort.example.org) over
        /// HTTP instead of this server's database and Orthanc.
        #[arg(long, requires = "token_file")]
        url: Option<String>,
        /// A file holding a personal API token with the `write` scope (for --url).
        #[arg(long, requires = "url")]
        token_file: Option<std::path::PathBuf>,
    },
    /// Complete the imports that stopped before they finished (a process killed
    /// mid-import): register what Orthanc holds of their studies under the importer's
    /// group, audited as RECONCILE by the system. `cohort serve` does this by itself at
    /// start-up and every minute; imports still running elsewhere are left alone.
    Reconcile,
    /// Manage personal API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a personal API token for a user and print it once (audited as made by
    /// the system).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, value_enum)]
        scope: ScopeArg,
        /// Days until it expires (1 to 365).
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// What the token is for.
        #[arg(long, default_value = "command line")]
        name: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ScopeArg {
    Read,
    Write,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user; the password is read from the first line of standard input.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Name of an existing research group.
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        first_name: Option<String>,
        #[arg(long)]
        last_name: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    Admin,
    User,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env_and_file(std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cohort: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cohort: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(config).await,
            Command::User { command: UserCommand::Add { email, role, group, first_name, last_name } } => {
                add_user(config, email, role, group, first_name, last_name).await
            }
            Command::Import { path, url: Some(url), token_file: Some(token_file), .. } => import::run_remote(&url, &token_file, path).await,
            Command::Import { path, group, .. } => import::run(config, path, group).await,
            Command::Reconcile => reconcile_now(config).await,
            Command::Token { command: TokenCommand::Create { email, scope, days, name } } => {
                create_token(config, email, scope, days, name).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cohort: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colour codes only on a terminal: a log file or a journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let app = App::start(config.clone(), Some(orthanc_pacs(&config)?), Host::Sidecar).await?;
    // DICOM that reaches Orthanc without Cohort is registered from Orthanc's change log.
    let follower = tokio::spawn(registry::follow_changes(app.clone(), Arc::new(Notify::new())));
    // Imports that died with an earlier process are completed (see `cohort reconcile`).
    let reconciler = tokio::spawn(reconcile::keep_reconciled(app.clone()));
    // Memory the allocator keeps freed goes back to the system (the 100 MB bound).
    let trimmer = tokio::spawn(memory::give_back_freed_memory());
    let api = cohort_core::api::Api::new(app.clone(), cohort_core::api::router(app.clone()));
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen} (COHORT_LISTEN): {e}"))?;
    tracing::info!(address = %listener.local_addr()?, database = app.store.backend().as_str(), "cohort listening");
    let limits = serve::Limits::new(std::time::Duration::from_secs(u64::from(config.request_timeout_seconds)));
    let drain = std::time::Duration::from_secs(u64::from(config.shutdown_drain_seconds));
    serve::serve(listener, api, limits, shutdown_signal(), drain, || app.abort.fire()).await;
    // The follower's work is one transaction per change: stopping it between two awaits
    // rolls back at most the change in hand, which the cursor still points at. Likewise
    // a reconciliation: its one transaction rolls back, and the next start does it again.
    follower.abort();
    reconciler.abort();
    trimmer.abort();
    app.abort.fire();
    tracing::info!("shutting down");
    // Connections dropped after the grace period may still hold database connections:
    // do not wait for them for ever.
    if tokio::time::timeout(serve::ABORT_GRACE, app.store.close()).await.is_err() {
        tracing::warn!("the database pool did not close in time");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The Orthanc this sidecar serves, over HTTP.
pub fn orthanc_pacs(config: &Config) -> anyhow::Result<Arc<dyn Pacs>> {
    Ok(OrthancPacs::shared(orthanc::OrthancHttp::new(config)?))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

async fn reconcile_now(config: Config) -> anyhow::Result<()> {
    let app = App::start(config.clone(), Some(orthanc_pacs(&config)?), Host::Sidecar).await?;
    let outcome = reconcile::reconcile_settled(&app).await.map_err(|e| anyhow::anyhow!("{}", e.message));
    app.store.close().await;
    let outcome = outcome?;
    for done in &outcome.reconciled {
        println!(
            "import {} by {}: {} studies registered, {} refreshed, {} refused (another group's patient), {} never reached Orthanc; {} instances",
            done.import_id,
            done.importer.as_deref().unwrap_or("the system"),
            done.registered,
            done.refreshed,
            done.refused,
            done.not_in_orthanc,
            done.instances
        );
    }
    println!("{} interrupted imports reconciled, {} still running (left alone)", outcome.reconciled.len(), outcome.running);
    Ok(())
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = cohort_core::store::Store::connect_with(&config.database_url, config.database_connections).await?;
    store.migrate().await?;
    println!("database migrated ({})", store.backend().as_str());
    store.close().await;
    Ok(())
}

async fn add_user(
    config: Config,
    email: String,
    role: RoleArg,
    group: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    let app = App::start(config, None, Host::Sidecar).await?;
    let group_id = match group {
        Some(name) => {
            let mut db = app.store.conn().await?;
            Some(db.group_by_name(&name).await?.ok_or_else(|| anyhow::anyhow!("no research group named {name:?}"))?.id)
        }
        None => None,
    };
    let role = match role {
        RoleArg::Admin => Role::Admin,
        RoleArg::User => Role::User,
    };
    let input = NewUserInput { email, password, role, group_id, first_name, last_name };
    let user = cohort_core::services::users::create(&app, &Actor::system(), input).await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
    println!("created {} user {} (id {})", user.role, user.email, user.id);
    app.store.close().await;
    Ok(())
}

async fn create_token(config: Config, email: String, scope: ScopeArg, days: u32, name: String) -> anyhow::Result<()> {
    let app = App::start(config, None, Host::Sidecar).await?;
    let scope = match scope {
        ScopeArg::Read => TokenScope::Read,
        ScopeArg::Write => TokenScope::Write,
    };
    let request = TokenRequest { name, scope, expires_in_days: days };
    let (user, token) = tokens::create_for_email(&app, &email, request).await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
    app.store.close().await;
    eprintln!(
        "created {} token {} for {} (id {}), expires {}",
        token.scope,
        token.name,
        user.email,
        token.id,
        token.expires_at.to_rfc3339()
    );
    // The token alone on standard output, so `cohort token create ... > token.txt` works.
    println!("{}", token.token);
    Ok(())
}
