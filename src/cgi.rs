//! CGI/1.1 variables as a WSGI app needs them (PEP 3333 §"environ Variables"),
//! from what a web server actually sends. Pure: no pyo3.
//!
//! Follows flup's `_sanitizeEnv` (its users' apps rely on it), except that a
//! `PATH_INFO` derived from `REQUEST_URI` is percent-decoded, as a web
//! server's own `PATH_INFO` is (RFC 3875 §4.1.5).

use bytes::Bytes;
use percent_encoding::percent_decode;

fn get<'a>(params: &'a [(Bytes, Bytes)], name: &str) -> Option<&'a Bytes> {
    params.iter().find(|(n, _)| n == name.as_bytes()).map(|(_, v)| v)
}

fn set(params: &mut Vec<(Bytes, Bytes)>, name: &'static str, value: Bytes) {
    match params.iter_mut().find(|(n, _)| n == name.as_bytes()) {
        Some((_, v)) => *v = value,
        None => params.push((Bytes::from_static(name.as_bytes()), value)),
    }
}

/// Variables PEP 3333 requires, with flup's defaults.
const REQUIRED: [(&str, &str); 4] =
    [("REQUEST_METHOD", "GET"), ("SERVER_NAME", "localhost"), ("SERVER_PORT", "80"), ("SERVER_PROTOCOL", "HTTP/1.0")];

/// Fill in what WSGI needs and the web server did not send; returns one
/// warning line per problem, for `wsgi.errors`.
///
/// - `SCRIPT_NAME` defaults to `""`.
/// - A missing or empty `PATH_INFO` is the path of `REQUEST_URI`,
///   percent-decoded, minus the `SCRIPT_NAME` prefix (a warning when the path
///   does not start with `SCRIPT_NAME`), or `""` without `REQUEST_URI`.
/// - A missing or empty `QUERY_STRING` is taken from `REQUEST_URI`.
/// - Missing `REQUEST_METHOD`, `SERVER_NAME`, `SERVER_PORT`, `SERVER_PROTOCOL`
///   default to `GET`, `localhost`, `80`, `HTTP/1.0`, each with a warning.
pub fn sanitize(params: &mut Vec<(Bytes, Bytes)>) -> Vec<String> {
    let mut warnings = Vec::new();
    let script_name = match get(params, "SCRIPT_NAME") {
        Some(v) => v.clone(),
        None => {
            set(params, "SCRIPT_NAME", Bytes::new());
            Bytes::new()
        }
    };
    let request_uri = get(params, "REQUEST_URI").cloned();
    let (uri_path, uri_query) = match &request_uri {
        Some(uri) => match uri.iter().position(|&b| b == b'?') {
            Some(q) => (Some(uri.slice(..q)), Some(uri.slice(q + 1..))),
            None => (Some(uri.clone()), None),
        },
        None => (None, None),
    };
    if get(params, "PATH_INFO").is_none_or(|v| v.is_empty()) {
        let path_info = match uri_path {
            Some(raw) => {
                let decoded: Vec<u8> = percent_decode(&raw).collect();
                match decoded.strip_prefix(&script_name[..]) {
                    Some(rest) => Bytes::copy_from_slice(rest),
                    None => {
                        warnings.push(format!(
                            "SCRIPT_NAME {:?} is not a prefix of the REQUEST_URI path {:?}; PATH_INFO set to the whole path",
                            String::from_utf8_lossy(&script_name),
                            String::from_utf8_lossy(&decoded)
                        ));
                        Bytes::from(decoded)
                    }
                }
            }
            None => Bytes::new(),
        };
        set(params, "PATH_INFO", path_info);
    }
    if get(params, "QUERY_STRING").is_none_or(|v| v.is_empty()) {
        set(params, "QUERY_STRING", uri_query.unwrap_or_default());
    }
    for (name, default) in REQUIRED {
        if get(params, name).is_none() {
            warnings.push(format!("missing FastCGI param {name} required by WSGI; using {default:?}"));
            set(params, name, Bytes::from_static(default.as_bytes()));
        }
    }
    warnings
}

/// `wsgi.url_scheme`: `https` when the `HTTPS` param is `on` or `1` (flup's
/// rule; case-insensitive here, since Apache sends `on` and others `ON`).
pub fn url_scheme(params: &[(Bytes, Bytes)]) -> &'static str {
    match get(params, "HTTPS") {
        Some(v) if v.eq_ignore_ascii_case(b"on") || &v[..] == b"1" => "https",
        _ => "http",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
        pairs.iter().map(|(n, v)| (Bytes::copy_from_slice(n.as_bytes()), Bytes::copy_from_slice(v.as_bytes()))).collect()
    }

    fn value<'a>(p: &'a [(Bytes, Bytes)], name: &str) -> &'a str {
        std::str::from_utf8(get(p, name).expect(name)).unwrap()
    }

    #[test]
    fn path_info_and_query_from_request_uri() {
        let mut p = params(&[("SCRIPT_NAME", "/app"), ("REQUEST_URI", "/app/x%20y?a=1"), ("REQUEST_METHOD", "GET"), ("SERVER_NAME", "h"), ("SERVER_PORT", "80"), ("SERVER_PROTOCOL", "HTTP/1.1")]);
        assert!(sanitize(&mut p).is_empty());
        assert_eq!(value(&p, "PATH_INFO"), "/app/x y".strip_prefix("/app").unwrap());
        assert_eq!(value(&p, "QUERY_STRING"), "a=1");
    }

    #[test]
    fn web_server_values_are_kept() {
        let mut p = params(&[("SCRIPT_NAME", "/app"), ("PATH_INFO", "/p"), ("QUERY_STRING", "q"), ("REQUEST_URI", "/other?z")]);
        sanitize(&mut p);
        assert_eq!(value(&p, "PATH_INFO"), "/p");
        assert_eq!(value(&p, "QUERY_STRING"), "q");
    }

    #[test]
    fn defaults_come_with_warnings() {
        let mut p = params(&[]);
        let warnings = sanitize(&mut p);
        assert_eq!(warnings.len(), 4);
        assert!(warnings[0].contains("REQUEST_METHOD"));
        assert_eq!(value(&p, "SCRIPT_NAME"), "");
        assert_eq!(value(&p, "PATH_INFO"), "");
        assert_eq!(value(&p, "REQUEST_METHOD"), "GET");
        assert_eq!(value(&p, "SERVER_PROTOCOL"), "HTTP/1.0");
    }

    #[test]
    fn mismatched_script_name_warns() {
        let mut p = params(&[("SCRIPT_NAME", "/app.fcgi"), ("REQUEST_URI", "/items/3"), ("REQUEST_METHOD", "GET"), ("SERVER_NAME", "h"), ("SERVER_PORT", "80"), ("SERVER_PROTOCOL", "HTTP/1.1")]);
        let w = sanitize(&mut p);
        assert_eq!(w.len(), 1);
        assert_eq!(value(&p, "PATH_INFO"), "/items/3");
    }

    #[test]
    fn https_detection() {
        assert_eq!(url_scheme(&params(&[("HTTPS", "on")])), "https");
        assert_eq!(url_scheme(&params(&[("HTTPS", "1")])), "https");
        assert_eq!(url_scheme(&params(&[("HTTPS", "off")])), "http");
        assert_eq!(url_scheme(&params(&[])), "http");
    }
}
