//! Running as another Unix user: a `local` target's `user = "NAME"` (and
//! optional `group`). Its jobs and terminals start as that user, with its
//! supplementary groups, its `HOME`, `USER` and `LOGNAME`, in its home
//! directory (or the template's `workdir`), so an operator's shell cannot
//! read the server's database or configuration.
//!
//! [`Account::lookup`] reads the user and its groups (passwd, group files
//! or NSS) in the server, before the child exists; in the child, between
//! fork and exec, [`Account::become_user`] only makes system calls
//! (`setgroups`, `setgid`, `setuid`, in that order: after `setuid` the
//! other two are no longer allowed), which is all a forked child of a
//! threaded program may do.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use nix::unistd::{getgrouplist, setgid, setgroups, setuid, Gid, Group, Uid, User};

/// Whom a target's work runs as (names from the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    /// Its primary group instead of the user's own.
    pub group: Option<String>,
}

/// A user resolved for one start.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// Every group it is in (`initgroups`' list, with `gid`).
    groups: Vec<Gid>,
    pub home: PathBuf,
}

/// Whether this process may start work as other users (it runs as root).
pub fn can_switch_users() -> bool {
    Uid::effective().is_root()
}

impl Account {
    /// Looks `run_as` up now (a user or group removed since the
    /// configuration was read is an error here, with its name).
    pub fn lookup(run_as: &RunAs) -> io::Result<Account> {
        let user = User::from_name(&run_as.user)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("there is no user `{}` on this host", run_as.user),
            )
        })?;
        let gid = match &run_as.group {
            Some(name) => {
                Group::from_name(name)?
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("there is no group `{name}` on this host"),
                        )
                    })?
                    .gid
            }
            None => user.gid,
        };
        let cname = CString::new(user.name.as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a user name"))?;
        let groups = getgrouplist(&cname, gid)?;
        Ok(Account {
            name: user.name,
            uid: user.uid,
            gid,
            groups,
            home: user.dir,
        })
    }

    /// Where its work starts unless told otherwise: its home, or `/` when
    /// that does not exist (system users often have none).
    pub fn start_dir(&self) -> &Path {
        if self.home.is_dir() {
            &self.home
        } else {
            Path::new("/")
        }
    }

    /// Drops this process to the account: groups, then group, then user.
    /// Only system calls: safe between fork and exec.
    pub fn become_user(&self) -> io::Result<()> {
        setgroups(&self.groups)?;
        setgid(self.gid)?;
        setuid(self.uid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_with_its_home_and_groups_and_a_stranger_is_named() {
        let root = Account::lookup(&RunAs {
            user: "root".into(),
            group: None,
        })
        .unwrap();
        assert!(root.uid.is_root());
        assert_eq!(root.home, Path::new("/root"));
        assert!(root.groups.contains(&Gid::from_raw(0)));
        let err = Account::lookup(&RunAs {
            user: "no-such-user-here".into(),
            group: None,
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("no user `no-such-user-here`"),
            "{err}"
        );
        let err = Account::lookup(&RunAs {
            user: "root".into(),
            group: Some("no-such-group-here".into()),
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("no group `no-such-group-here`"),
            "{err}"
        );
    }
}
