//! Renders the build engine's progress events on stderr: a live view on a terminal (`tty`),
//! BuildKit-style numbered lines (`plain`), one JSON object per line (`json`), or nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_build::{Event, ProgressSink};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A live view redrawn in place.
    Tty,
    /// Numbered lines, as `docker build --progress=plain`.
    Plain,
    /// One event per line, JSON.
    Json,
    /// Nothing; the image ID is printed at the end.
    Quiet,
}

impl Mode {
    /// Parses `--progress`; `auto` is `tty` when stderr is a terminal, else `plain`.
    pub fn parse(s: &str, stderr_is_tty: bool) -> Option<Mode> {
        match s {
            "auto" if stderr_is_tty => Some(Mode::Tty),
            "auto" => Some(Mode::Plain),
            "tty" => Some(Mode::Tty),
            "plain" => Some(Mode::Plain),
            "json" | "rawjson" => Some(Mode::Json),
            "quiet" => Some(Mode::Quiet),
            _ => None,
        }
    }
}

/// How many output lines the live view shows under a running step.
const TTY_LOG_LINES: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Cached,
    Done,
    Failed,
}

#[derive(Debug)]
struct Vertex {
    name: String,
    /// When it started, in ms since the build started (event time).
    start_ms: u64,
    statuses: Vec<String>,
    state: State,
    started: Instant,
    elapsed: Option<Duration>,
    logs: Vec<String>,
    partial: String,
}

#[derive(Default)]
struct Screen {
    vertices: BTreeMap<usize, Vertex>,
    drawn_lines: usize,
    warnings: Vec<String>,
}

struct Inner {
    mode: Mode,
    start: Instant,
    screen: Mutex<Screen>,
    stop: AtomicBool,
}

/// The renderer; cheap to share between the engine's threads.
#[derive(Clone)]
pub struct Renderer {
    inner: Arc<Inner>,
}

impl Renderer {
    /// A renderer in `mode`.
    pub fn new(mode: Mode) -> Renderer {
        Renderer {
            inner: Arc::new(Inner {
                mode,
                start: Instant::now(),
                screen: Mutex::new(Screen::default()),
                stop: AtomicBool::new(false),
            }),
        }
    }

    /// In tty mode, redraws every 100 ms so that timers move while a step is silent.
    pub fn start_ticker(&self) -> Option<JoinHandle<()>> {
        if self.inner.mode != Mode::Tty {
            return None;
        }
        let inner = self.inner.clone();
        Some(std::thread::spawn(move || {
            while !inner.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                inner.draw(false);
            }
        }))
    }

    /// Stops the ticker and draws the final state.
    pub fn stop_ticker(&self, ticker: Option<JoinHandle<()>>) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(t) = ticker {
            let _ = t.join();
        }
        if self.inner.mode == Mode::Tty {
            self.inner.draw(true);
        }
        let screen = self.inner.lock();
        if self.inner.mode != Mode::Json && self.inner.mode != Mode::Quiet {
            for w in &screen.warnings {
                eprintln!("WARNING: {w}");
            }
        }
    }

    /// Shows a build error as BuildKit does: the failing step's last output lines, the
    /// Dockerfile excerpt around it, and the error.
    pub fn report_error(&self, err: &cairn_build::Error, dockerfile: &str) {
        let mut out = String::new();
        if let cairn_build::Error::RunFailed(f) = err {
            out.push_str("------\n");
            out.push_str(&format!(" > {}:\n", f.vertex));
            for l in &f.tail {
                out.push_str(l);
                out.push('\n');
            }
            out.push_str("------\n");
            out.push_str(&excerpt(&f.file, dockerfile, f.line, f.end_line));
            out.push_str(&format!("ERROR: failed to solve: {err}\n"));
        } else if let cairn_build::Error::Step { file, line, .. } = err {
            out.push_str(&excerpt(file, dockerfile, *line, *line));
            out.push_str(&format!("ERROR: failed to solve: {err}\n"));
        } else {
            out.push_str(&format!("ERROR: {err}\n"));
        }
        if self.inner.mode == Mode::Json {
            // Keep stderr a stream of JSON objects: the whole report is one event.
            let line = serde_json::json!({
                "event": "error",
                "message": err.to_string(),
                "exit_code": err.exit_code(),
                "report": out,
            });
            eprintln!("{line}");
            return;
        }
        eprint!("{out}");
    }
}

/// `Dockerfile:12` and the lines around it, the instruction's marked with `>>>`.
fn excerpt(file: &str, text: &str, line: usize, end_line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if line == 0 || line > lines.len() {
        return String::new();
    }
    let end = end_line.clamp(line, lines.len());
    let first = line.saturating_sub(2).max(1);
    let last = (end + 2).min(lines.len());
    let width = last.to_string().len().max(2);
    let mut out = format!("{file}:{line}\n--------------------\n");
    for n in first..=last {
        let marker = if (line..=end).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(" {n:>width$} | {marker} {}\n", lines[n - 1]));
    }
    out.push_str("--------------------\n");
    out
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Screen> {
        self.screen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn plain(&self, event: &Event) {
        let mut screen = self.lock();
        let mut err = std::io::stderr().lock();
        match event {
            Event::Started { id, name, at_ms } => {
                screen.vertices.insert(*id, Vertex::new(name, *at_ms));
                let _ = writeln!(err, "#{id} {name}");
            }
            Event::Cached { id, .. } => {
                let _ = writeln!(err, "#{id} CACHED\n");
            }
            Event::Output {
                id, text, at_ms, ..
            } => {
                if let Some(v) = screen.vertices.get_mut(id) {
                    // BuildKit prefixes each line with the seconds since the step started.
                    let t = at_ms.saturating_sub(v.start_ms) as f64 / 1000.0;
                    for line in v.take_lines(text) {
                        let _ = writeln!(err, "#{id} {t:.3} {line}");
                    }
                }
            }
            Event::Status { id, text, .. } => {
                let _ = writeln!(err, "#{id} {text}");
            }
            Event::Done { id, elapsed_ms, .. } => {
                if let Some(v) = screen.vertices.get_mut(id) {
                    if !v.partial.is_empty() {
                        let line = std::mem::take(&mut v.partial);
                        let _ = writeln!(err, "#{id} {line}");
                    }
                }
                let _ = writeln!(err, "#{id} DONE {:.1}s\n", *elapsed_ms as f64 / 1000.0);
            }
            Event::Failed { id, error, .. } => {
                let _ = writeln!(err, "#{id} ERROR: {error}\n");
            }
            Event::Warning { message } => screen.warnings.push(message.clone()),
        }
    }

    fn update(&self, event: &Event) {
        let mut screen = self.lock();
        match event {
            Event::Started { id, name, at_ms } => {
                screen.vertices.insert(*id, Vertex::new(name, *at_ms));
            }
            Event::Cached { id, .. } => {
                if let Some(v) = screen.vertices.get_mut(id) {
                    v.state = State::Cached;
                    v.elapsed = Some(Duration::ZERO);
                }
            }
            Event::Output { id, text, .. } => {
                if let Some(v) = screen.vertices.get_mut(id) {
                    let lines = v.take_lines(text);
                    v.logs.extend(lines);
                    let n = v.logs.len();
                    if n > TTY_LOG_LINES {
                        v.logs.drain(..n - TTY_LOG_LINES);
                    }
                }
            }
            Event::Status { id, text, .. } => {
                if let Some(v) = screen.vertices.get_mut(id) {
                    v.statuses.push(text.clone());
                }
            }
            Event::Done { id, elapsed_ms, .. } | Event::Failed { id, elapsed_ms, .. } => {
                if let Some(v) = screen.vertices.get_mut(id) {
                    v.state = if matches!(event, Event::Done { .. }) {
                        State::Done
                    } else {
                        State::Failed
                    };
                    v.elapsed = Some(Duration::from_millis(*elapsed_ms));
                }
            }
            Event::Warning { message } => screen.warnings.push(message.clone()),
        }
    }

    /// Redraws the live view over the previous one.
    fn draw(&self, finished: bool) {
        let mut screen = self.lock();
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(100)
            .max(40);
        let total = screen.vertices.len();
        let done = screen
            .vertices
            .values()
            .filter(|v| v.state != State::Running)
            .count();
        let header = format!(
            "[+] Building {:.1}s ({done}/{total}){}",
            self.start.elapsed().as_secs_f64(),
            if finished { " FINISHED" } else { "" }
        );
        // One block of lines per vertex; `true` for blocks that must stay visible.
        let mut blocks: Vec<(bool, Vec<String>)> = Vec::new();
        for v in screen.vertices.values() {
            let mut lines = Vec::new();
            let secs = v
                .elapsed
                .unwrap_or_else(|| v.started.elapsed())
                .as_secs_f64();
            let prefix = match v.state {
                State::Cached => "CACHED ",
                State::Failed => "ERROR ",
                _ => "",
            };
            let time = format!("{secs:.1}s");
            let head = fit(
                &format!(" => {prefix}{}", v.name),
                width.saturating_sub(time.len() + 1),
            );
            let pad = width.saturating_sub(head.chars().count() + time.len());
            lines.push(format!("{head}{}{time}", " ".repeat(pad)));
            for st in &v.statuses {
                lines.push(fit(&format!(" => => {st}"), width));
            }
            let live = v.state == State::Running || v.state == State::Failed;
            if live {
                for l in &v.logs {
                    lines.push(fit(&format!(" => => # {l}"), width));
                }
            }
            blocks.push((live, lines));
        }
        // Moving the cursor up past the top of the terminal cannot be undone: never draw more
        // lines than it has, dropping the oldest finished steps first.
        let height = std::env::var("LINES")
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(40)
            .max(5);
        let mut count: usize = 1 + blocks.iter().map(|b| b.1.len()).sum::<usize>();
        let mut i = 0;
        while count >= height && i < blocks.len() {
            if !blocks[i].0 {
                count -= blocks[i].1.len();
                blocks[i].1.clear();
            }
            i += 1;
        }
        let mut lines = vec![header];
        for (_, b) in blocks {
            lines.extend(b);
        }
        lines.truncate(height - 1);
        let mut out = String::new();
        if screen.drawn_lines > 0 {
            out.push_str(&format!("\x1b[{}A\r\x1b[J", screen.drawn_lines));
        }
        for l in &lines {
            let colored = if l.contains(" => ERROR ") {
                format!("\x1b[31m{l}\x1b[0m")
            } else if l.starts_with(" => => #") {
                format!("\x1b[2m{l}\x1b[0m")
            } else {
                l.clone()
            };
            out.push_str(&colored);
            out.push('\n');
        }
        screen.drawn_lines = lines.len();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    }
}

/// `s` cut to `width` characters.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut t: String = s.chars().take(width.saturating_sub(3)).collect();
    t.push_str("...");
    t
}

impl Vertex {
    fn new(name: &str, start_ms: u64) -> Vertex {
        Vertex {
            name: name.to_string(),
            start_ms,
            statuses: Vec::new(),
            state: State::Running,
            started: Instant::now(),
            elapsed: None,
            logs: Vec::new(),
            partial: String::new(),
        }
    }

    /// The complete lines of `text` after what was left over; keeps the rest for later.
    fn take_lines(&mut self, text: &str) -> Vec<String> {
        self.partial.push_str(text);
        let mut lines = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            lines.push(clean_line(&line));
        }
        lines
    }
}

/// A line of output as a terminal would show it: what follows the last carriage return (progress
/// bars redraw themselves with `\r`), without colour escapes or other control characters, which
/// would break the layout of the live view.
fn clean_line(line: &str) -> String {
    let line = line.trim_end_matches(['\n', '\r']);
    let line = line.rsplit('\r').next().unwrap_or(line);
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ parameters… final byte (@ to ~).
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

impl ProgressSink for Renderer {
    fn event(&self, event: Event) {
        match self.inner.mode {
            Mode::Quiet => {}
            Mode::Json => {
                if let Ok(line) = serde_json::to_string(&event) {
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "{line}");
                }
            }
            Mode::Plain => self.inner.plain(&event),
            Mode::Tty => {
                self.inner.update(&event);
                if !matches!(event, Event::Output { .. }) {
                    self.inner.draw(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("auto", true), Some(Mode::Tty));
        assert_eq!(Mode::parse("auto", false), Some(Mode::Plain));
        assert_eq!(Mode::parse("json", false), Some(Mode::Json));
        assert_eq!(Mode::parse("fancy", false), None);
    }

    #[test]
    fn excerpt_marks_the_instruction() {
        let text = "FROM busybox\nWORKDIR /app\nRUN exit 3\nCMD [\"x\"]\n";
        let e = excerpt("Dockerfile", text, 3, 3);
        assert!(e.starts_with("Dockerfile:3\n"));
        assert!(e.contains("  3 | >>> RUN exit 3"));
        assert!(e.contains("  1 |     FROM busybox"));
    }

    #[test]
    fn output_is_split_into_lines() {
        let mut v = Vertex::new("x", 0);
        assert_eq!(v.take_lines("a\nb"), vec!["a"]);
        assert_eq!(v.take_lines("c\n"), vec!["bc"]);
        assert_eq!(v.take_lines("10%\r50%\r100%\n"), vec!["100%"]);
        assert_eq!(
            v.take_lines("\u{1b}[31mred\u{1b}[0m\tx\n"),
            vec!["red    x"]
        );
    }
}
