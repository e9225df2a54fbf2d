//! Giving up root: a daemon started as root opens what it needs (the backing file, its socket)
//! and then runs as an unprivileged user (`--user NAME`).

use std::ffi::{CStr, CString};
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("user name {0:?} contains a NUL byte")]
    Name(String),
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("cannot look up user {0:?}")]
    Lookup(String, #[source] io::Error),
    #[error("--user needs the daemon to start as root")]
    NotRoot,
    #[error("cannot set the supplementary groups of {0:?}")]
    Groups(String, #[source] io::Error),
    #[error("cannot set group id {0}")]
    SetGid(u32, #[source] io::Error),
    #[error("cannot set user id {0}")]
    SetUid(u32, #[source] io::Error),
    #[error("still privileged after the switch (uid {uid}, euid {euid}, gid {gid}, egid {egid})")]
    StillPrivileged {
        uid: u32,
        euid: u32,
        gid: u32,
        egid: u32,
    },
}

/// A user to become.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// Looks `name` up in the password database.
    pub fn lookup(name: &str) -> Result<User, Error> {
        let cname = CString::new(name).map_err(|_| Error::Name(name.into()))?;
        let mut buf = vec![0u8; 4096];
        loop {
            // SAFETY: `passwd` is plain data that getpwnam_r fills in.
            let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
            let mut found: *mut libc::passwd = std::ptr::null_mut();
            // SAFETY: every pointer is valid for the call: the name is NUL-terminated, `buf`
            // has the length passed, and `pwd`/`found` are locals.
            let rc = unsafe {
                libc::getpwnam_r(
                    cname.as_ptr(),
                    &mut pwd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut found,
                )
            };
            if rc == libc::ERANGE && buf.len() < 1 << 20 {
                buf.resize(buf.len() * 2, 0);
                continue;
            }
            if rc != 0 {
                return Err(Error::Lookup(name.into(), io::Error::from_raw_os_error(rc)));
            }
            if found.is_null() {
                return Err(Error::NoSuchUser(name.into()));
            }
            return Ok(User {
                name: name.into(),
                uid: pwd.pw_uid,
                gid: pwd.pw_gid,
            });
        }
    }

    /// Becomes this user for good: supplementary groups, group, then user (in that order:
    /// after setuid the others are no longer allowed), and checks that no way back is left.
    /// glibc applies the change to every thread of the process.
    pub fn become_user(&self) -> Result<(), Error> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::NotRoot);
        }
        let cname = CString::new(self.name.as_str()).map_err(|_| Error::Name(self.name.clone()))?;
        let name: &CStr = &cname;
        // SAFETY: a NUL-terminated name and a plain gid; the result is checked.
        if unsafe { libc::initgroups(name.as_ptr(), self.gid) } != 0 {
            return Err(Error::Groups(self.name.clone(), io::Error::last_os_error()));
        }
        // SAFETY: plain FFI calls; the results are checked.
        if unsafe { libc::setresgid(self.gid, self.gid, self.gid) } != 0 {
            return Err(Error::SetGid(self.gid, io::Error::last_os_error()));
        }
        // SAFETY: as above.
        if unsafe { libc::setresuid(self.uid, self.uid, self.uid) } != 0 {
            return Err(Error::SetUid(self.uid, io::Error::last_os_error()));
        }
        let (uid, euid, gid, egid) = current_ids();
        let back_to_root = self.uid != 0
            // SAFETY: plain FFI call; it must fail for an unprivileged user.
            && unsafe { libc::setuid(0) } == 0;
        if uid != self.uid
            || euid != self.uid
            || gid != self.gid
            || egid != self.gid
            || back_to_root
        {
            return Err(Error::StillPrivileged {
                uid,
                euid,
                gid,
                egid,
            });
        }
        Ok(())
    }
}

/// (uid, euid, gid, egid) of the calling process.
pub fn current_ids() -> (u32, u32, u32, u32) {
    // SAFETY: these calls have no preconditions and cannot fail.
    unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up() {
        let root = User::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(matches!(
            User::lookup("no-such-user-iopath"),
            Err(Error::NoSuchUser(_))
        ));
        assert!(matches!(User::lookup("a\0b"), Err(Error::Name(_))));
    }
}
