//! FastCGI params → the ASGI `http` connection scope (ASGI 3.0, HTTP spec 2.4).
//!
//! The params first get the same CGI fix-ups as WSGI's environ
//! ([`crate::cgi::sanitize`]: `script_name`, the whole-path repair, the
//! `*.fcgi` rewrite strip), then:
//!
//! - `path`: `SCRIPT_NAME` + `PATH_INFO`, the decoded path (the web server
//!   decodes it), as UTF-8 (invalid sequences replaced); ASGI's `path`
//!   includes `root_path`.
//! - `root_path`: `SCRIPT_NAME`, as UTF-8.
//! - `raw_path`: `REQUEST_URI` up to its `?` (bytes as sent), or the path
//!   when the web server sends no `REQUEST_URI`.
//! - `query_string`: `QUERY_STRING` (bytes).
//! - `headers`: each `HTTP_*` param as a lower-cased name with `-` for `_`,
//!   plus `content-type` and `content-length` from `CONTENT_TYPE` and
//!   `CONTENT_LENGTH` (then their `HTTP_CONTENT_*` copies are dropped); a value the web server merged
//!   from several header lines stays one header (the merge is the comma or
//!   semicolon join those headers allow).
//! - `http_version` from `SERVER_PROTOCOL` (`1.0`, `1.1`, `2`), `method`,
//!   `scheme` (`https` when `HTTPS` is on), `client` (`REMOTE_ADDR`,
//!   `REMOTE_PORT`) and `server` (`SERVER_ADDR` or `SERVER_NAME`,
//!   `SERVER_PORT`), `None` when the params lack them.
//! - `extensions`: `fastcgi` → `{"params": {name: value}}` (every param as a
//!   latin-1 `str`, for `REMOTE_USER` and friends), `http.response.pathsend`.
//! - `state`: a shallow copy of the lifespan state, when there is one.

use bytes::Bytes;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::cgi;
use crate::wsgi::environ::latin1;

fn get<'a>(params: &'a [(Bytes, Bytes)], name: &str) -> Option<&'a Bytes> {
    params.iter().rev().find(|(n, _)| n == name.as_bytes()).map(|(_, v)| v)
}

fn utf8<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    PyString::new(py, &String::from_utf8_lossy(bytes))
}

fn port(value: Option<&Bytes>) -> Option<u16> {
    std::str::from_utf8(value?).ok()?.trim().parse().ok()
}

/// `HTTP_ACCEPT_ENCODING` → `accept-encoding`.
fn header_name(param: &[u8]) -> Option<Vec<u8>> {
    let rest = param.strip_prefix(b"HTTP_")?;
    Some(rest.iter().map(|&b| if b == b'_' { b'-' } else { b.to_ascii_lowercase() }).collect())
}

/// What [`build`] reports besides the scope: the configuration warnings of
/// the CGI fix-ups (for the log, once each).
pub struct Built<'py> {
    pub scope: Bound<'py, PyDict>,
    pub warnings: Vec<cgi::Warning>,
}

/// Build the scope for one request. `state` is the lifespan state dict.
pub fn build<'py>(
    py: Python<'py>,
    mut params: Vec<(Bytes, Bytes)>,
    script_name: Option<&[u8]>,
    state: Option<&Bound<'py, PyDict>>,
) -> PyResult<Built<'py>> {
    let warnings = cgi::sanitize(&mut params, script_name);
    let scope = PyDict::new(py);
    scope.set_item(intern!(py, "type"), intern!(py, "http"))?;
    let asgi = PyDict::new(py);
    asgi.set_item(intern!(py, "version"), intern!(py, "3.0"))?;
    asgi.set_item(intern!(py, "spec_version"), intern!(py, "2.4"))?;
    scope.set_item(intern!(py, "asgi"), asgi)?;

    let protocol = get(&params, "SERVER_PROTOCOL").map(|p| p.to_vec()).unwrap_or_else(|| b"HTTP/1.0".to_vec());
    let version = match protocol.strip_prefix(b"HTTP/") {
        Some(b"2") | Some(b"2.0") => "2",
        Some(b"1.1") => "1.1",
        Some(b"1.0") => "1.0",
        _ => "1.1",
    };
    scope.set_item(intern!(py, "http_version"), PyString::intern(py, version))?;
    let method = get(&params, "REQUEST_METHOD").map(|m| m.to_vec()).unwrap_or_else(|| b"GET".to_vec());
    scope.set_item(intern!(py, "method"), PyString::intern(py, &String::from_utf8_lossy(&method).to_uppercase()))?;
    scope.set_item(intern!(py, "scheme"), PyString::intern(py, cgi::url_scheme(&params)))?;

    let script = get(&params, "SCRIPT_NAME").cloned().unwrap_or_default();
    let path_info = get(&params, "PATH_INFO").cloned().unwrap_or_default();
    let full = [&script[..], &path_info[..]].concat();
    let full = if full.is_empty() { b"/".to_vec() } else { full };
    scope.set_item(intern!(py, "path"), utf8(py, &full))?;
    scope.set_item(intern!(py, "root_path"), utf8(py, &script))?;
    let raw_path = match get(&params, "REQUEST_URI") {
        Some(uri) => uri.split(|&b| b == b'?').next().unwrap_or_default().to_vec(),
        None => percent_encoding::percent_encode(&full, PATH_SET).to_string().into_bytes(),
    };
    scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, &raw_path))?;
    let query = get(&params, "QUERY_STRING").cloned().unwrap_or_default();
    scope.set_item(intern!(py, "query_string"), PyBytes::new(py, &query))?;

    let headers = PyList::empty(py);
    let raw = PyDict::new(py);
    // nginx sends both CONTENT_TYPE and HTTP_CONTENT_TYPE (and the same for the
    // length), and empty CONTENT_* for a request without a body: one header each,
    // from the CGI variable when it has a value (Django joins repeated headers).
    let has_type = get(&params, "CONTENT_TYPE").is_some_and(|v| !v.is_empty());
    // cgi::sanitize has removed an empty or invalid CONTENT_LENGTH already.
    let has_length = get(&params, "CONTENT_LENGTH").is_some();
    for (name, value) in &params {
        raw.set_item(latin1(py, name)?, latin1(py, value)?)?;
        let header = match &name[..] {
            b"CONTENT_TYPE" if has_type => Some(b"content-type".to_vec()),
            b"CONTENT_LENGTH" => Some(b"content-length".to_vec()),
            b"CONTENT_TYPE" => None,
            b"HTTP_CONTENT_TYPE" if has_type => None,
            b"HTTP_CONTENT_LENGTH" if has_length => None,
            _ => header_name(name),
        };
        if let Some(header) = header {
            headers.append(PyTuple::new(py, [PyBytes::new(py, &header), PyBytes::new(py, value)])?)?;
        }
    }
    scope.set_item(intern!(py, "headers"), headers)?;

    let client = match (get(&params, "REMOTE_ADDR"), port(get(&params, "REMOTE_PORT"))) {
        (Some(addr), Some(p)) => Some((String::from_utf8_lossy(addr).into_owned(), p)),
        (Some(addr), None) => Some((String::from_utf8_lossy(addr).into_owned(), 0)),
        _ => None,
    };
    scope.set_item(intern!(py, "client"), client)?;
    let host = get(&params, "SERVER_ADDR").or_else(|| get(&params, "SERVER_NAME"));
    let server = match (host, port(get(&params, "SERVER_PORT"))) {
        (Some(h), Some(p)) => Some((String::from_utf8_lossy(h).into_owned(), Some(p))),
        (Some(h), None) => Some((String::from_utf8_lossy(h).into_owned(), None)),
        _ => None,
    };
    scope.set_item(intern!(py, "server"), server)?;

    let extensions = PyDict::new(py);
    let fastcgi = PyDict::new(py);
    fastcgi.set_item(intern!(py, "params"), raw)?;
    extensions.set_item(intern!(py, "fastcgi"), fastcgi)?;
    extensions.set_item(intern!(py, "http.response.pathsend"), PyDict::new(py))?;
    scope.set_item(intern!(py, "extensions"), extensions)?;
    if let Some(state) = state {
        scope.set_item(intern!(py, "state"), state.copy()?)?;
    }
    Ok(Built { scope, warnings })
}

/// Characters left as they are in a path we encode ourselves (RFC 3986 pchar and `/`).
const PATH_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

#[cfg(test)]
mod tests {
    use super::header_name;

    #[test]
    fn header_names_are_lower_case_with_dashes() {
        assert_eq!(header_name(b"HTTP_ACCEPT_ENCODING").as_deref(), Some(&b"accept-encoding"[..]));
        assert_eq!(header_name(b"HTTP_X_FORWARDED_FOR").as_deref(), Some(&b"x-forwarded-for"[..]));
        assert_eq!(header_name(b"SERVER_NAME"), None);
    }
}
