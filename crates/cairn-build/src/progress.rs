//! Progress: the engine reports what it does as a stream of [`Event`]s; the CLI renders them
//! (tty, plain, json). The engine never prints.
//!
//! Every unit of work shown to the user is a *vertex* with a number, as in BuildKit's output
//! (`#5 [builder 3/4] RUN go build`): it starts, may print output, and ends cached, done or failed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

/// Which stream a chunk of step output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One thing that happened during a build. Times are milliseconds since the build started.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A vertex started (`name` as BuildKit shows it: `[builder 3/4] RUN go build`).
    Started {
        /// Vertex number, from 1.
        id: usize,
        /// What it is.
        name: String,
        /// When.
        at_ms: u64,
    },
    /// A one-line status of a running vertex (`naming to docker.io/library/x:y done`).
    Status {
        /// Vertex number.
        id: usize,
        /// The line.
        text: String,
        /// When.
        at_ms: u64,
    },
    /// A vertex was found in the cache: nothing ran.
    Cached {
        /// Vertex number.
        id: usize,
        /// When.
        at_ms: u64,
    },
    /// Output of a running step.
    Output {
        /// Vertex number.
        id: usize,
        /// stdout or stderr.
        stream: Stream,
        /// The bytes, as text (invalid UTF-8 replaced).
        text: String,
        /// When.
        at_ms: u64,
    },
    /// A vertex finished.
    Done {
        /// Vertex number.
        id: usize,
        /// When.
        at_ms: u64,
        /// How long it ran.
        elapsed_ms: u64,
    },
    /// A vertex failed; the build stops.
    Failed {
        /// Vertex number.
        id: usize,
        /// Why.
        error: String,
        /// When.
        at_ms: u64,
        /// How long it ran.
        elapsed_ms: u64,
    },
    /// Something worth telling that is not an error.
    Warning {
        /// The message.
        message: String,
    },
}

/// Where events go. Called from several threads at once.
pub trait ProgressSink: Send + Sync {
    /// Receives one event.
    fn event(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> ProgressSink for F {
    fn event(&self, event: Event) {
        self(event)
    }
}

/// A sink that drops everything (library callers that want no progress).
pub struct Discard;

impl ProgressSink for Discard {
    fn event(&self, _event: Event) {}
}

/// Numbers vertices and stamps events with the time since the build started. One reporter
/// serves a whole `cairn build` (solve and export), so vertex numbers never repeat.
pub struct Reporter<'a> {
    sink: &'a dyn ProgressSink,
    start: Instant,
    next_id: AtomicUsize,
}

/// A started vertex; report its end with [`Reporter::cached`], [`Reporter::done`] or
/// [`Reporter::failed`].
#[derive(Debug, Clone, Copy)]
pub struct Vertex {
    /// Its number.
    pub id: usize,
    started: Instant,
}

impl Vertex {
    /// Time since it started.
    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }
}

impl<'a> Reporter<'a> {
    /// A reporter sending to `sink`; the clock starts now.
    pub fn new(sink: &'a dyn ProgressSink) -> Self {
        Reporter {
            sink,
            start: Instant::now(),
            next_id: AtomicUsize::new(1),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Starts a vertex.
    pub fn start(&self, name: impl Into<String>) -> Vertex {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.sink.event(Event::Started {
            id,
            name: name.into(),
            at_ms: self.now_ms(),
        });
        Vertex {
            id,
            started: Instant::now(),
        }
    }

    /// Ends a vertex as found in the cache.
    pub fn cached(&self, v: Vertex) {
        self.sink.event(Event::Cached {
            id: v.id,
            at_ms: self.now_ms(),
        });
    }

    /// Reports output of a running vertex.
    pub fn output(&self, v: Vertex, stream: Stream, bytes: &[u8]) {
        self.sink.event(Event::Output {
            id: v.id,
            stream,
            text: String::from_utf8_lossy(bytes).into_owned(),
            at_ms: self.now_ms(),
        });
    }

    /// Ends a vertex successfully.
    pub fn done(&self, v: Vertex) {
        self.sink.event(Event::Done {
            id: v.id,
            at_ms: self.now_ms(),
            elapsed_ms: v.started.elapsed().as_millis() as u64,
        });
    }

    /// Ends a vertex with an error.
    pub fn failed(&self, v: Vertex, error: impl Into<String>) {
        self.sink.event(Event::Failed {
            id: v.id,
            error: error.into(),
            at_ms: self.now_ms(),
            elapsed_ms: v.started.elapsed().as_millis() as u64,
        });
    }

    /// Reports a status line of a running vertex.
    pub fn status(&self, v: Vertex, text: impl Into<String>) {
        self.sink.event(Event::Status {
            id: v.id,
            text: text.into(),
            at_ms: self.now_ms(),
        });
    }

    /// Reports a warning.
    pub fn warning(&self, message: impl Into<String>) {
        self.sink.event(Event::Warning {
            message: message.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn vertices_are_numbered_and_events_serialise_as_one_json_object() {
        let got = Mutex::new(Vec::new());
        let sink = |e: Event| got.lock().unwrap().push(e);
        let r = Reporter::new(&sink);
        let a = r.start("[1/2] FROM busybox");
        r.cached(a);
        let b = r.start("[2/2] RUN true");
        r.output(b, Stream::Stdout, b"hi\n");
        r.done(b);
        let got = got.into_inner().unwrap();
        assert_eq!(got.len(), 5);
        assert!(matches!(got[2], Event::Started { id: 2, .. }));
        let json = serde_json::to_value(&got[3]).unwrap();
        assert_eq!(json["event"], "output");
        assert_eq!(json["stream"], "stdout");
        assert_eq!(json["text"], "hi\n");
    }
}
