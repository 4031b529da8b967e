//! CPU time of the processes a bench loads, from `/proc`: what a call costs the gateway (or
//! nginx), a figure the machine's speed moves much less than req/s on a VM whose speed swings
//! by ±20% within minutes.

/// Linux reports `/proc` CPU times in USER_HZ, which is 100 on every architecture it runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of a `/proc/<pid>/stat` line after the command name, which may hold spaces and
/// parentheses: `state` is the first, `ppid` the second, `utime` and `stime` the 12th and 13th.
fn fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect()
}

fn field(fields: &[&str], i: usize) -> u64 {
    fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// CPU time in ticks, user and system apart: where user time is the program's own work, system
/// time is mostly its sockets and files, which every proxy pays alike.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ticks {
    pub user: u64,
    pub system: u64,
}

impl Ticks {
    fn of(fields: &[&str]) -> Self {
        Self {
            user: field(fields, 11),
            system: field(fields, 12),
        }
    }

    pub fn total(self) -> u64 {
        self.user + self.system
    }

    /// What was spent since `before`.
    pub fn since(self, before: Ticks) -> Ticks {
        Ticks {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
        }
    }
}

impl std::ops::Add for Ticks {
    type Output = Ticks;
    fn add(self, o: Ticks) -> Ticks {
        Ticks {
            user: self.user + o.user,
            system: self.system + o.system,
        }
    }
}

/// User and system CPU time of the process or thread whose `stat` file is `path` (a process's
/// counts all its threads).
pub fn ticks(path: &str) -> Ticks {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    Ticks::of(&fields(&stat))
}

/// The processes of this machine, by the numbered entries of `/proc`.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// CPU time of `pid` and of the processes it started that are running (nginx's master and its
/// workers).
pub fn tree_ticks(pid: u32) -> Ticks {
    let children = pids()
        .filter_map(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            let f = fields(&stat);
            (field(&f, 1) == u64::from(pid)).then(|| Ticks::of(&f))
        })
        .fold(Ticks::default(), |a, b| a + b);
    ticks(&format!("/proc/{pid}/stat")) + children
}

/// The process listening on TCP `port` of this machine (the broker the bench was given): the
/// owner of the listening socket's inode in `/proc/net/tcp{,6}`. None if it cannot be seen
/// (another user's process, another machine).
pub fn listener_pid(port: u16) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .find_map(|table| listening_inode(&table, port))?;
    let wanted = format!("socket:[{inode}]");
    pids().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str()))
    })
}

/// The inode of the socket listening on `port` in a `/proc/net/tcp` table: its lines are
/// `sl local_address rem_address st ... uid timeout inode`, the address `HEXIP:HEXPORT`, the
/// state 0A for LISTEN.
fn listening_inode(table: &str, port: u16) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f.get(1)?.rsplit_once(':')?.1;
        let listening = *f.get(3)? == "0A";
        (listening && u16::from_str_radix(local_port, 16).ok()? == port)
            .then(|| f.get(9)?.parse().ok())
            .flatten()
    })
}

/// Cores kept busy: `ticks` spent over `seconds`.
pub fn cores(ticks: u64, seconds: f64) -> f64 {
    ticks as f64 / TICKS_PER_SECOND / seconds
}

/// A process's command name (`/proc/<pid>/comm`), empty if it is gone.
pub fn name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|n| n.trim_end().to_owned())
        .unwrap_or_default()
}

/// Microseconds of CPU a call: `ticks` spent over `calls`.
pub fn us_per_call(ticks: u64, calls: u64) -> f64 {
    ticks as f64 / TICKS_PER_SECOND * 1e6 / calls.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line = "4242 (nginx: (worker) x) S 4241 4241 4241 0 -1 4194560 90 0 0 0 \
                    1234 567 0 0 20 0 1 0 100 1000 200";
        let f = fields(line);
        assert_eq!(field(&f, 1), 4241, "ppid");
        assert_eq!(
            Ticks::of(&f),
            Ticks {
                user: 1234,
                system: 567
            },
            "utime and stime"
        );
    }

    #[test]
    fn a_listening_socket_is_found_by_its_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:C45B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 81234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 0100007F:C45B 01 00000000:00000000 00:00000000 00000000     0        0 81299 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(listening_inode(table, 0xC45B), Some(81234));
        // Connected, not listening.
        assert_eq!(listening_inode(table, 0x9C40), None);
        assert_eq!(listening_inode(table, 80), None);
        // This process's own listener.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(listener_pid(port), Some(std::process::id()));
        assert!(!name(std::process::id()).is_empty());
    }

    #[test]
    fn this_process_and_its_children_are_counted() {
        // Spin until the kernel has counted at least one tick for this process.
        let me = std::process::id();
        let start = std::time::Instant::now();
        while ticks(&format!("/proc/{me}/stat")).total() == 0 && start.elapsed().as_secs() < 5 {
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        let own = ticks(&format!("/proc/{me}/stat")).total();
        assert!(own > 0);
        assert!(tree_ticks(me).total() >= own);
        assert_eq!(us_per_call(100, 1_000), 1_000.0);
        assert_eq!(cores(150, 2.0), 0.75);
    }
}
