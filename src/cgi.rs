//! CGI/1.1 variables as a WSGI app needs them (PEP 3333 §"environ Variables"),
//! from what a web server actually sends. Pure: no pyo3.
//!
//! Follows flup's `_sanitizeEnv` (its users' apps rely on it), with these
//! differences: a `PATH_INFO` derived from `REQUEST_URI` is percent-decoded,
//! as a web server's own `PATH_INFO` is (RFC 3875 §4.1.5); `SCRIPT_NAME` is
//! removed only as a whole path prefix; and the two classic URL-root mistakes
//! are repaired (see [`sanitize`]).

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

/// Something about a request's variables worth telling the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// A configuration problem that repeats on every request: log it once
    /// per process, not per request (log flooding is a classic flup complaint).
    pub once: Option<WarningKind>,
    pub message: String,
}

/// The kinds of once-per-process warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarningKind {
    ScriptNameIsWholePath,
    FcgiScriptNameStripped,
    NotUnderScriptName,
    NotUnderMount,
    BadContentLength,
    MissingParam(&'static str),
}

/// Which web server sent the params, for warnings that name the fix for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    Nginx,
    ApacheProxy,
    ApacheCgi,
    Lighttpd,
    HaProxy,
    Caddy,
    H2o,
    Unknown,
}

fn sender(params: &[(Bytes, Bytes)]) -> Sender {
    let software = get(params, "SERVER_SOFTWARE").map(|v| v.to_ascii_lowercase()).unwrap_or_default();
    let proxied = get(params, "SCRIPT_FILENAME").is_some_and(|v| v.starts_with(b"proxy:"));
    if software.starts_with(b"nginx") {
        Sender::Nginx
    } else if software.starts_with(b"apache") {
        if proxied {
            Sender::ApacheProxy
        } else {
            Sender::ApacheCgi
        }
    } else if software.starts_with(b"lighttpd") {
        Sender::Lighttpd
    } else if software.starts_with(b"haproxy") {
        Sender::HaProxy
    } else if software.starts_with(b"caddy") {
        Sender::Caddy
    } else if software.starts_with(b"h2o") {
        Sender::H2o
    } else {
        Sender::Unknown
    }
}

/// How to make a web server send SCRIPT_NAME = the mount point and PATH_INFO = the rest.
fn split_fix(sender: Sender) -> &'static str {
    match sender {
        Sender::Nginx => {
            "nginx: `fastcgi_param SCRIPT_NAME \"\"; fastcgi_param PATH_INFO $fastcgi_script_name;` at the root, \
             `fastcgi_split_path_info` for a prefix (`oxfcgi config nginx` prints both)"
        }
        Sender::ApacheProxy => "Apache mod_proxy_fcgi: the ProxyFCGISetEnvIf rules `oxfcgi config apache-proxy` prints",
        Sender::HaProxy => "HAProxy: `path-info ^(/prefix)(/.*)?$` in the fcgi-app (`oxfcgi config haproxy`)",
        Sender::Caddy => "Caddy: `split /prefix` in the fastcgi transport (`oxfcgi config caddy`)",
        Sender::H2o => "H2O: mount the app with `fastcgi.connect` under the path (`oxfcgi config h2o`)",
        _ => {
            "nginx: `fastcgi_param SCRIPT_NAME \"\"; fastcgi_param PATH_INFO $fastcgi_script_name;` at the root, \
             `fastcgi_split_path_info` for a prefix (`oxfcgi config nginx`); Apache mod_proxy_fcgi: the \
             ProxyFCGISetEnvIf rules of `oxfcgi config apache-proxy`; elsewhere, have the web server send \
             SCRIPT_NAME = the mount point and PATH_INFO = the rest"
        }
    }
}

/// Whether the web server splits SCRIPT_NAME/PATH_INFO itself, as CGI does:
/// Apache running the script (mod_fcgid; not mod_proxy_fcgi, whose
/// SCRIPT_FILENAME starts with `proxy:`) and lighttpd. A request for exactly
/// their mount point has SCRIPT_NAME = the path and no PATH_INFO, correctly.
fn splits_like_cgi(params: &[(Bytes, Bytes)]) -> bool {
    let software = get(params, "SERVER_SOFTWARE").map(|v| &v[..]).unwrap_or_default();
    let proxied = get(params, "SCRIPT_FILENAME").is_some_and(|v| v.starts_with(b"proxy:"));
    (software.starts_with(b"Apache") && !proxied) || software.starts_with(b"lighttpd")
}

/// `rest` when `path` is `prefix` followed by nothing or by `/…`.
fn strip_path_prefix<'a>(path: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let prefix = prefix.strip_suffix(b"/").unwrap_or(prefix);
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with(b"/")).then_some(rest)
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fill in and repair what WSGI needs; returns warnings for `wsgi.errors`
/// and the log.
///
/// In order:
/// 1. With a mount prefix (`script_name` setting): `SCRIPT_NAME` is the
///    prefix and `PATH_INFO` the rest of the request path: the web server's
///    `SCRIPT_NAME + PATH_INFO` (decoded and normalized by it), or the
///    decoded `REQUEST_URI` path when it sent neither.
/// 2. `SCRIPT_NAME` equal to the whole request path with no `PATH_INFO`
///    (nginx's default `fastcgi_params`, Apache mod_proxy_fcgi; not servers
///    that split like CGI, for which this is a request for the mount point
///    itself, see [`splits_like_cgi`]): the app is
///    taken as mounted at `/` (`SCRIPT_NAME=""`, `PATH_INFO`=the path), with
///    a once-per-process warning naming the fix at the source.
/// 3. A `*.fcgi` `SCRIPT_NAME` the request URI does not contain (the
///    `RewriteRule ^(.*)$ app.fcgi/$1` case that Flask's docs fix with a
///    middleware): `SCRIPT_NAME` becomes the part of the path before
///    `PATH_INFO`, once-per-process warning.
/// 4. flup's rules: `SCRIPT_NAME` defaults to `""`; a missing or empty
///    `PATH_INFO` is the decoded `REQUEST_URI` path minus the `SCRIPT_NAME`
///    path prefix (the whole path, with a warning, if it is not under it);
///    a missing or empty `QUERY_STRING` comes from `REQUEST_URI`; missing
///    `REQUEST_METHOD`, `SERVER_NAME`, `SERVER_PORT`, `SERVER_PROTOCOL`
///    default to `GET`, `localhost`, `80`, `HTTP/1.0`, each with a warning.
pub fn sanitize(params: &mut Vec<(Bytes, Bytes)>, mount: Option<&[u8]>) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let request_uri = get(params, "REQUEST_URI").cloned();
    let (uri_path, uri_query) = match &request_uri {
        Some(uri) => match uri.iter().position(|&b| b == b'?') {
            Some(q) => (Some(uri.slice(..q)), Some(uri.slice(q + 1..))),
            None => (Some(uri.clone()), None),
        },
        None => (None, None),
    };
    let decoded_path: Option<Vec<u8>> = uri_path.as_ref().map(|raw| percent_decode(raw).collect());
    let script_name = get(params, "SCRIPT_NAME").cloned().unwrap_or_default();
    let path_info_sent = get(params, "PATH_INFO").is_some();
    let path_info = get(params, "PATH_INFO").cloned().filter(|p| !p.is_empty());

    if let Some(mount) = mount {
        let mount = mount.strip_suffix(b"/").unwrap_or(mount);
        // The web server's own split is decoded and normalized (no `..`);
        // the raw REQUEST_URI only when it sent neither.
        let server_path = [&script_name[..], path_info.as_deref().unwrap_or_default()].concat();
        let path = if server_path.is_empty() { decoded_path.clone().unwrap_or_default() } else { server_path };
        let rest = match strip_path_prefix(&path, mount) {
            Some(rest) => rest.to_vec(),
            None => {
                warnings.push(Warning {
                    once: Some(WarningKind::NotUnderMount),
                    message: format!(
                        "request path {:?} is not under script_name {:?}; PATH_INFO set to the whole path",
                        show(&path),
                        show(mount)
                    ),
                });
                path
            }
        };
        set(params, "SCRIPT_NAME", Bytes::copy_from_slice(mount));
        set(params, "PATH_INFO", Bytes::from(rest));
    } else if let (false, Some(path)) = (path_info_sent, &decoded_path) {
        // Only when PATH_INFO is absent: nginx's prefix recipe
        // (`fastcgi_split_path_info`) sends an empty one for the prefix itself.
        // The shape (SCRIPT_NAME = the whole path, no PATH_INFO) is what
        // nginx's default fastcgi_params and mod_proxy_fcgi send for every
        // path, but also what HAProxy's `path-info` recipe, Caddy's `split`
        // and servers that split like CGI send for the mount point itself:
        // only the first two (or a server that does not say) are repaired.
        let from = sender(params);
        let whole_path_sender = matches!(from, Sender::Nginx | Sender::ApacheProxy | Sender::Unknown);
        if !script_name.is_empty()
            && script_name[..] == path[..]
            && script_name != "/"
            && whole_path_sender
            && !splits_like_cgi(params)
        {
            let who = match from {
                Sender::Nginx => "as nginx's default fastcgi_params send it",
                Sender::ApacheProxy => "as Apache mod_proxy_fcgi sends it",
                _ => "as nginx's default fastcgi_params and Apache mod_proxy_fcgi send it",
            };
            warnings.push(Warning {
                once: Some(WarningKind::ScriptNameIsWholePath),
                message: format!(
                    "SCRIPT_NAME is the whole request path ({:?}) and PATH_INFO is missing, {who}; serving the \
                     app as mounted at \"/\". Fix it at the source: {}; or set script_name (--script-name \
                     /prefix) to the mount prefix",
                    show(&script_name),
                    split_fix(from)
                ),
            });
            set(params, "SCRIPT_NAME", Bytes::new());
            set(params, "PATH_INFO", Bytes::from(path.clone()));
        }
    } else if let (Some(pi), Some(path)) = (&path_info, &decoded_path) {
        let fcgi_script = script_name.rsplit(|&b| b == b'/').next().is_some_and(|last| last.ends_with(b".fcgi"));
        if fcgi_script && strip_path_prefix(path, &script_name).is_none() {
            let before = path.strip_suffix(&pi[..]).map(|b| b.strip_suffix(b"/").unwrap_or(b)).unwrap_or_default();
            warnings.push(Warning {
                once: Some(WarningKind::FcgiScriptNameStripped),
                message: format!(
                    "SCRIPT_NAME {:?} is not in the request path {:?} (a rewrite rule maps URLs onto the .fcgi \
                     script); using SCRIPT_NAME {:?} so generated URLs do not contain the script name",
                    show(&script_name),
                    show(path),
                    show(before)
                ),
            });
            set(params, "SCRIPT_NAME", Bytes::copy_from_slice(before));
        }
    }

    let script_name = get(params, "SCRIPT_NAME").cloned();
    if script_name.is_none() {
        set(params, "SCRIPT_NAME", Bytes::new());
    }
    let script_name = script_name.unwrap_or_default();
    if get(params, "PATH_INFO").is_none_or(|v| v.is_empty()) {
        let path_info = match decoded_path {
            Some(path) => match strip_path_prefix(&path, &script_name) {
                Some(rest) => Bytes::copy_from_slice(rest),
                None => {
                    warnings.push(Warning {
                        once: Some(WarningKind::NotUnderScriptName),
                        message: format!("SCRIPT_NAME {:?} is not a prefix of the request path {:?}; PATH_INFO set to the whole path", show(&script_name), show(&path)),
                    });
                    Bytes::from(path)
                }
            },
            None => Bytes::new(),
        };
        set(params, "PATH_INFO", path_info);
    }
    if get(params, "QUERY_STRING").is_none_or(|v| v.is_empty()) {
        set(params, "QUERY_STRING", uri_query.unwrap_or_default());
    }
    // CGI/1.1 §4.1.2: CONTENT_LENGTH is a non-negative decimal, or absent. Caddy sends -1
    // for a chunked body; others send "" for no body. An unusable one is removed: the
    // body ends at its end record (wsgi.input_terminated is always true).
    if let Some(value) = get(params, "CONTENT_LENGTH") {
        let valid = !value.is_empty() && value.iter().all(u8::is_ascii_digit) && value.len() <= 19;
        if !valid {
            if !value.is_empty() {
                warnings.push(Warning {
                    once: Some(WarningKind::BadContentLength),
                    message: format!(
                        "CONTENT_LENGTH {:?} is not a length ({}); removed: the body is read to its end record",
                        show(value),
                        match sender(params) {
                            Sender::Caddy => "Caddy sends -1 for a chunked request body",
                            _ => "CGI/1.1 wants a non-negative number or nothing",
                        }
                    ),
                });
            }
            params.retain(|(n, _)| n != "CONTENT_LENGTH".as_bytes());
        }
    }
    for (name, default) in REQUIRED {
        if get(params, name).is_none() {
            warnings.push(Warning {
                once: Some(WarningKind::MissingParam(name)),
                message: format!("missing FastCGI param {name} required by WSGI; using {default:?}"),
            });
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

    const BASE: [(&str, &str); 4] =
        [("REQUEST_METHOD", "GET"), ("SERVER_NAME", "h"), ("SERVER_PORT", "80"), ("SERVER_PROTOCOL", "HTTP/1.1")];

    fn params(pairs: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
        BASE.iter()
            .chain(pairs)
            .map(|(n, v)| (Bytes::copy_from_slice(n.as_bytes()), Bytes::copy_from_slice(v.as_bytes())))
            .collect()
    }

    fn value<'a>(p: &'a [(Bytes, Bytes)], name: &str) -> &'a str {
        std::str::from_utf8(get(p, name).expect(name)).unwrap()
    }

    fn run(pairs: &[(&str, &str)], mount: Option<&str>) -> (Vec<(Bytes, Bytes)>, Vec<Warning>) {
        let mut p = params(pairs);
        let w = sanitize(&mut p, mount.map(str::as_bytes));
        (p, w)
    }

    #[test]
    fn path_info_and_query_from_request_uri() {
        let (p, w) = run(&[("SCRIPT_NAME", "/app"), ("REQUEST_URI", "/app/x%20y?a=1")], None);
        assert!(w.is_empty());
        assert_eq!(value(&p, "PATH_INFO"), "/x y");
        assert_eq!(value(&p, "QUERY_STRING"), "a=1");
    }

    #[test]
    fn script_name_is_a_path_prefix_not_a_string_prefix() {
        let (p, w) = run(&[("SCRIPT_NAME", "/app"), ("REQUEST_URI", "/application/x")], None);
        assert_eq!(value(&p, "PATH_INFO"), "/application/x");
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn web_server_values_are_kept() {
        let (p, w) = run(
            &[("SCRIPT_NAME", "/app"), ("PATH_INFO", "/p"), ("QUERY_STRING", "q"), ("REQUEST_URI", "/app/p?z")],
            None,
        );
        assert!(w.is_empty());
        assert_eq!((value(&p, "SCRIPT_NAME"), value(&p, "PATH_INFO"), value(&p, "QUERY_STRING")), ("/app", "/p", "q"));
    }

    #[test]
    fn defaults_come_with_warnings() {
        let mut p = Vec::new();
        let warnings = sanitize(&mut p, None);
        assert_eq!(warnings.len(), 4);
        assert!(warnings[0].message.contains("REQUEST_METHOD"));
        assert_eq!(value(&p, "SCRIPT_NAME"), "");
        assert_eq!(value(&p, "PATH_INFO"), "");
        assert_eq!(value(&p, "SERVER_PROTOCOL"), "HTTP/1.0");
    }

    #[test]
    fn whole_path_script_name_is_repaired_once() {
        let (p, w) = run(&[("SCRIPT_NAME", "/items/3"), ("REQUEST_URI", "/items/3?x=1")], None);
        assert_eq!((value(&p, "SCRIPT_NAME"), value(&p, "PATH_INFO")), ("", "/items/3"));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].once, Some(WarningKind::ScriptNameIsWholePath));
        assert!(w[0].message.contains("fastcgi_param SCRIPT_NAME"));
    }

    #[test]
    fn the_mount_point_of_haproxy_and_caddy_is_kept() {
        // HAProxy's documented `path-info ^(/app)(/.*)?$` recipe for GET /app, Caddy's `split`.
        for software in ["HAProxy", "Caddy"] {
            let (p, w) = run(&[("SERVER_SOFTWARE", software), ("SCRIPT_NAME", "/app"), ("REQUEST_URI", "/app")], None);
            assert!(w.is_empty(), "{software}: {w:?}");
            assert_eq!((value(&p, "SCRIPT_NAME"), value(&p, "PATH_INFO")), ("/app", ""), "{software}");
        }
        // nginx's whole-path shape is still repaired, and the warning names nginx's fix only.
        let (p, w) =
            run(&[("SERVER_SOFTWARE", "nginx/1.22.1"), ("SCRIPT_NAME", "/a/b"), ("REQUEST_URI", "/a/b")], None);
        assert_eq!((value(&p, "SCRIPT_NAME"), value(&p, "PATH_INFO")), ("", "/a/b"));
        assert!(w[0].message.contains("fastcgi_split_path_info") && !w[0].message.contains("ProxyFCGISetEnvIf"));
    }

    #[test]
    fn an_unusable_content_length_is_removed() {
        let (p, w) = run(&[("SERVER_SOFTWARE", "Caddy"), ("CONTENT_LENGTH", "-1"), ("REQUEST_URI", "/")], None);
        assert!(!p.iter().any(|(n, _)| n == "CONTENT_LENGTH".as_bytes()));
        assert_eq!(w.len(), 1);
        assert!(w[0].message.contains("Caddy sends -1 for a chunked request body"));
        let (p, w) = run(&[("CONTENT_LENGTH", ""), ("REQUEST_URI", "/")], None);
        assert!(w.is_empty() && !p.iter().any(|(n, _)| n == "CONTENT_LENGTH".as_bytes()), "empty: removed quietly");
        let (p, _) = run(&[("CONTENT_LENGTH", "42"), ("REQUEST_URI", "/")], None);
        assert_eq!(value(&p, "CONTENT_LENGTH"), "42");
    }

    #[test]
    fn mount_point_of_a_cgi_style_server_is_kept() {
        for software in ["Apache/2.4.71 (Debian) mod_fcgid/2.3.9", "lighttpd/1.4.69"] {
            let (p, w) = run(&[("SERVER_SOFTWARE", software), ("SCRIPT_NAME", "/app"), ("REQUEST_URI", "/app")], None);
            assert!(w.is_empty(), "{software}");
            assert_eq!((value(&p, "SCRIPT_NAME"), value(&p, "PATH_INFO")), ("/app", ""));
        }
        let proxied = [
            ("SERVER_SOFTWARE", "Apache/2.4.71"),
            ("SCRIPT_FILENAME", "proxy:fcgi://localhost/x"),
            ("SCRIPT_NAME", "/x"),
            ("REQUEST_URI", "/x"),
        ];
        let (p, _) = run(&proxied, None);
        assert_eq!((value(&p, "SCRIPT_NAME"), value(&p, "PATH_INFO")), ("", "/x"));
    }

    #[test]
    fn empty_path_info_at_the_mount_point_is_kept() {
        let (p, w) = run(&[("SCRIPT_NAME", "/app"), ("PATH_INFO", ""), ("REQUEST_URI", "/app")], None);
        assert!(w.is_empty());
        assert_eq!((value(&p, "SCRIPT_NAME"), value(&p, "PATH_INFO")), ("/app", ""));
    }

    #[test]
    fn mount_prefix_setting() {
        let (p, w) = run(&[("SCRIPT_NAME", "/app/items/3"), ("REQUEST_URI", "/app/items/3")], Some("/app"));
        assert!(w.is_empty());
        assert_eq!((value(&p, "SCRIPT_NAME"), value(&p, "PATH_INFO")), ("/app", "/items/3"));
        let (p, _) = run(&[("SCRIPT_NAME", "/app"), ("REQUEST_URI", "/app")], Some("/app/"));
        assert_eq!((value(&p, "SCRIPT_NAME"), value(&p, "PATH_INFO")), ("/app", ""));
        let (p, w) = run(&[("SCRIPT_NAME", "/other/x"), ("REQUEST_URI", "/other/x")], Some("/app"));
        assert_eq!(value(&p, "PATH_INFO"), "/other/x");
        assert_eq!(w[0].once, Some(WarningKind::NotUnderMount));
        let (p, _) = run(&[("SCRIPT_NAME", "/app"), ("PATH_INFO", "/a b")], Some("/app"));
        assert_eq!(value(&p, "PATH_INFO"), "/a b");
        // Never the raw URI's dot segments when the server sent its normalized split.
        let (p, _) = run(&[("SCRIPT_NAME", "/app"), ("PATH_INFO", "/b"), ("REQUEST_URI", "/app/a/../b")], Some("/app"));
        assert_eq!(value(&p, "PATH_INFO"), "/b");
    }

    #[test]
    fn rewritten_fcgi_script_name_is_stripped() {
        let (p, w) = run(&[("SCRIPT_NAME", "/app.fcgi"), ("PATH_INFO", "/items/3"), ("REQUEST_URI", "/items/3")], None);
        assert_eq!((value(&p, "SCRIPT_NAME"), value(&p, "PATH_INFO")), ("", "/items/3"));
        assert_eq!(w[0].once, Some(WarningKind::FcgiScriptNameStripped));
        let (p, _) = run(&[("SCRIPT_NAME", "/site/app.fcgi"), ("PATH_INFO", "/x"), ("REQUEST_URI", "/site/x")], None);
        assert_eq!(value(&p, "SCRIPT_NAME"), "/site");
        // Requested through the script name itself: nothing to repair.
        let (p, w) = run(&[("SCRIPT_NAME", "/app.fcgi"), ("PATH_INFO", "/x"), ("REQUEST_URI", "/app.fcgi/x")], None);
        assert!(w.is_empty());
        assert_eq!(value(&p, "SCRIPT_NAME"), "/app.fcgi");
    }

    #[test]
    fn https_detection() {
        assert_eq!(url_scheme(&params(&[("HTTPS", "on")])), "https");
        assert_eq!(url_scheme(&params(&[("HTTPS", "1")])), "https");
        assert_eq!(url_scheme(&params(&[("HTTPS", "off")])), "http");
        assert_eq!(url_scheme(&params(&[])), "http");
    }
}
