//! Orthanc's log, directly and as a `tracing` layer.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::Layer;

use super::{context, log_cstring};
use crate::sys;

/// The three levels the 1.10.1 SDK offers (`LogMessage` with more levels is 1.12.4+).
#[derive(Clone, Copy)]
enum Severity {
    Info,
    Warning,
    Error,
}

/// Whether Orthanc shows the plugins' information lines (`--verbose`, `--trace`, or
/// `PUT /tools/log-level-plugins`). Until told otherwise, assumed so.
static INFO_SHOWN: AtomicBool = AtomicBool::new(true);

/// Tells the log layer whether Orthanc shows information lines: while it does not,
/// [`OrthancLogLayer`] drops INFO, DEBUG and TRACE events before formatting them (Orthanc
/// would drop them after), which a busy server does for every request.
pub fn set_info_shown(shown: bool) {
    INFO_SHOWN.store(shown, Ordering::Relaxed);
}

/// Writes an information line to Orthanc's log (shown with `--verbose`).
pub fn log_info(message: &str) {
    log(Severity::Info, message);
}

/// Writes a warning to Orthanc's log.
pub fn log_warning(message: &str) {
    log(Severity::Warning, message);
}

/// Writes an error to Orthanc's log.
pub fn log_error(message: &str) {
    log(Severity::Error, message);
}

fn log(severity: Severity, message: &str) {
    let Ok(ctx) = context() else {
        // Outside Initialize…Finalize (or in unit tests) there is no Orthanc log; stderr
        // is where Orthanc's own log goes by default.
        eprintln!("cohort plugin: {message}");
        return;
    };
    let message = log_cstring(message);
    // SAFETY: `ctx` is the live context, the message outlives the call, and the log
    // services may be called from any thread.
    unsafe {
        match severity {
            Severity::Info => sys::OrthancPluginLogInfo(ctx, message.as_ptr()),
            Severity::Warning => sys::OrthancPluginLogWarning(ctx, message.as_ptr()),
            Severity::Error => sys::OrthancPluginLogError(ctx, message.as_ptr()),
        }
    }
}

/// A `tracing_subscriber` layer that writes each event to Orthanc's log, so the plugin's
/// `tracing` output appears among Orthanc's own lines.
///
/// ERROR and WARN map to Orthanc's error and warning; INFO, DEBUG and TRACE all become
/// Orthanc "info" lines, so filter the layer (e.g. `.with_filter(LevelFilter::INFO)`) to
/// keep the noise down. A line reads `target: message key=value …`; span fields are not
/// included.
#[derive(Debug, Default, Clone, Copy)]
pub struct OrthancLogLayer;

impl<S: Subscriber> Layer<S> for OrthancLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let metadata = event.metadata();
        if *metadata.level() > Level::WARN && !INFO_SHOWN.load(Ordering::Relaxed) {
            return;
        }
        let mut line = EventLine::default();
        event.record(&mut line);
        let text = line.finish(metadata.target());
        let severity = match *metadata.level() {
            Level::ERROR => Severity::Error,
            Level::WARN => Severity::Warning,
            _ => Severity::Info,
        };
        log(severity, &text);
    }
}

/// Collects an event's message and fields into one line.
#[derive(Default)]
struct EventLine {
    message: String,
    fields: String,
}

impl EventLine {
    fn finish(self, target: &str) -> String {
        format!("{target}: {}{}", self.message, self.fields)
    }
}

impl Visit for EventLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Captures what the layer formats, without Orthanc.
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
            let mut line = EventLine::default();
            event.record(&mut line);
            self.0.lock().expect("lock").push(line.finish(event.metadata().target()));
        }
    }

    #[test]
    fn events_become_one_line_with_target_message_and_fields() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&lines)));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "cohort::api", user = "ana", status = 403, "access denied");
        });
        assert_eq!(*lines.lock().expect("lock"), vec![r#"cohort::api: access denied user="ana" status=403"#]);
    }
}
