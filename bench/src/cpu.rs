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

/// CPU time of `pid` and of the processes it started that are running (nginx's master and its
/// workers).
pub fn tree_ticks(pid: u32) -> Ticks {
    let children = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            let f = fields(&stat);
            (field(&f, 1) == u64::from(pid)).then(|| Ticks::of(&f))
        })
        .fold(Ticks::default(), |a, b| a + b);
    ticks(&format!("/proc/{pid}/stat")) + children
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
    }
}
