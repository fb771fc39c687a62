//! Logging: where the agent's messages go and in which format.
//!
//! - `human`: tracing's usual lines (timestamp, level, target, message, fields), coloured on a
//!   terminal;
//! - `syslog`: one `<PRIORITY>message fields` line per line of message, as sd-daemon(3)
//!   documents for programs whose stderr journald reads: `<3>` error, `<4>` warning, `<6>`
//!   info, `<7>` debug; no timestamp (journald adds one) and no colours;
//! - `json`: one JSON object per line (`timestamp`, `level`, `target`, `message`, fields);
//! - `auto` (the default): human on a terminal (coloured), syslog when stderr is the journal
//!   (systemd sets `JOURNAL_STREAM` to the device and inode of that stream), human without
//!   colours otherwise (a pipe or a file, as before these options existed).
//!
//! `--log-file PATH` appends human lines with timestamps and without colours (keepalived's log
//! file, as rsyslog wrote it) besides stderr. The file is opened once: rotate it with
//! logrotate's `copytruncate` (writes are O_APPEND, so they continue at the new end).
//!
//! Reports that are not log events (`-t`'s findings, the final error of a failed command) go
//! through [`report`]: verbatim on stderr in the human formats, so their text is unchanged, and
//! with a priority prefix or as a JSON object in the other two; and into the log file.

use std::{
    fmt::{self, Write as _},
    fs::File,
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    sync::OnceLock,
};

use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::Writer,
        time::{FormatTime as _, SystemTime},
    },
    layer::SubscriberExt as _,
    registry::LookupSpan,
    util::SubscriberInitExt as _,
};

/// The format of what goes to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// human on a terminal, syslog when stderr is the journal, human without colours otherwise.
    #[default]
    Auto,
    /// Timestamp, level, target, message and fields.
    Human,
    /// `<PRIORITY>` prefix per line (sd-daemon(3)), no timestamp, for journald and syslog.
    Syslog,
    /// One JSON object per line.
    Json,
}

/// What `init` needs from the command line.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    pub format: LogFormat,
    /// Also append human lines with timestamps to this file.
    pub file: Option<PathBuf>,
    /// Debug detail (keepalived's `-D`): lvs-agent's debug events, on top of `RUST_LOG`.
    pub detail: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("opening the log file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("setting up logging: {0}")]
    Init(String),
}

/// Returned by [`init`]; keep it for the life of the program (it flushes the file on drop).
#[must_use]
pub struct Guard {
    _private: (),
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(sink) = SINK.get()
            && let Some(f) = &sink.file
        {
            let _ = (&*f).flush();
        }
    }
}

/// Where [`report`] writes: the resolved stderr format and the log file.
struct Sink {
    format: LogFormat,
    file: Option<File>,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sets up the global subscriber: stderr in `opts.format`, the log file if any. The level
/// comes from `RUST_LOG` (default `info`); `detail` adds lvs-agent's debug events.
pub fn init(opts: &LogOptions) -> Result<Guard, LogError> {
    let format = resolve(opts.format);
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if opts.detail {
        filter = filter.add_directive("lvs_agent=debug".parse().expect("a valid directive"));
    }
    let file = match &opts.file {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| LogError::File { path: path.clone(), source })?,
        ),
        None => None,
    };
    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;
    let mut layers: Vec<Boxed> = Vec::new();
    layers.push(match format {
        LogFormat::Syslog => {
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).event_format(SyslogFormat).boxed()
        }
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).event_format(JsonFormat).boxed()
        }
        LogFormat::Human | LogFormat::Auto => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
    });
    let report_file = match &file {
        Some(f) => {
            let clone = f
                .try_clone()
                .map_err(|source| LogError::File { path: opts.file.clone().unwrap_or_default(), source })?;
            layers.push(tracing_subscriber::fmt::layer().with_writer(clone).with_ansi(false).boxed());
            f.try_clone().ok()
        }
        None => None,
    };
    tracing_subscriber::registry().with(layers).with(filter).try_init().map_err(|e| LogError::Init(e.to_string()))?;
    let _ = SINK.set(Sink { format, file: report_file });
    Ok(Guard { _private: () })
}

/// `auto` made concrete for this process's stderr.
fn resolve(format: LogFormat) -> LogFormat {
    if format != LogFormat::Auto {
        return format;
    }
    if std::io::stderr().is_terminal() {
        LogFormat::Human
    } else if stderr_is_journal() {
        LogFormat::Syslog
    } else {
        LogFormat::Auto
    }
}

/// systemd sets `JOURNAL_STREAM=DEV:INODE` for a service whose stderr (or stdout) is connected
/// to the journal; it is stderr if its device and inode match (sd-daemon(3), systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    use std::os::fd::AsRawFd as _;
    // SAFETY: fstat on our own stderr with a valid out-pointer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(std::io::stderr().as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    st.st_dev == dev && st.st_ino == ino
}

/// A message that is not a log event (the findings of `-t`, a command's final error): written
/// to stderr as it is in the human formats (so its text stays as operators know it), each line
/// with its priority in syslog format, as an object in JSON; and appended to the log file.
pub fn report(level: Level, text: &str) {
    let sink = SINK.get();
    let format = sink.map_or(LogFormat::Auto, |s| s.format);
    let line = match format {
        LogFormat::Syslog => syslog_line(level, text, ""),
        LogFormat::Json => {
            let mut o = json_head(level, "lvs_agent");
            json_field(&mut o, "message", &JsonValue::Str(text));
            o.push('}');
            o
        }
        LogFormat::Human | LogFormat::Auto => text.to_string(),
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    if let Some(f) = sink.and_then(|s| s.file.as_ref()) {
        let mut stamp = String::new();
        let _ = SystemTime.format_time(&mut Writer::new(&mut stamp));
        let _ = writeln!(&*f, "{stamp} {:>5} lvs_agent: {text}", level.as_str());
    }
}

/// sd-daemon(3)'s priority (syslog's): error 3, warning 4, info 6, debug (and trace) 7.
#[must_use]
pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// `<P>message fields`, with the prefix repeated on every line of a multi-line message (journald
/// takes each line as an entry; one without a prefix would get the default priority).
#[must_use]
pub fn syslog_line(level: Level, message: &str, fields: &str) -> String {
    let prefix = format!("<{}>", syslog_priority(level));
    let mut out = String::new();
    let text = if fields.is_empty() { message.to_string() } else { format!("{message} {fields}") };
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&prefix);
        out.push_str(line);
    }
    out
}

/// An event's message and its other fields, as `key=value` (strings quoted, as tracing's own
/// format does) and as JSON values.
#[derive(Default)]
struct Fields {
    message: String,
    plain: String,
    json: String,
}

enum JsonValue<'a> {
    Str(&'a str),
    Raw(String),
}

fn json_escape(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_field(out: &mut String, name: &str, value: &JsonValue<'_>) {
    out.push(',');
    json_escape(out, name);
    out.push(':');
    match value {
        JsonValue::Str(s) => json_escape(out, s),
        JsonValue::Raw(r) => out.push_str(r),
    }
}

/// `{"timestamp":…,"level":…,"target":…` (the caller closes it).
fn json_head(level: Level, target: &str) -> String {
    let mut stamp = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut stamp));
    let mut o = String::from("{\"timestamp\":");
    json_escape(&mut o, &stamp);
    json_field(&mut o, "level", &JsonValue::Str(level.as_str()));
    json_field(&mut o, "target", &JsonValue::Str(target));
    o
}

impl Fields {
    fn add(&mut self, field: &Field, plain: String, json: JsonValue<'_>) {
        if field.name() == "message" {
            self.message = match json {
                JsonValue::Str(s) => s.to_string(),
                JsonValue::Raw(_) => plain,
            };
            return;
        }
        if !self.plain.is_empty() {
            self.plain.push(' ');
        }
        let _ = write!(self.plain, "{}={plain}", field.name());
        json_field(&mut self.json, field.name(), &json);
    }
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, format!("{value:?}"), JsonValue::Str(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.add(field, value.to_string(), JsonValue::Raw(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, value.to_string(), JsonValue::Raw(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field, value.to_string(), JsonValue::Raw(value.to_string()));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        let json = if value.is_finite() { value.to_string() } else { format!("\"{value}\"") };
        self.add(field, value.to_string(), JsonValue::Raw(json));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let s = value.to_string();
        self.add(field, s.clone(), JsonValue::Str(&s));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let s = format!("{value:?}");
        self.add(field, s.clone(), JsonValue::Str(&s));
    }
}

/// `--log-format syslog`.
struct SyslogFormat;

impl<S, N> FormatEvent<S, N> for SyslogFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        writeln!(writer, "{}", syslog_line(*event.metadata().level(), &f.message, &f.plain))
    }
}

/// `--log-format json`.
struct JsonFormat;

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        let meta = event.metadata();
        let mut o = json_head(*meta.level(), meta.target());
        json_field(&mut o, "message", &JsonValue::Str(&f.message));
        o.push_str(&f.json);
        o.push('}');
        writeln!(writer, "{o}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn priorities_are_sd_daemons() {
        assert_eq!(syslog_priority(Level::ERROR), 3);
        assert_eq!(syslog_priority(Level::WARN), 4);
        assert_eq!(syslog_priority(Level::INFO), 6);
        assert_eq!(syslog_priority(Level::DEBUG), 7);
        assert_eq!(syslog_priority(Level::TRACE), 7);
    }

    #[test]
    fn every_line_of_a_syslog_message_carries_the_priority() {
        assert_eq!(syslog_line(Level::INFO, "forwarding", "services=3"), "<6>forwarding services=3");
        assert_eq!(syslog_line(Level::WARN, "no fields", ""), "<4>no fields");
        assert_eq!(
            syslog_line(Level::ERROR, "reload rejected:\nconf:1:2: bad\nconf:3:4: worse", ""),
            "<3>reload rejected:\n<3>conf:1:2: bad\n<3>conf:3:4: worse"
        );
    }

    /// Captures what a fmt layer writes.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture<E>(format: E, f: impl FnOnce()) -> String
    where
        E: FormatEvent<tracing_subscriber::Registry, tracing_subscriber::fmt::format::DefaultFields>
            + Send
            + Sync
            + 'static,
    {
        let buf = Buf::default();
        let w = buf.clone();
        let layer = tracing_subscriber::fmt::layer().with_writer(move || w.clone()).event_format(format);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn events_in_syslog_format() {
        let out = capture(SyslogFormat, || {
            tracing::info!(services = 3, iface = %"eth0", "forwarding");
            tracing::warn!(addr = %"10.0.0.1", "real server MAC not resolved yet");
            tracing::error!("reload rejected:\nline two");
            tracing::debug!(flows = 2, "expired idle flows");
        });
        assert_eq!(
            out,
            "<6>forwarding services=3 iface=eth0\n<4>real server MAC not resolved yet addr=10.0.0.1\n\
             <3>reload rejected:\n<3>line two\n<7>expired idle flows flows=2\n"
        );
    }

    #[test]
    fn events_in_json_are_one_object_per_line() {
        let out = capture(JsonFormat, || {
            tracing::info!(services = 3, iface = %"eth0", name = "a\"b", ok = true, "forwarding");
            tracing::error!("two\nlines");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "forwarding");
        assert_eq!(v["services"], 3);
        assert_eq!(v["iface"], "eth0");
        assert_eq!(v["name"], "a\"b");
        assert_eq!(v["ok"], true);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
        assert!(v["target"].as_str().unwrap().starts_with("lvs_agent"), "{v}");
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!((v["level"].as_str(), v["message"].as_str()), (Some("ERROR"), Some("two\nlines")));
    }
}
