//! HTTP_GET and SSL_GET: one fresh connection per url, keepalived's request, the status
//! checked against `status_code` (default 200-299) and the body's MD5 against `digest`. Every
//! url of the checker must pass. SSL_GET does not verify the certificate (keepalived does not
//! either, unless given a CA), and sends SNI only with `enable_sni`.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use md5::{Digest as _, Md5};
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::target::{Failed, Failure, Target};
use crate::config::Url;

/// The largest body read (and hashed); keepalived reads whole bodies too, but a check must not
/// let a server grow the agent.
const MAX_RESPONSE: usize = 4 << 20;

/// One url to fetch, resolved from the config (Host header and version chosen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    /// The `Host:` value.
    pub host: String,
    /// `1.0` (default), `1.0C` (1.0 with `Connection: close`) or `1.1`.
    pub protocol: String,
    pub digest: Option<String>,
    pub status: Vec<(u16, u16)>,
    /// `regex` (the body must match it) and `regex_no_match` (must not).
    pub regex: Option<BodyRegex>,
}

/// A url's `regex`, compiled once.
#[derive(Debug, Clone)]
pub struct BodyRegex {
    pub regex: regex::bytes::Regex,
    pub no_match: bool,
}

impl PartialEq for BodyRegex {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str() && self.no_match == other.no_match
    }
}

impl Eq for BodyRegex {}

/// TLS settings of SSL_GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// The SNI name, when SNI is on.
    pub sni: Option<String>,
}

impl Request {
    /// From a url, the checker's and servers' `virtualhost` (most specific first) and the
    /// target: without a virtualhost, Host is the address (with the port when it is not the
    /// scheme's default), as keepalived sends it.
    #[must_use]
    pub fn new(url: &Url, virtualhosts: &[Option<&str>], protocol: Option<&str>, addr: SocketAddr, tls: bool) -> Self {
        let host = url.virtualhost.as_deref().or_else(|| virtualhosts.iter().find_map(|v| *v)).map_or_else(
            || {
                let ip = match addr {
                    SocketAddr::V6(a) => format!("[{}]", a.ip()),
                    SocketAddr::V4(a) => a.ip().to_string(),
                };
                let default = if tls { 443 } else { 80 };
                if addr.port() == default { ip } else { format!("{ip}:{}", addr.port()) }
            },
            str::to_string,
        );
        let status = if url.status_codes.is_empty() && url.digest.is_none() {
            vec![(200, 299)]
        } else if url.status_codes.is_empty() {
            vec![(0, 999)]
        } else {
            url.status_codes.clone()
        };
        Self {
            path: url.path.clone().unwrap_or_else(|| "/".into()),
            host,
            protocol: protocol.unwrap_or("1.0").to_string(),
            digest: url.digest.as_ref().map(|d| d.to_ascii_lowercase()),
            status,
            // An invalid regex is a config error (`check::validate`); here it is left out.
            regex: url
                .regex
                .as_deref()
                .and_then(|r| regex::bytes::Regex::new(r).ok())
                .map(|regex| BodyRegex { regex, no_match: url.regex_no_match }),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let (version, close) = match self.protocol.as_str() {
            "1.1" => ("1.1", true),
            "1.0C" => ("1.0", true),
            _ => ("1.0", false),
        };
        let close = if close { "Connection: close\r\n" } else { "" };
        format!("GET {} HTTP/{version}\r\nUser-Agent: KeepAliveClient\r\nHost: {}\r\n{close}\r\n", self.path, self.host)
            .into_bytes()
    }
}

/// Fetches every url over one connection each; all must pass.
pub async fn check(t: &Target, requests: &[Request], tls: Option<&Tls>) -> Result<(), Failed> {
    let kind = if tls.is_some() { "SSL_GET" } else { "HTTP_GET" };
    t.within(kind, async {
        if requests.is_empty() {
            // No url to fetch: the server must at least accept the connection.
            return t.connect_tcp().await.map(drop);
        }
        for req in requests {
            let stream = t.connect_tcp().await?;
            let response = match tls {
                None => exchange(stream, req).await?,
                Some(tls) => {
                    let (config, name) = match &tls.sni {
                        Some(n) => (client_config(true), ServerName::try_from(n.clone()).ok()),
                        None => (client_config(false), None),
                    };
                    let name = name.unwrap_or_else(|| ServerName::IpAddress(t.addr.ip().into()));
                    let stream = tokio_rustls::TlsConnector::from(config)
                        .connect(name, stream)
                        .await
                        .map_err(|e| Failed::io("TLS handshake", &e))?;
                    exchange(stream, req).await?
                }
            };
            verify(req, &response)?;
        }
        Ok(())
    })
    .await
}

/// A parsed response: status and (de-chunked) body.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, req: &Request) -> Result<Response, Failed> {
    s.write_all(&req.bytes()).await.map_err(|e| Failed::io("sending the request", &e))?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(r) = complete(&buf)? {
            return Ok(r);
        }
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            // Servers often close TLS without close_notify; what was read counts.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(Failed::io("reading the response", &e)),
        };
        if n == 0 {
            return parse(&buf, true)?.ok_or_else(|| Failed::new(Failure::Protocol, "response cut short"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err(Failed::new(Failure::Protocol, format!("response larger than {MAX_RESPONSE} bytes")));
        }
    }
}

/// A response complete before the connection closes (Content-Length or chunked end seen).
fn complete(buf: &[u8]) -> Result<Option<Response>, Failed> {
    parse(buf, false)
}

/// Parses `buf`; `eof` says the server closed, so a body without length ends here.
fn parse(buf: &[u8], eof: bool) -> Result<Option<Response>, Failed> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let status = match (parts.next(), parts.next().and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code,
        _ => return Err(Failed::new(Failure::Protocol, format!("not an HTTP status line: `{status_line}`"))),
    };
    let header = |name: &str| {
        lines
            .clone()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let body = &buf[end + 4..];
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return match dechunk(body) {
            Some(body) => Ok(Some(Response { status, body })),
            None if eof => Err(Failed::new(Failure::Protocol, "chunked body cut short")),
            None => Ok(None),
        };
    }
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if body.len() >= len {
            return Ok(Some(Response { status, body: body[..len].to_vec() }));
        }
        return if eof { Err(Failed::new(Failure::Protocol, "body shorter than Content-Length")) } else { Ok(None) };
    }
    Ok(eof.then(|| Response { status, body: body.to_vec() }))
}

/// The body of a complete chunked encoding, None while incomplete.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn verify(req: &Request, r: &Response) -> Result<(), Failed> {
    if !req.status.iter().any(|&(lo, hi)| (lo..=hi).contains(&r.status)) {
        return Err(Failed::new(Failure::Status, format!("GET {}: status {} not accepted", req.path, r.status)));
    }
    if let Some(want) = &req.digest {
        let got = hex(&Md5::digest(&r.body));
        if &got != want {
            return Err(Failed::new(Failure::Digest, format!("GET {}: body digest {got}, expected {want}", req.path)));
        }
    }
    if let Some(BodyRegex { regex, no_match }) = &req.regex
        && regex.is_match(&r.body) == *no_match
    {
        let what = if *no_match { "matches" } else { "does not match" };
        return Err(Failed::new(Failure::Protocol, format!("GET {}: body {what} regex {}", req.path, regex.as_str())));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// rustls client configs (with and without SNI), built once: the ring provider, TLS 1.2 and
/// 1.3, any certificate accepted.
fn client_config(sni: bool) -> Arc<rustls::ClientConfig> {
    static CONFIGS: OnceLock<[Arc<rustls::ClientConfig>; 2]> = OnceLock::new();
    let configs = CONFIGS.get_or_init(|| {
        let make = |sni: bool| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            c.enable_sni = sni;
            Arc::new(c)
        };
        [make(false), make(true)]
    });
    configs[usize::from(sni)].clone()
}

/// Accepts any server certificate (keepalived's SSL_GET without `ca`); the handshake's
/// signatures are still checked, so the session is at least with the key holder.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{net::TcpListener, time::Instant};

    use super::*;

    /// A server answering each connection with `answer`, `step` bytes at a time, `pause` apart;
    /// it returns the requests it read.
    async fn server(
        answer: &'static [u8],
        step: usize,
        pause: Duration,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Ok(Ok((mut s, _))) = tokio::time::timeout(Duration::from_secs(3), l.accept()).await {
                let mut buf = vec![0; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                for c in answer.chunks(step) {
                    if s.write_all(c).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
            seen
        });
        (addr, task)
    }

    fn url(digest: Option<&str>, status: &[(u16, u16)]) -> Url {
        Url {
            path: Some("/health".into()),
            digest: digest.map(str::to_string),
            status_codes: status.to_vec(),
            virtualhost: None,
            regex: None,
            regex_no_match: false,
            location: crate::config::Location { file: std::path::Path::new("k.conf").into(), line: 1, column: 1 },
        }
    }

    fn target(addr: SocketAddr, total: Duration) -> Target {
        Target {
            addr,
            bind: None,
            device: None,
            connect_timeout: Duration::from_secs(1),
            deadline: Instant::now() + total,
        }
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n";

    #[tokio::test]
    async fn status_and_digest_pass_and_the_request_is_keepalived_s() {
        let (addr, task) = server(OK, 1024, Duration::ZERO).await;
        // md5("hello\n")
        let u = url(Some("b1946ac92492d2347c6235b4d2611184"), &[]);
        let req = Request::new(&u, &[None, Some("www.example")], Some("1.1"), addr, false);
        check(&target(addr, Duration::from_secs(2)), &[req], None).await.unwrap();
        let seen = task.await.unwrap();
        assert_eq!(
            seen[0],
            "GET /health HTTP/1.1\r\nUser-Agent: KeepAliveClient\r\nHost: www.example\r\nConnection: close\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn wrong_digest_and_wrong_status_fail_with_their_reason() {
        let (addr, _t) = server(OK, 1024, Duration::ZERO).await;
        let t = target(addr, Duration::from_secs(2));
        let bad = Request::new(&url(Some("00000000000000000000000000000000"), &[]), &[], None, addr, false);
        assert_eq!(check(&t, &[bad], None).await.unwrap_err().reason, Failure::Digest);
        let only_404 = Request::new(&url(None, &[(404, 404)]), &[], None, addr, false);
        assert_eq!(check(&t, &[only_404], None).await.unwrap_err().reason, Failure::Status);
        let range = Request::new(&url(None, &[(100, 199), (200, 204)]), &[], None, addr, false);
        check(&t, &[range], None).await.unwrap();
    }

    #[tokio::test]
    async fn a_trickled_answer_fails_at_the_deadline() {
        // 60 bytes, one every 50 ms: 3 s to answer in full; the check allows 400 ms.
        let (addr, _t) =
            server(b"HTTP/1.0 200 OK\r\nContent-Length: 20\r\n\r\n01234567890123456789", 1, Duration::from_millis(50))
                .await;
        let started = std::time::Instant::now();
        let req = Request::new(&url(None, &[]), &[], None, addr, false);
        let e = check(&target(addr, Duration::from_millis(400)), &[req], None).await.unwrap_err();
        assert_eq!(e.reason, Failure::Timeout);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(400) && took < Duration::from_millis(700), "{took:?}");
    }

    #[tokio::test]
    async fn chunked_bodies_are_hashed_after_decoding_and_eof_ends_a_body_without_length() {
        let (addr, _t) = server(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n3\r\nlo\n\r\n0\r\n\r\n",
            7,
            Duration::ZERO,
        )
        .await;
        let req = Request::new(&url(Some("b1946ac92492d2347c6235b4d2611184"), &[]), &[], Some("1.1"), addr, false);
        check(&target(addr, Duration::from_secs(2)), &[req], None).await.unwrap();
        let (addr, _t) = server(b"HTTP/1.0 200 OK\r\n\r\nhello\n", 1024, Duration::ZERO).await;
        let req = Request::new(&url(Some("b1946ac92492d2347c6235b4d2611184"), &[]), &[], None, addr, false);
        check(&target(addr, Duration::from_secs(2)), &[req], None).await.unwrap();
    }

    #[tokio::test]
    async fn the_body_must_match_the_regex_or_not_with_regex_no_match() {
        let (addr, _t) = server(OK, 1024, Duration::ZERO).await;
        let t = target(addr, Duration::from_secs(2));
        let with = |regex: &str, no_match: bool| {
            let mut u = url(None, &[]);
            u.regex = Some(regex.into());
            u.regex_no_match = no_match;
            Request::new(&u, &[], None, addr, false)
        };
        // Rust's `$` is the end of the body; PCRE2's also matches before a final newline.
        check(&t, &[with(r"^hel+o\n$", false)], None).await.unwrap();
        assert_eq!(check(&t, &[with("goodbye", false)], None).await.unwrap_err().reason, Failure::Protocol);
        check(&t, &[with("error", true)], None).await.unwrap();
        assert_eq!(check(&t, &[with("hello", true)], None).await.unwrap_err().reason, Failure::Protocol);
    }

    #[test]
    fn host_defaults_to_the_address_with_a_non_default_port() {
        let u = url(None, &[]);
        assert_eq!(Request::new(&u, &[], None, "10.0.0.1:80".parse().unwrap(), false).host, "10.0.0.1");
        assert_eq!(Request::new(&u, &[], None, "10.0.0.1:8080".parse().unwrap(), false).host, "10.0.0.1:8080");
        assert_eq!(Request::new(&u, &[], None, "[fd00::1]:443".parse().unwrap(), true).host, "[fd00::1]");
    }
}
