//! Who is signed in to the console: operators sign in with a token from the config, get a
//! random session id in an `HttpOnly; Secure; SameSite=Strict` cookie, and carry their session's
//! CSRF token in every form they post. Sessions live in memory only (a restart signs everyone
//! out), in a bounded table; failed sign-ins are limited per source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};

use crate::api::failures::{same_secret, FailureLimit};
use crate::api::Role;
use crate::bundle::text::hex;

pub const COOKIE: &str = "vigil_session";
/// Failed sign-ins a source may make per [`SIGN_IN_WINDOW`]; then `429` until it ends.
pub const MAX_SIGN_IN_FAILURES: u32 = 5;
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(60);
/// Sessions held at once; a new one past it pushes out the one that ends soonest.
const MAX_SESSIONS: usize = 256;
/// Random bytes in a session id and in a CSRF token.
const SECRET_BYTES: usize = 32;
/// The name the API token signs in as.
pub const API_TOKEN_OPERATOR: &str = "admin";

/// Someone who may sign in.
#[derive(Debug, Clone)]
pub struct Operator {
    pub name: String,
    pub token: String,
    pub role: Role,
}

/// A signed-in operator, as the pages see them.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub name: String,
    pub role: Role,
    /// Goes into every form this session posts.
    pub csrf: String,
}

struct Session {
    user: SignedIn,
    ends: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("too many failed sign-ins from this address; try again in a minute")]
    TooManyFailures,
    #[error("no operator has this token")]
    WrongToken,
    #[error("the system's random source failed: {0}")]
    Random(getrandom::Error),
}

pub struct Sessions {
    operators: Vec<Operator>,
    lifetime: Duration,
    failures: FailureLimit,
    table: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(operators: Vec<Operator>, lifetime: Duration) -> Sessions {
        Sessions {
            operators,
            lifetime,
            failures: FailureLimit::new(MAX_SIGN_IN_FAILURES, SIGN_IN_WINDOW),
            table: Mutex::new(HashMap::new()),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Signs in whoever holds `token`, from `source`: the new session's id.
    pub fn sign_in(
        &self,
        source: IpAddr,
        token: &str,
        now: Instant,
    ) -> Result<String, SignInError> {
        if self.failures.refused(source, now) {
            return Err(SignInError::TooManyFailures);
        }
        // Every token is compared, so the time taken says nothing of which one matched.
        let found = self.operators.iter().fold(None, |found, operator| {
            if same_secret(token, &operator.token) {
                Some(operator)
            } else {
                found
            }
        });
        let Some(operator) = found else {
            self.failures.fail(source, now);
            return Err(SignInError::WrongToken);
        };
        let id = random_secret().map_err(SignInError::Random)?;
        let csrf = random_secret().map_err(SignInError::Random)?;
        let mut table = self.lock();
        if table.len() >= MAX_SESSIONS {
            table.retain(|_, session| session.ends > now);
        }
        if table.len() >= MAX_SESSIONS {
            if let Some(soonest) = table
                .iter()
                .min_by_key(|(_, session)| session.ends)
                .map(|(id, _)| id.clone())
            {
                table.remove(&soonest);
            }
        }
        table.insert(
            id.clone(),
            Session {
                user: SignedIn {
                    name: operator.name.clone(),
                    role: operator.role,
                    csrf,
                },
                ends: now + self.lifetime,
            },
        );
        tracing::info!("console: {} signed in from {source}", operator.name);
        Ok(id)
    }

    /// The operator whose session cookie `headers` carry, if it has not ended at `now`.
    pub fn signed_in(&self, headers: &HeaderMap, now: Instant) -> Option<SignedIn> {
        let id = session_cookie(headers)?;
        let mut table = self.lock();
        match table.get(id) {
            Some(session) if session.ends > now => Some(session.user.clone()),
            Some(_) => {
                table.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the session `headers` carry.
    pub fn sign_out(&self, headers: &HeaderMap) {
        if let Some(id) = session_cookie(headers) {
            self.lock().remove(id);
        }
    }
}

/// True when `given` is the session's CSRF token (compared in constant time).
pub fn csrf_matches(user: &SignedIn, given: Option<&str>) -> bool {
    given.is_some_and(|given| same_secret(given, &user.csrf))
}

/// The `Set-Cookie` value that holds session `id` for `lifetime`. No `Path`: the browser
/// scopes it to the console's own directory, wherever a reverse proxy puts it.
pub fn session_cookie_header(id: &str, lifetime: Duration) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        lifetime.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn removed_cookie_header() -> String {
    format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

fn random_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::getrandom(&mut bytes)?;
    Ok(hex(&bytes))
}
