//! Tells when the terminal kmesh-top reads keys from has gone away: its
//! window closed, its SSH connection dropped. The dashboard then ends, as
//! there is nothing left to draw on or to restore.
use std::{
    fs::File,
    io::{self, IsTerminal},
    os::fd::{AsFd, OwnedFd},
};

use rustix::event::{PollFd, PollFlags, poll};

pub struct Hangup {
    terminal: OwnedFd,
}

impl Hangup {
    /// Watches the terminal crossterm reads keys from: standard input when
    /// it is a terminal, else `/dev/tty`.
    pub fn watch_keyboard() -> io::Result<Self> {
        let stdin = io::stdin();
        let terminal = if stdin.is_terminal() {
            stdin.as_fd().try_clone_to_owned()?
        } else {
            File::open("/dev/tty")?.into()
        };
        Ok(Self { terminal })
    }

    /// Whether the terminal hung up. Never waits.
    pub fn happened(&self) -> bool {
        let mut fds = [PollFd::new(&self.terminal, PollFlags::empty())];
        // Interrupted by a signal: the caller asks again on its next turn.
        poll(&mut fds, Some(&rustix::event::Timespec::default())).is_ok()
            && fds[0]
                .revents()
                .intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL)
    }
}

impl From<OwnedFd> for Hangup {
    fn from(terminal: OwnedFd) -> Self {
        Self { terminal }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_other_end_is_a_hangup() {
        let (reader, writer) = io::pipe().expect("a pipe");
        let hangup = Hangup::from(OwnedFd::from(reader));
        assert!(!hangup.happened());
        drop(writer);
        assert!(hangup.happened());
    }
}
