//! Every log line the controller writes during the tests, kept for inspection (secrets must
//! never appear in them) and echoed to the test's captured output.

use rentedhost_operator::telemetry;
use std::io::Write;
use std::sync::{Mutex, Once};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Text lines as a person reads them, and the same events as the JSON the chart's default
/// format writes.
static TEXT: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static JSON: Mutex<Vec<u8>> = Mutex::new(Vec::new());

#[derive(Clone, Copy)]
struct Capture(&'static Mutex<Vec<u8>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (debug level for the operator) once per test binary:
/// text, and JSON through the operator's own JSON layer.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = || EnvFilter::new("rentedhost_operator=debug,kube=info");
        let text = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(|| Capture(&TEXT))
            .with_filter(filter());
        let json = telemetry::json_layer(|| Capture(&JSON)).with_filter(filter());
        let _ = tracing_subscriber::registry()
            .with(text)
            .with(json)
            .try_init();
    });
}

/// Everything logged so far, as text.
pub fn text() -> String {
    String::from_utf8_lossy(&TEXT.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Everything logged so far, one JSON object a line.
pub fn json_lines() -> Vec<String> {
    let all = String::from_utf8_lossy(&JSON.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    all.lines().map(str::to_string).collect()
}
