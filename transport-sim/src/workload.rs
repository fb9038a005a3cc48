//! A seeded workload generator in the spirit of published cluster traces: many
//! small, short tasks and a few large, long ones (heavy-tailed sizes and run
//! times), arriving as a Poisson process whose rate may ramp linearly, plus gang
//! requests (`n_spawn` and `c_spawn` of 2..`max_gang` processes, with affinity
//! rules).
//!
//! Each generated spec carries, in its environment, what the simulated host
//! needs to play the process out (its real run time and usage, which differ from
//! the declared reservation by seeded noise) and the request it belongs to, so
//! that the all-or-nothing checker can follow it: `NEFELE_SIM_REQ`,
//! `NEFELE_SIM_RUN_MS`, `NEFELE_SIM_CPU_MC`, `NEFELE_SIM_MEM`. Real hosts would
//! ignore these.

use nefele_core::host::{Affinity, ResourcePolicy, WorkloadProfile};
use nefele_core::{ApiCall, ProcSpec, TenantId};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The workload of a scenario (`[workload]` in a scenario file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadConfig {
    /// When the first request arrives (leave the federation time to form).
    #[serde(with = "crate::duration_text")]
    pub start: Duration,
    /// When the last request may arrive (default: the end of the run).
    #[serde(with = "crate::duration_text::option")]
    pub stop: Option<Duration>,
    /// Requests per simulated second at `start`.
    pub rate_per_s: f64,
    /// Requests per simulated second at `stop` (a linear ramp; default: no ramp).
    pub rate_end_per_s: Option<f64>,
    /// Share of requests that are `n_spawn` gangs.
    pub gang_fraction: f64,
    /// Share of requests that are `c_spawn` collections.
    pub cspawn_fraction: f64,
    /// The largest gang or collection.
    pub max_gang: u32,
    /// Share of gangs and collections with an affinity rule (apart or together).
    pub affinity_fraction: f64,
    /// Mean run time of a process.
    #[serde(with = "crate::duration_text")]
    pub mean_run: Duration,
    /// Tenants issuing requests.
    pub tenants: u32,
    /// The smallest cpu reservation; sizes double from there with probability 1/2 each.
    pub cpu_min_millicores: u32,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            start: Duration::from_secs(5),
            stop: None,
            rate_per_s: 100.0,
            rate_end_per_s: None,
            gang_fraction: 0.05,
            cspawn_fraction: 0.02,
            max_gang: 64,
            affinity_fraction: 0.5,
            mean_run: Duration::from_secs(30),
            tenants: 10,
            cpu_min_millicores: 250,
        }
    }
}

impl WorkloadConfig {
    /// Checks every parameter.
    pub fn validate(&self) -> Result<(), String> {
        let p = |x: f64| (0.0..=1.0).contains(&x);
        if !(self.rate_per_s > 0.0 && self.rate_end_per_s.is_none_or(|r| r >= 0.0)) {
            return Err("workload: rates must be positive".to_owned());
        }
        if !p(self.gang_fraction) || !p(self.cspawn_fraction) || !p(self.affinity_fraction) {
            return Err("workload: fractions must lie in [0, 1]".to_owned());
        }
        if self.max_gang < 2 || self.tenants == 0 || self.cpu_min_millicores == 0 {
            return Err("workload: max_gang ≥ 2, tenants ≥ 1, cpu_min_millicores ≥ 1".to_owned());
        }
        if self.mean_run.is_zero() {
            return Err("workload: mean_run must be more than zero".to_owned());
        }
        Ok(())
    }

    /// The arrival rate at `t` (seconds from the run's start), for a run ending at `end`.
    #[must_use]
    pub fn rate_at(&self, t: f64, end: f64) -> f64 {
        let start = self.start.as_secs_f64();
        let stop = self.stop.map_or(end, |d| d.as_secs_f64());
        match self.rate_end_per_s {
            Some(r1) if stop > start => {
                let f = ((t - start) / (stop - start)).clamp(0.0, 1.0);
                self.rate_per_s + (r1 - self.rate_per_s) * f
            }
            _ => self.rate_per_s,
        }
    }
}

/// One generated request: the call, its processes, and whether it is a gang.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The API call.
    pub call: ApiCall,
    /// Processes in it.
    pub processes: u32,
    /// `n_spawn` or `c_spawn` of two or more.
    pub gang: bool,
}

/// A Pareto draw with minimum `xm` and shape `alpha`, capped at `cap`.
fn pareto(rng: &mut ChaCha8Rng, xm: f64, alpha: f64, cap: f64) -> f64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    (xm / u.powf(1.0 / alpha)).min(cap)
}

/// Draws one process spec for request `req`.
fn spec(cfg: &WorkloadConfig, rng: &mut ChaCha8Rng, req: u64, affinity: Vec<Affinity>) -> ProcSpec {
    let mut k = 0;
    while k < 5 && rng.gen_bool(0.5) {
        k += 1;
    }
    let cpu = cfg.cpu_min_millicores << k;
    let memory = u64::from(cpu) * (2 << 20) * rng.gen_range(1..=4);
    // Run times: Pareto with shape 1.5 and the configured mean (many short, few long).
    let alpha = 1.5;
    let mean = cfg.mean_run.as_secs_f64();
    let expected = pareto(rng, mean * (alpha - 1.0) / alpha, alpha, mean * 50.0);
    let real_ms = (expected * rng.gen_range(0.7..1.3) * 1000.0).max(1.0) as u64;
    let real_cpu = (f64::from(cpu) * rng.gen_range(0.5..1.05)) as u32;
    let real_mem = (memory as f64 * rng.gen_range(0.5..1.05)) as u64;
    let app = rng.gen_range(0..8);
    ProcSpec {
        path: format!("/bin/app{app}"),
        argv: vec![format!("app{app}")],
        envp: vec![
            format!("NEFELE_SIM_REQ={req}"),
            format!("NEFELE_SIM_RUN_MS={real_ms}"),
            format!("NEFELE_SIM_CPU_MC={real_cpu}"),
            format!("NEFELE_SIM_MEM={real_mem}"),
        ],
        affinity,
        resources: ResourcePolicy {
            cpu_millicores: Some(cpu),
            memory_bytes: Some(memory),
            ..ResourcePolicy::default()
        },
        profile: Some(WorkloadProfile {
            cpu_millicores: cpu,
            memory_bytes: memory,
            duration: Some(Duration::from_secs_f64(expected)),
        }),
    }
}

/// Draws request number `req`.
pub fn generate(cfg: &WorkloadConfig, rng: &mut ChaCha8Rng, req: u64) -> Generated {
    let tenant = TenantId(rng.gen_range(0..cfg.tenants));
    let x: f64 = rng.gen();
    // Gang sizes: Pareto with shape 1.2 from 2, so most gangs are small.
    let mut size = || pareto(rng, 2.0, 1.2, f64::from(cfg.max_gang)) as u32;
    if x < cfg.gang_fraction {
        let n = size().max(2);
        let affinity = if rng.gen_bool(cfg.affinity_fraction) {
            vec![Affinity::Apart(format!("g{req}"))]
        } else {
            Vec::new()
        };
        let s = spec(cfg, rng, req, affinity);
        Generated {
            call: ApiCall::NSpawn { tenant, n, spec: s },
            processes: n,
            gang: true,
        }
    } else if x < cfg.gang_fraction + cfg.cspawn_fraction {
        let n = size().max(2);
        let rule = rng.gen_bool(cfg.affinity_fraction);
        let specs = (0..n)
            .map(|i| {
                // Pairs that must share a host, and replicas that must not.
                let affinity = match (rule, i % 3) {
                    (false, _) => Vec::new(),
                    (true, 0 | 1) => vec![Affinity::Together(format!("p{req}.{}", i / 3))],
                    (true, _) => vec![Affinity::Apart(format!("r{req}"))],
                };
                spec(cfg, rng, req, affinity)
            })
            .collect();
        Generated {
            call: ApiCall::CSpawn { tenant, specs },
            processes: n,
            gang: true,
        }
    } else {
        let s = spec(cfg, rng, req, Vec::new());
        Generated {
            call: ApiCall::Spawn { tenant, spec: s },
            processes: 1,
            gang: false,
        }
    }
}

/// The value of `NEFELE_SIM_<key>=` in `envp`, if present and numeric.
#[must_use]
pub fn env_number(envp: &[String], key: &str) -> Option<u64> {
    envp.iter().find_map(|e| {
        e.strip_prefix("NEFELE_SIM_")?
            .strip_prefix(key)?
            .strip_prefix('=')?
            .parse()
            .ok()
    })
}
