//! The caller's terminal during `run -t`: raw mode while the container owns the keyboard.

use std::os::fd::{AsFd, BorrowedFd};

/// Puts a terminal in raw mode and restores it when dropped.
pub struct RawTerminal {
    fd: BorrowedFd<'static>,
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    /// Raw mode on stdin if it is a terminal; None otherwise (nothing to restore).
    pub fn stdin() -> Option<RawTerminal> {
        let fd = rustix::stdio::stdin();
        if !rustix::termios::isatty(fd) {
            return None;
        }
        let saved = rustix::termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawTerminal { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            self.fd.as_fd(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
