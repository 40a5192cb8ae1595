//! Starting a process: `posix_spawn` with `POSIX_SPAWN_SETSID`, so the
//! process leads its own session (and process group) from its first
//! instruction, with exactly the environment it is given. A job's stdin is
//! /dev/null and its stdout and stderr are pipes; a terminal's three are
//! the PTY's slave side, opened in the child after `setsid` (glibc applies
//! the session flag before the file actions), so it becomes the
//! controlling terminal, as a login does.
//!
//! N.B.: why not `tokio::process::Command` with a `pre_exec(setsid)`: a
//! `pre_exec` hook makes the standard library `fork()` the whole server
//! (copying its page tables, then copying every page either side writes
//! until the child has exec'd), which took 2 to 4 ms of a core per job
//! here; `posix_spawn` (glibc: `clone(CLONE_VM | CLONE_VFORK)`) takes a
//! tenth of that. The standard library uses it too, but not with setsid on
//! stable Rust, nor when the child's PATH differs from the server's.
//!
//! The child is watched through a pidfd: readable once it exits, then reaped
//! with `waitid(P_PIDFD)`; a pid is never reused under us.
//!
//! A process that runs as another user (a target's `user =`, [`super::user`])
//! is the one exception: `posix_spawn` cannot change users, so it is started
//! by `std::process::Command` with a `pre_exec` hook (a `fork()`, the cost
//! measured above, paid only by those targets) that makes the same new
//! session and terminal, then sets the groups, group and user, then enters
//! the user's home. Everything else (environment, signals, the pidfd) is
//! the same.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use super::env::Environment;
use super::user::{Account, RunAs};

/// What to start.
pub struct Spec<'a> {
    pub argv: &'a [String],
    /// Exactly the environment it gets.
    pub env: &'a Environment,
    /// Its working directory (else the server's, or the user's home when
    /// it runs as `user`).
    pub cwd: Option<&'a Path>,
    pub io: Io<'a>,
    /// Run as this user instead of the server's own.
    pub user: Option<&'a RunAs>,
}

/// Where its stdin, stdout and stderr go.
#[derive(Debug, Clone, Copy)]
pub enum Io<'a> {
    /// stdin from /dev/null; stdout and stderr to pipes ([`Child::stdout`]).
    Pipes,
    /// All three to this terminal (a PTY's slave side), which becomes its
    /// controlling terminal.
    Terminal(&'a Path),
}

/// A started process.
pub struct Child {
    pid: i32,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
}

/// Starts `spec.argv`. A bare program name is looked up in the PATH of
/// `spec.env`.
pub fn spawn(spec: Spec<'_>) -> io::Result<Child> {
    let Some(program) = spec.argv.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    let program = resolve(program, spec.env.path())?;
    if let Some(run_as) = spec.user {
        return spawn_as(&spec, &program, &Account::lookup(run_as)?);
    }

    let c_program = cstring(program.as_os_str())?;
    let c_argv = spec
        .argv
        .iter()
        .map(|a| cstring(OsStr::new(a)))
        .collect::<io::Result<Vec<_>>>()?;
    let c_env = spec
        .env
        .vars()
        .map(|(k, v)| cstring(OsStr::new(&format!("{k}={v}"))))
        .collect::<io::Result<Vec<_>>>()?;
    let c_workdir = spec.cwd.map(|w| cstring(w.as_os_str())).transpose()?;
    let c_terminal = match spec.io {
        Io::Terminal(path) => Some(cstring(path.as_os_str())?),
        Io::Pipes => None,
    };
    let mut argv_p: Vec<*mut libc::c_char> = c_argv.iter().map(|c| c.as_ptr().cast_mut()).collect();
    argv_p.push(std::ptr::null_mut());
    let mut env_p: Vec<*mut libc::c_char> = c_env.iter().map(|c| c.as_ptr().cast_mut()).collect();
    env_p.push(std::ptr::null_mut());

    // Close-on-exec on both ends: the child gets its ends by dup2, which
    // clears the flag on the copies only.
    let pipes = match spec.io {
        Io::Pipes => Some((
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?,
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?,
        )),
        Io::Terminal(_) => None,
    };

    let mut pid: libc::pid_t = 0;
    // SAFETY: the attribute and file-action objects are initialised before
    // use and destroyed after; every pointer handed over (program, argv,
    // envp, paths) points into CStrings alive until posix_spawn returns.
    let rc = unsafe {
        let mut actions = SpawnObject::new(
            libc::posix_spawn_file_actions_init,
            libc::posix_spawn_file_actions_destroy,
        )?;
        let mut attr = SpawnObject::new(libc::posix_spawnattr_init, libc::posix_spawnattr_destroy)?;
        match (&pipes, &c_terminal) {
            (Some(((_, out_w), (_, err_w))), _) => {
                check(libc::posix_spawn_file_actions_addopen(
                    &mut actions.obj,
                    0,
                    c"/dev/null".as_ptr(),
                    libc::O_RDONLY,
                    0,
                ))?;
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions.obj,
                    out_w.as_raw_fd(),
                    1,
                ))?;
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions.obj,
                    err_w.as_raw_fd(),
                    2,
                ))?;
            }
            (None, Some(tty)) => {
                // N.B.: opened without O_NOCTTY by a session leader that has
                // no terminal yet: it becomes the controlling terminal.
                check(libc::posix_spawn_file_actions_addopen(
                    &mut actions.obj,
                    0,
                    tty.as_ptr(),
                    libc::O_RDWR,
                    0,
                ))?;
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions.obj,
                    0,
                    1,
                ))?;
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions.obj,
                    0,
                    2,
                ))?;
            }
            (None, None) => unreachable!("pipes or a terminal"),
        }
        if let Some(dir) = &c_workdir {
            check(libc::posix_spawn_file_actions_addchdir_np(
                &mut actions.obj,
                dir.as_ptr(),
            ))?;
        }
        // Every signal back to its default: the server ignores SIGPIPE (as
        // every Rust program does). Nor does the job inherit the server's
        // signal mask. N.B.: glibc leaves its two internal signals (32 and
        // 33, which no sigset can name) ignored in a spawned child, as for
        // any posix_spawn; programs that use them install their handlers.
        let mut defaults: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut defaults);
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        check(libc::posix_spawnattr_setsigdefault(
            &mut attr.obj,
            &defaults,
        ))?;
        check(libc::posix_spawnattr_setsigmask(&mut attr.obj, &mask))?;
        let flags = libc::POSIX_SPAWN_SETSID as libc::c_int
            | libc::POSIX_SPAWN_SETSIGDEF
            | libc::POSIX_SPAWN_SETSIGMASK;
        check(libc::posix_spawnattr_setflags(
            &mut attr.obj,
            flags as libc::c_short,
        ))?;
        libc::posix_spawn(
            &mut pid,
            c_program.as_ptr(),
            &actions.obj,
            &attr.obj,
            argv_p.as_ptr(),
            env_p.as_ptr(),
        )
    };
    // The child holds its own copies of the write ends now.
    let readers = pipes.map(|((out_r, out_w), (err_r, err_w))| {
        drop((out_w, err_w));
        (out_r, err_r)
    });
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    watch(pid, readers)
}

/// `spec` started as `account`: a fork, then in the child the new session
/// (and its terminal), the account's groups, group and user, and its
/// directory, then the exec.
fn spawn_as(spec: &Spec<'_>, program: &Path, account: &Account) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let mut env = spec.env.clone();
    env.set("HOME", account.home.to_string_lossy());
    env.set("USER", account.name.clone());
    env.set("LOGNAME", account.name.clone());
    let dir = cstring(spec.cwd.unwrap_or(account.start_dir()).as_os_str())?;
    let mut cmd = Command::new(program);
    cmd.arg0(&spec.argv[0])
        .args(&spec.argv[1..])
        .env_clear()
        .envs(env.vars())
        .stdin(Stdio::null());
    let mut readers = None;
    let mut terminal = None;
    match spec.io {
        Io::Pipes => {
            let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
            readers = Some((out_r, err_r));
        }
        Io::Terminal(path) => {
            // Its terminal is its own, as after a login.
            nix::unistd::chown(path, Some(account.uid), None)?;
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            terminal = Some(cstring(path.as_os_str())?);
        }
    }
    let account = account.clone();
    // SAFETY: the hook runs in the forked child before exec and only makes
    // system calls (setsid, open, dup2, setgroups, setgid, setuid, chdir)
    // on values prepared before the fork: no allocation, no lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            if let Some(tty) = &terminal {
                // N.B.: opened by the new session's leader, without
                // O_NOCTTY: it becomes the controlling terminal.
                let fd = nix::fcntl::open(
                    tty.as_c_str(),
                    nix::fcntl::OFlag::O_RDWR,
                    nix::sys::stat::Mode::empty(),
                )?;
                for target in 0..3 {
                    if libc::dup2(fd.as_raw_fd(), target) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            account.become_user()?;
            nix::unistd::chdir(dir.as_c_str())?;
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The child has its copies of the write ends; ours close with `cmd`.
    drop(cmd);
    watch(child.id() as i32, readers)
}

/// Our handle on the started `pid`, with the read ends of its pipes.
fn watch(pid: i32, readers: Option<(OwnedFd, OwnedFd)>) -> io::Result<Child> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        // Do not leave it running unwatched.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        return Err(e);
    }
    // SAFETY: the fd was just returned by pidfd_open and is ours alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let (stdout, stderr) = match readers {
        Some((out_r, err_r)) => (
            Some(pipe::Receiver::from_owned_fd(out_r)?),
            Some(pipe::Receiver::from_owned_fd(err_r)?),
        ),
        None => (None, None),
    };
    Ok(Child {
        pid,
        stdout,
        stderr,
        // SAFETY: an OwnedFd keeps its one fd open, unchanged, until the
        // AsyncFd that owns it drops it.
        pidfd: unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?,
        status: None,
    })
}

impl Child {
    pub fn id(&self) -> i32 {
        self.pid
    }

    /// Waits for the process to exit and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        loop {
            let mut ready = self.pidfd.readable().await?;
            match reap(&self.pidfd)? {
                Some(status) => {
                    self.status = Some(status);
                    return Ok(status);
                }
                None => ready.clear_ready(),
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Reap it if it is already gone; a live one stays in its group, where
        // the runner (or recovery) deals with it.
        if self.status.is_none() {
            let _ = reap(&self.pidfd);
        }
    }
}

/// The exit status, if the process has exited (it is reaped then).
fn reap(pidfd: &AsyncFd<OwnedFd>) -> io::Result<Option<ExitStatus>> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
    let raw = match waitid(Id::PIDFd(pidfd.get_ref().as_fd()), flags)? {
        WaitStatus::Exited(_, code) => code << 8,
        WaitStatus::Signaled(_, sig, core) => sig as i32 | if core { 0x80 } else { 0 },
        _ => return Ok(None),
    };
    Ok(Some(ExitStatus::from_raw(raw)))
}

/// The file `program` names: itself if it holds a `/`, else the first
/// executable file of that name in `path_var`.
fn resolve(program: &str, path_var: &str) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            candidate.is_file()
                && nix::unistd::access(candidate.as_path(), nix::unistd::AccessFlags::X_OK).is_ok()
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("not found in PATH ({path_var})"),
            )
        })
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the command"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// A posix_spawn object (file actions, attributes): initialised by `init`,
/// destroyed by `destroy` on drop.
struct SpawnObject<T> {
    obj: T,
    destroy: unsafe extern "C" fn(*mut T) -> libc::c_int,
}

impl<T> SpawnObject<T> {
    /// SAFETY: `init` and `destroy` must be the pair belonging to `T`, and
    /// a zeroed `T` a valid argument to `init`.
    unsafe fn new(
        init: unsafe extern "C" fn(*mut T) -> libc::c_int,
        destroy: unsafe extern "C" fn(*mut T) -> libc::c_int,
    ) -> io::Result<SpawnObject<T>> {
        let mut obj: T = std::mem::zeroed();
        check(init(&mut obj))?;
        Ok(SpawnObject { obj, destroy })
    }
}

impl<T> Drop for SpawnObject<T> {
    fn drop(&mut self) {
        // SAFETY: initialised in `new` by the init of this destroy.
        unsafe { (self.destroy)(&mut self.obj) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Everything a pipe of the child gives until it closes.
    async fn read_all(pipe: Option<pipe::Receiver>) -> String {
        let mut text = String::new();
        pipe.unwrap().read_to_string(&mut text).await.unwrap();
        text
    }

    fn env() -> Environment {
        let mut env = Environment::default();
        env.set("PATH", super::super::env::DEFAULT_PATH);
        env.set("GREETING", "hi");
        env
    }

    fn piped<'a>(argv: &'a [String], env: &'a Environment, cwd: Option<&'a Path>) -> Spec<'a> {
        Spec {
            argv,
            env,
            cwd,
            io: Io::Pipes,
            user: None,
        }
    }

    #[tokio::test]
    async fn a_job_leads_its_own_session_with_its_environment_and_directory() {
        let argv = [
            "sh",
            "-c",
            "echo $GREETING $(pwd); echo err >&2; cut -d' ' -f5,6 /proc/$$/stat; exit 3",
        ]
        .map(String::from);
        let env = env();
        let mut child = spawn(piped(&argv, &env, Some(Path::new("/tmp")))).unwrap();
        let out = read_all(child.stdout.take()).await;
        let err = read_all(child.stderr.take()).await;
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("hi /tmp"));
        let ids: Vec<i32> = lines
            .next()
            .unwrap()
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(
            ids,
            [child.id(), child.id()],
            "session and group are its own"
        );
        assert_eq!(err, "err\n");
    }

    #[tokio::test]
    async fn signals_and_missing_programs_are_reported() {
        let env = env();
        let argv = ["sh", "-c", "kill -TERM $$"].map(String::from);
        let mut child = spawn(piped(&argv, &env, None)).unwrap();
        assert_eq!(child.wait().await.unwrap().signal(), Some(libc::SIGTERM));

        let missing = spawn(piped(&["no-such-program-here".into()], &env, None))
            .err()
            .unwrap();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        let missing = spawn(piped(&["/nonexistent/program".into()], &env, None))
            .err()
            .unwrap();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn the_job_ignores_and_blocks_no_signal() {
        // The server ignores SIGPIPE; glibc's posix_spawn would leave its
        // internal signals (32, 33) ignored.
        let argv = ["cat", "/proc/self/status"].map(String::from);
        let env = env();
        let mut child = spawn(piped(&argv, &env, None)).unwrap();
        let out = read_all(child.stdout.take()).await;
        assert_eq!(child.wait().await.unwrap().code(), Some(0));
        let mask = |field: &str| {
            let line = out.lines().find(|l| l.starts_with(field)).unwrap();
            u64::from_str_radix(line[field.len()..].trim(), 16).unwrap()
        };
        // Bits 31 and 32: glibc's own signals 32 and 33 (see `spawn`).
        assert_eq!(mask("SigIgn:") & !0x1_8000_0000, 0, "{out}");
        assert_eq!(mask("SigBlk:"), 0, "{out}");
    }
}
