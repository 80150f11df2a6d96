//! Which process an owner is, and whether another process on the same
//! machine can prove that it has ended.
//!
//! An owner records its machine (the kernel's boot id), its pid and time
//! namespaces, its pid and its start time. A process with the same boot id
//! and namespaces asks the kernel about that pid: no such process, or one
//! that started at another time (the pid was reused), proves the owner
//! dead. Anything else proves nothing: another machine or namespace, no
//! `/proc`, a `/proc` of another pid namespace, a process it cannot read,
//! a process that has exited but is not yet reaped (a zombie, which its
//! parent reaps at once in practice).

use std::fs;

/// A process, as an owner row records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Process {
    /// The machine, until it reboots (`/proc/sys/kernel/random/boot_id`).
    pub(crate) boot_id: String,
    /// Its pid namespace, and its time namespace where the kernel has them,
    /// as `/proc/self/ns` names them: a pid names the same process only
    /// within one pid namespace, and a start time reads the same only
    /// within one time namespace.
    pub(crate) namespace: String,
    /// Its process id, in that pid namespace.
    pub(crate) pid: i32,
    /// When it started, in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
    pub(crate) start: i64,
}

impl Process {
    /// This process; `None` where the kernel cannot be asked as this module
    /// does (not Linux, no `/proc`, or a `/proc` mounted for another pid
    /// namespace, whose pids are not this namespace's).
    pub(crate) fn this() -> Option<Process> {
        let pid = i32::try_from(std::process::id()).ok()?;
        if !proc_is_ours(pid) {
            return None;
        }
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        Some(Process {
            boot_id: boot_id.trim().to_owned(),
            namespace: namespaces()?,
            pid,
            start: started(pid)?,
        })
    }

    /// True when `owner` has certainly ended, as seen from this process: it
    /// ran on this machine in these namespaces, and no process has its pid
    /// now, or the one that has it started at another time.
    pub(crate) fn proves_gone(&self, owner: &Process) -> bool {
        if owner.boot_id != self.boot_id || owner.namespace != self.namespace {
            return false;
        }
        match exists(owner.pid) {
            Some(false) => true,
            // Read after the pid was seen taken: a process that ends in
            // between leaves nothing to read, which proves nothing.
            Some(true) => started(owner.pid).is_some_and(|start| start != owner.start),
            None => false,
        }
    }
}

/// Whether a process has the id `pid`; `None` when the kernel does not say.
/// Asked with `kill(pid, 0)`, not `/proc`: a `/proc` mounted with `hidepid`
/// hides other users' processes, which `kill` still reports (`EPERM`).
fn exists(pid: i32) -> Option<bool> {
    // 0 and negative ids name process groups, not a process.
    if pid <= 0 {
        return None;
    }
    // SAFETY: `kill` with signal 0 sends nothing and touches no memory of
    // ours; it only checks that `pid` names a process.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return Some(true);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ESRCH) => Some(false),
        Some(libc::EPERM) => Some(true),
        _ => None,
    }
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`).
fn started(pid: i32) -> Option<i64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2, the command in parentheses, may hold spaces and parentheses:
    // the fields resume after the last ')', at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Whether `/proc` numbers processes as this process's pid namespace does:
/// `NSpid` lists this process's pid in the namespace of `/proc` and in each
/// one below it down to its own, so a single entry equal to `pid` means
/// they are one namespace.
fn proc_is_ours(pid: i32) -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .is_some_and(|pids| pids.split_whitespace().eq([pid.to_string().as_str()]))
}

/// This process's pid namespace, followed by its time namespace where the
/// kernel has them (Linux 5.6 on).
fn namespaces() -> Option<String> {
    let mut names = fs::read_link("/proc/self/ns/pid").ok()?.to_str()?.to_owned();
    if let Ok(time) = fs::read_link("/proc/self/ns/time") {
        names.push(' ');
        names.push_str(time.to_str()?);
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};

    use super::*;

    fn sleeper() -> (Child, Process) {
        let child = Command::new("sleep").arg("60").spawn().expect("spawning sleep");
        let here = Process::this().expect("this test runs on Linux with its own /proc");
        let pid = i32::try_from(child.id()).unwrap();
        let recorded = Process {
            pid,
            start: started(pid).expect("a running child's start time"),
            ..here
        };
        (child, recorded)
    }

    #[test]
    fn this_process_is_not_gone() {
        let here = Process::this().expect("this test runs on Linux with its own /proc");
        assert_eq!(here.pid, i32::try_from(std::process::id()).unwrap());
        assert!(!here.proves_gone(&here.clone()));
    }

    #[test]
    fn a_live_process_is_not_gone_and_its_pid_under_another_start_is() {
        let (mut child, recorded) = sleeper();
        let here = Process::this().unwrap();
        assert!(!here.proves_gone(&recorded));
        let reused = Process {
            start: recorded.start + 1,
            ..recorded.clone()
        };
        assert!(
            here.proves_gone(&reused),
            "the same pid under another start time is another process"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn an_ended_process_is_gone_but_only_on_its_machine_and_namespaces() {
        let (mut child, recorded) = sleeper();
        child.kill().unwrap();
        child.wait().unwrap(); // reaped: its pid is free, or another process's
        let here = Process::this().unwrap();
        assert!(here.proves_gone(&recorded));
        let elsewhere = Process {
            boot_id: "another machine".to_owned(),
            ..recorded.clone()
        };
        assert!(!here.proves_gone(&elsewhere));
        let other_namespace = Process {
            namespace: "pid:[1]".to_owned(),
            ..recorded
        };
        assert!(!here.proves_gone(&other_namespace));
    }

    #[test]
    fn a_pid_that_names_no_single_process_proves_nothing() {
        let here = Process::this().unwrap();
        for pid in [0, -1] {
            assert!(!here.proves_gone(&Process { pid, ..here.clone() }));
        }
    }
}
