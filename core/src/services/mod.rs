//! Business rules. Each public function is one use case: it checks permissions object
//! by object, does its work on one database transaction together with its audit row,
//! and returns API models or an [`ApiError`](crate::error::ApiError).

pub mod anchors;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod export;
pub mod groups;
pub mod images;
pub mod import;
pub mod page_cache;
pub mod patients;
pub mod pseudonyms;
pub mod reconcile;
pub mod registry;
pub mod search_cache;
pub mod stats;
pub mod tokens;
pub mod users;

use crate::domain::{Id, Role, TokenScope};
use crate::model::User;
use crate::store::audit::NewAudit;

/// How the caller proved who they are. CSRF applies to cookies only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Cookie,
    Bearer,
}

/// Facts about the client that the audit trail and throttling need.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: User,
    pub session_id: String,
    pub via: Via,
    pub csrf_hash: String,
    pub client: ClientInfo,
    /// The personal API token the request came with, if any (then `session_id` and
    /// `csrf_hash` are empty).
    pub token: Option<TokenUse>,
}

/// A request authenticated by a personal API token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenUse {
    pub id: Id,
    pub scope: TokenScope,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    pub fn id(&self) -> Id {
        self.user.id
    }

    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.user.id),
            email: Some(self.user.email.clone()),
            ip: self.client.ip.clone(),
            token_id: self.token.map(|t| t.id),
        }
    }

    /// Whether this request may use `method`: sessions and `write` tokens may use any,
    /// `read` tokens GET and HEAD only.
    pub fn may_use(&self, method: &http::Method) -> bool {
        match self.token {
            Some(TokenUse { scope: TokenScope::Read, .. }) => matches!(*method, http::Method::GET | http::Method::HEAD),
            _ => true,
        }
    }
}

/// Who did something, as the audit trail records it. The system (start-up, automatic
/// registration, the command line) has no user.
#[derive(Clone, Debug, Default)]
pub struct Actor {
    pub user_id: Option<Id>,
    pub email: Option<String>,
    pub ip: Option<String>,
    /// The personal API token the actor used, recorded in the row's details.
    pub token_id: Option<Id>,
}

/// Audit outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

impl Actor {
    pub fn system() -> Actor {
        Actor::default()
    }

    /// Starts an audit row for this actor.
    pub fn audit(&self, action: &'static str, outcome: Outcome) -> NewAudit {
        NewAudit {
            user_id: self.user_id,
            actor_email: self.email.clone(),
            ip: self.ip.clone(),
            token_id: self.token_id,
            action,
            outcome: outcome.as_str(),
            ..NewAudit::default()
        }
    }
}

impl NewAudit {
    /// Names the resource the action was about.
    pub fn on(mut self, resource_type: &'static str, id: impl ToString) -> Self {
        self.resource_type = Some(resource_type);
        self.resource_id = Some(id.to_string());
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// Audit action names (DESIGN.md section 3).
pub mod action {
    pub const LOGIN: &str = "LOGIN";
    pub const LOGIN_FAILED: &str = "LOGIN_FAILED";
    pub const LOGOUT: &str = "LOGOUT";
    pub const REFRESH: &str = "REFRESH";
    pub const REFRESH_REUSE: &str = "REFRESH_REUSE";
    pub const CREATE: &str = "CREATE";
    pub const UPDATE: &str = "UPDATE";
    pub const DELETE: &str = "DELETE";
    pub const IMPORT: &str = "IMPORT";
    pub const EXPORT: &str = "EXPORT";
    pub const PASSWORD_CHANGE: &str = "PASSWORD_CHANGE";
    pub const SESSION_REVOKE: &str = "SESSION_REVOKE";
    pub const ACCESS_DENIED: &str = "ACCESS_DENIED";
    pub const TOKEN_CREATE: &str = "TOKEN_CREATE";
    pub const TOKEN_REVOKE: &str = "TOKEN_REVOKE";
    /// An Orthanc change the follower gave up on (`services::registry`).
    pub const REGISTRATION_FAILED: &str = "REGISTRATION_FAILED";
    /// An import that died before it finished, completed by reconciliation (by the
    /// system, naming the import and its importer).
    pub const RECONCILE: &str = "RECONCILE";
}
