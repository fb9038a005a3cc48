//! `SimHost`: an in-memory host backend for madsim tests and for trying nefeled
//! without root (`--sim-host`).
//!
//! It "runs" a process until it is killed, except: `/bin/true` exits 0 at once,
//! `/bin/false` exits 1 at once, and `/bin/sleep N` exits 0 after N seconds on the
//! tokio clock (madsim's virtual clock under `--cfg madsim`). A path that is
//! empty or not absolute fails with `InvalidSpec`. Every signal but 0 ends a
//! process (reported as `Signaled`). Its capacity is the
//! configured one; what it reports as committed is what running processes reserved.
//!
//! Invariants: `Start` is idempotent (a pid started once is never started again);
//! every started process gets exactly one `Exited`; a `Resources` event follows
//! every change of the running set.

use crate::config::ResourceOverride;
use crate::driver::sleep_until;
use crate::host_link::{self, BackendEnds, HostLink};
use crate::host_traits::HostTraits;
use nefele_core::host::{
    ExitStatus, HostCommand, HostEvent, HostResources, Location, ProcSpec, Signal, StartFailure,
    Usage,
};
use nefele_core::ids::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// Linux signal numbers reported for `Signal::Terminate` and `Signal::Kill`.
const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

#[derive(Debug)]
struct Running {
    started: Instant,
    /// When it exits by itself (`/bin/sleep`), if ever.
    ends: Option<Instant>,
    cpu_millicores: u32,
    memory_bytes: u64,
}

/// What a spec does when "run".
#[derive(Debug, PartialEq, Eq)]
enum Behaviour {
    ExitAtOnce(i32),
    ExitAfter(Duration),
    RunUntilKilled,
}

fn behaviour(spec: &ProcSpec) -> Result<Behaviour, String> {
    if !spec.path.starts_with('/') {
        return Err(format!("path `{}` is not absolute", spec.path));
    }
    Ok(match spec.path.as_str() {
        "/bin/true" => Behaviour::ExitAtOnce(0),
        "/bin/false" => Behaviour::ExitAtOnce(1),
        "/bin/sleep" => {
            let arg = spec.argv.get(1).ok_or("`/bin/sleep` needs argv[1]")?;
            let secs: f64 = arg
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s < 1e9)
                .ok_or_else(|| format!("`/bin/sleep {arg}`: not a number of seconds"))?;
            Behaviour::ExitAfter(Duration::from_secs_f64(secs))
        }
        _ => Behaviour::RunUntilKilled,
    })
}

/// The in-memory host's state.
#[derive(Debug)]
struct SimHost {
    capacity: ResourceOverride,
    traits: HostTraits,
    running: BTreeMap<Pid, Running>,
    /// Every pid ever started or refused, so a repeated `Start` does nothing.
    seen: BTreeSet<Pid>,
    events: tokio::sync::mpsc::UnboundedSender<HostEvent>,
}

impl SimHost {
    fn emit(&self, event: HostEvent) {
        // The driver is gone when this fails; the loop ends at the next command poll.
        let _ = self.events.send(event);
    }

    fn resources(&self) -> HostResources {
        let measured = HostResources {
            cores: self.capacity.cpu_millicores.div_ceil(1000),
            cpu_millicores: self.capacity.cpu_millicores,
            memory_bytes: self.capacity.memory_bytes,
            accelerators: 0,
            cpu_speed: 1000,
            committed_cpu_millicores: self.running.values().map(|r| r.cpu_millicores).sum(),
            committed_memory_bytes: self.running.values().map(|r| r.memory_bytes).sum(),
            location: Location::default(),
            unenforced: nefele_core::host::LimitKinds::default(),
        };
        self.traits.apply(measured, 0)
    }

    fn execute(&mut self, command: HostCommand, now: Instant) {
        match command {
            HostCommand::Start { pid, spec, .. } => {
                if !self.seen.insert(pid) {
                    return;
                }
                let ends = match behaviour(&spec) {
                    Err(detail) => {
                        self.emit(HostEvent::StartFailed {
                            pid,
                            reason: StartFailure::InvalidSpec,
                            detail,
                        });
                        return;
                    }
                    Ok(Behaviour::ExitAtOnce(code)) => {
                        self.emit(HostEvent::Started { pid });
                        self.emit(HostEvent::Exited {
                            pid,
                            status: ExitStatus::Code(code),
                            usage: Usage::default(),
                        });
                        return;
                    }
                    Ok(Behaviour::ExitAfter(d)) => Some(now + d),
                    Ok(Behaviour::RunUntilKilled) => None,
                };
                let reserved = &spec.resources;
                self.running.insert(
                    pid,
                    Running {
                        started: now,
                        ends,
                        cpu_millicores: reserved.cpu_millicores.unwrap_or(0),
                        memory_bytes: reserved.memory_bytes.unwrap_or(0),
                    },
                );
                self.emit(HostEvent::Started { pid });
                self.emit(HostEvent::Resources(self.resources()));
            }
            HostCommand::Kill { pid, signal } => {
                let signo = match signal {
                    Signal::Terminate => SIGTERM,
                    Signal::Kill => SIGKILL,
                    // Signal 0 only checks that the process exists.
                    Signal::Raw(0) => return,
                    Signal::Raw(n) => n,
                };
                self.end(pid, ExitStatus::Signaled(signo), now);
            }
        }
    }

    fn end(&mut self, pid: Pid, status: ExitStatus, now: Instant) {
        if let Some(r) = self.running.remove(&pid) {
            let usage = Usage {
                cpu_time: Duration::ZERO,
                peak_memory_bytes: r.memory_bytes,
                wall_time: now.duration_since(r.started),
            };
            self.emit(HostEvent::Exited { pid, status, usage });
            self.emit(HostEvent::Resources(self.resources()));
        }
    }

    fn next_end(&self) -> Option<(Instant, Pid)> {
        self.running
            .iter()
            .filter_map(|(pid, r)| r.ends.map(|e| (e, *pid)))
            .min()
    }
}

/// Starts a SimHost of capacity `capacity` as a task of the current runtime.
#[must_use]
pub fn spawn(capacity: ResourceOverride) -> HostLink {
    spawn_with(capacity, HostTraits::default())
}

/// As [`spawn`], for a host with `traits` (its location, cpu speed, accelerators).
pub fn spawn_with(capacity: ResourceOverride, traits: HostTraits) -> HostLink {
    let (link, ends) = host_link::pair(None);
    tokio::spawn(run(capacity, traits, ends));
    link
}

async fn run(capacity: ResourceOverride, traits: HostTraits, ends: BackendEnds) {
    let BackendEnds {
        mut commands,
        events,
    } = ends;
    let mut host = SimHost {
        capacity,
        traits,
        running: BTreeMap::new(),
        seen: BTreeSet::new(),
        events,
    };
    host.emit(HostEvent::Resources(host.resources()));
    loop {
        let next_end = host.next_end();
        tokio::select! {
            command = commands.recv() => match command {
                Some(c) => host.execute(c, Instant::now()),
                None => return,
            },
            () = sleep_until(next_end.map(|(at, _)| at)) => {
                if let Some((_, pid)) = next_end {
                    host.end(pid, ExitStatus::Code(0), Instant::now());
                }
            }
        }
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use nefele_core::ids::{Incarnation, NodeId, TenantId};

    fn start(n: u64, path: &str, argv: &[&str]) -> HostCommand {
        HostCommand::Start {
            pid: Pid::new(NodeId(1), Incarnation(1), n),
            tenant: TenantId(1),
            spec: ProcSpec {
                path: path.into(),
                argv: argv.iter().map(|s| (*s).to_owned()).collect(),
                ..ProcSpec::default()
            },
        }
    }

    fn pid(n: u64) -> Pid {
        Pid::new(NodeId(1), Incarnation(1), n)
    }

    async fn next_non_resources(link: &mut HostLink) -> HostEvent {
        loop {
            match link.events.recv().await.unwrap() {
                HostEvent::Resources(_) => continue,
                e => return e,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_exits_after_its_time_true_at_once_and_others_when_killed() {
        let mut link = spawn(ResourceOverride {
            cpu_millicores: 2000,
            memory_bytes: 1 << 30,
        });
        let HostEvent::Resources(r) = link.events.recv().await.unwrap() else {
            panic!("the first event is the capacity")
        };
        assert_eq!((r.cores, r.cpu_millicores), (2, 2000));

        let t0 = Instant::now();
        link.commands
            .send(start(1, "/bin/sleep", &["sleep", "5"]))
            .unwrap();
        link.commands
            .send(start(2, "/bin/true", &["true"]))
            .unwrap();
        link.commands.send(start(3, "/srv/app", &["app"])).unwrap();
        link.commands.send(start(3, "/srv/app", &["app"])).unwrap();
        link.commands.send(start(4, "relative", &[])).unwrap();
        assert_eq!(
            next_non_resources(&mut link).await,
            HostEvent::Started { pid: pid(1) }
        );
        assert_eq!(
            next_non_resources(&mut link).await,
            HostEvent::Started { pid: pid(2) }
        );
        assert!(matches!(
            next_non_resources(&mut link).await,
            HostEvent::Exited {
                status: ExitStatus::Code(0),
                ..
            }
        ));
        assert_eq!(
            next_non_resources(&mut link).await,
            HostEvent::Started { pid: pid(3) }
        );
        assert!(matches!(
            next_non_resources(&mut link).await,
            HostEvent::StartFailed {
                reason: StartFailure::InvalidSpec,
                ..
            }
        ));
        let HostEvent::Exited {
            pid: p,
            status,
            usage,
        } = next_non_resources(&mut link).await
        else {
            panic!("sleep should exit")
        };
        assert_eq!((p, status), (pid(1), ExitStatus::Code(0)));
        assert_eq!(usage.wall_time, Duration::from_secs(5));
        assert_eq!(t0.elapsed(), Duration::from_secs(5));

        link.commands
            .send(HostCommand::Kill {
                pid: pid(3),
                signal: Signal::Terminate,
            })
            .unwrap();
        assert!(matches!(
            next_non_resources(&mut link).await,
            HostEvent::Exited {
                status: ExitStatus::Signaled(SIGTERM),
                ..
            }
        ));
    }

    #[test]
    fn bad_sleep_arguments_are_invalid_specs() {
        for argv in [
            vec![],
            vec!["sleep".to_owned(), "-1".into()],
            vec!["s".into(), "x".into()],
        ] {
            let spec = ProcSpec {
                path: "/bin/sleep".into(),
                argv,
                ..ProcSpec::default()
            };
            assert!(behaviour(&spec).is_err(), "{spec:?}");
        }
    }
}
