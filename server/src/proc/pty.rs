//! A child process on a pseudo-terminal: the child leads its own session
//! with the PTY's slave side as its controlling terminal (so its process
//! group is its pid, and job control, `stty` and Ctrl-C work as in any
//! terminal); the server keeps the master side, non-blocking, for reading
//! output, writing input and setting the window size.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::pty::{openpty, Winsize};
use tokio::io::unix::AsyncFd;

use super::{Child, Environment, Io, Spec};

/// The master side of a PTY, registered with tokio.
pub struct Master(AsyncFd<OwnedFd>);

/// What reading the master side gave.
pub enum Read {
    /// `n` bytes were read into the buffer.
    Data(usize),
    /// Nothing to read right now (only from `try_read`).
    Empty,
    /// Every process holding the slave side has closed it (EIO on Linux).
    Closed,
}

fn winsize(cols: u16, rows: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Starts `argv` on a new PTY of `cols` x `rows`, through the one spawn
/// ([`super::spawn`]): a new session with the PTY as its controlling
/// terminal, exactly the environment `env`, in `cwd`.
pub fn spawn(
    argv: &[String],
    env: &Environment,
    cwd: Option<&Path>,
    user: Option<&super::RunAs>,
    cols: u16,
    rows: u16,
) -> std::io::Result<(Master, Child)> {
    let pty = openpty(Some(&winsize(cols, rows)), None).map_err(std::io::Error::from)?;
    // Neither side may leak into the child: it opens the slave by name.
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(std::io::Error::from)?;
    }
    let flags = OFlag::from_bits_truncate(
        fcntl(&pty.master, FcntlArg::F_GETFL).map_err(std::io::Error::from)?,
    );
    fcntl(&pty.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))
        .map_err(std::io::Error::from)?;
    let path = nix::unistd::ttyname(&pty.slave).map_err(std::io::Error::from)?;
    let child = super::spawn(Spec {
        argv,
        env,
        cwd,
        io: Io::Terminal(&path),
        user,
    })?;
    // N.B.: our slave side closes only now, after the child opened its own
    // (posix_spawn returns after the exec): the master reads EIO once the
    // child and everything it started have closed the terminal.
    drop(pty.slave);
    // SAFETY: the OwnedFd is moved into the AsyncFd and stays open, the
    // same descriptor, until the AsyncFd drops it.
    let master = unsafe { AsyncFd::register(pty.master)? };
    Ok((Master(master), child))
}

/// One read(2) of the master; EAGAIN comes back as `WouldBlock`.
fn read_raw(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<Read> {
    loop {
        return match nix::unistd::read(fd, buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => Ok(Read::Closed),
            Ok(n) => Ok(Read::Data(n)),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

impl Master {
    /// Reads what is there, waiting until there is something (or the end).
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<Read> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| read_raw(fd.get_ref(), buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads what is there without waiting (for coalescing a burst).
    pub fn try_read(&self, buf: &mut [u8]) -> std::io::Result<Read> {
        match read_raw(self.0.get_ref(), buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Read::Empty),
            r => r,
        }
    }

    /// Writes all of `data`, waiting while the terminal's input queue is full.
    pub async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                    return Err(std::io::Error::other("the terminal has closed"))
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets the window size; the kernel sends SIGWINCH to the foreground group.
    pub fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        let ws = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer.
        let rc = unsafe { libc::ioctl(self.0.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
