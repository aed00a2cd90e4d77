//! FastCGI 1.0 wire format (the "FastCGI Specification", Open Market, 1996).
//!
//! Pure data handling, no I/O and no pyo3: record framing ([`record`]),
//! name-value pairs ([`params`]) and the management and request-control bodies
//! ([`management`]). Constant names are the spec's (§8, "Types and Constants").

pub mod management;
pub mod params;
pub mod record;

/// `FCGI_LISTENSOCK_FILENO` (§2.2): the listening socket a process manager passes as fd 0.
pub const FCGI_LISTENSOCK_FILENO: i32 = 0;
/// Number of bytes in a record header (§3.3).
pub const FCGI_HEADER_LEN: usize = 8;
/// The only protocol version (§3.3).
pub const FCGI_VERSION_1: u8 = 1;
/// Largest `contentLength` a record can carry (a 16-bit field).
pub const FCGI_MAX_CONTENT_LEN: usize = 65535;

// Record types (§8).
pub const FCGI_BEGIN_REQUEST: u8 = 1;
pub const FCGI_ABORT_REQUEST: u8 = 2;
pub const FCGI_END_REQUEST: u8 = 3;
pub const FCGI_PARAMS: u8 = 4;
pub const FCGI_STDIN: u8 = 5;
pub const FCGI_STDOUT: u8 = 6;
pub const FCGI_STDERR: u8 = 7;
pub const FCGI_DATA: u8 = 8;
pub const FCGI_GET_VALUES: u8 = 9;
pub const FCGI_GET_VALUES_RESULT: u8 = 10;
pub const FCGI_UNKNOWN_TYPE: u8 = 11;
pub const FCGI_MAXTYPE: u8 = FCGI_UNKNOWN_TYPE;

/// Request id of management records (§3.3).
pub const FCGI_NULL_REQUEST_ID: u16 = 0;

/// `flags` bit of `FCGI_BeginRequestBody`: keep the connection after the request (§5.1).
pub const FCGI_KEEP_CONN: u8 = 1;

// Roles (§5.1, §6).
pub const FCGI_RESPONDER: u16 = 1;
pub const FCGI_AUTHORIZER: u16 = 2;
pub const FCGI_FILTER: u16 = 3;

// protocolStatus values of FCGI_EndRequestBody (§5.5).
pub const FCGI_REQUEST_COMPLETE: u8 = 0;
pub const FCGI_CANT_MPX_CONN: u8 = 1;
pub const FCGI_OVERLOADED: u8 = 2;
pub const FCGI_UNKNOWN_ROLE: u8 = 3;

// Variable names for FCGI_GET_VALUES (§4.1).
pub const FCGI_MAX_CONNS: &str = "FCGI_MAX_CONNS";
pub const FCGI_MAX_REQS: &str = "FCGI_MAX_REQS";
pub const FCGI_MPXS_CONNS: &str = "FCGI_MPXS_CONNS";

/// The spec's name of a record type, for log lines.
pub fn type_name(record_type: u8) -> &'static str {
    match record_type {
        FCGI_BEGIN_REQUEST => "FCGI_BEGIN_REQUEST",
        FCGI_ABORT_REQUEST => "FCGI_ABORT_REQUEST",
        FCGI_END_REQUEST => "FCGI_END_REQUEST",
        FCGI_PARAMS => "FCGI_PARAMS",
        FCGI_STDIN => "FCGI_STDIN",
        FCGI_STDOUT => "FCGI_STDOUT",
        FCGI_STDERR => "FCGI_STDERR",
        FCGI_DATA => "FCGI_DATA",
        FCGI_GET_VALUES => "FCGI_GET_VALUES",
        FCGI_GET_VALUES_RESULT => "FCGI_GET_VALUES_RESULT",
        FCGI_UNKNOWN_TYPE => "FCGI_UNKNOWN_TYPE",
        _ => "unknown",
    }
}

/// A role a request can ask for in `FCGI_BEGIN_REQUEST` (§6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Responder,
    Authorizer,
    Filter,
}

impl Role {
    /// The role for a `role` field value, or `None` for a value the spec does not define.
    pub fn from_u16(role: u16) -> Option<Role> {
        match role {
            FCGI_RESPONDER => Some(Role::Responder),
            FCGI_AUTHORIZER => Some(Role::Authorizer),
            FCGI_FILTER => Some(Role::Filter),
            _ => None,
        }
    }

    /// The `role` field value (§5.1).
    pub fn number(self) -> u16 {
        match self {
            Role::Responder => FCGI_RESPONDER,
            Role::Authorizer => FCGI_AUTHORIZER,
            Role::Filter => FCGI_FILTER,
        }
    }

    /// The spec's upper-case name without the `FCGI_` prefix (`"RESPONDER"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Role::Responder => "RESPONDER",
            Role::Authorizer => "AUTHORIZER",
            Role::Filter => "FILTER",
        }
    }
}

/// A peer broke the protocol; the connection it came on is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("unsupported FastCGI version {0} (only FCGI_VERSION_1 exists); is this a FastCGI client?")]
    Version(u8),
    #[error("{name} record with request id 0; only management records use id 0 (spec §3.3)", name = type_name(*.0))]
    NullRequestId(u8),
    #[error("{name} record has {len} content bytes, expected {expected}", name = type_name(*.record_type))]
    BodyLength { record_type: u8, len: usize, expected: usize },
    #[error("FCGI_BEGIN_REQUEST for request id {0}, which is already active")]
    DuplicateRequest(u16),
    #[error("{name} record sent to the application; only a web server receives it", name = type_name(*.0))]
    WrongDirection(u8),
    #[error("malformed name-value pair in {stream}: {reason}")]
    Params { stream: &'static str, reason: &'static str },
    #[error("FCGI_PARAMS of request {request_id} exceed max_params_size ({limit} bytes)")]
    ParamsTooLarge { request_id: u16, limit: usize },
    #[error("FCGI_PARAMS of request {request_id} hold more than max_params ({limit}) name-value pairs")]
    TooManyParams { request_id: u16, limit: usize },
    #[error(
        "{name} record for request {request_id} before its FCGI_PARAMS ended (a web server sends the params first; \
         php-fpm refuses this too)",
        name = type_name(*.record_type)
    )]
    InputBeforeParams { record_type: u8, request_id: u16 },
    #[error("{name} stream of request {request_id} continues after its end", name = type_name(*.record_type))]
    AfterEnd { record_type: u8, request_id: u16 },
    #[error("connection closed in the middle of a record ({have} of {want} bytes)")]
    Truncated { have: usize, want: usize },
}
