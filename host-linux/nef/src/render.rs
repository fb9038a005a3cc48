//! What `nef` prints: the federation tree, the process table (text and JSON),
//! one process's entry, how a process ended, and supervisors.
//!
//! Text goes to people and may change; the JSON of `--json` is for programs and
//! keeps its field names: a process row is `{pid, host, state, exit, cpu_millicores,
//! memory_bytes, age_ms, command, distance}` with `pid` as its hex text, `host` as
//! the node number and `state` one of `Provisional`, `Running`, `Exited`, `Lost`.

use nefele::proto::MembersView;
use nefele::quantity::{show_cpu, show_memory};
use nefele_api::supervision::{ChildState, SupervisorInfo};
use nefele_core::host::ExitStatus;
use nefele_core::placement::api::{DistanceClass, ProcInfo, ProcState, PsReply};
use serde::Serialize;
use std::fmt::Write;
use std::time::Duration;

/// The groups from the top down to the answering agent's level-0 group, each
/// indented one step further; leaders and the answering agent are marked.
pub fn members(view: &MembersView) -> String {
    let mut out = String::new();
    for (depth, group) in view.groups.iter().rev().enumerate() {
        let pad = "  ".repeat(depth * 2);
        let top = if depth == 0 { "top group, " } else { "" };
        let _ = writeln!(
            out,
            "{pad}{top}level {} (leader {}, epoch {}, {} members)",
            group.level,
            group.leader,
            group.epoch,
            group.members.len()
        );
        for m in &group.members {
            let mut marks = Vec::new();
            if m.node == group.leader {
                marks.push("leader");
            }
            if m.node == view.node {
                marks.push("this agent");
            }
            let marks = if marks.is_empty() {
                String::new()
            } else {
                format!(" ({})", marks.join(", "))
            };
            let addr = m.addr.as_deref().unwrap_or("-");
            let _ = writeln!(out, "{pad}  {:<8} {addr}{marks}", m.node.to_string());
        }
    }
    if view.groups.is_empty() {
        let _ = writeln!(out, "{} is in no group yet", view.node);
    }
    out
}

/// A `ps`-like table, in pid order.
pub fn ps_table(reply: &PsReply) -> String {
    let mut out = format!(
        "{:<32} {:<11} {:<12} {:>6} {:>7} {:>8} {:<5} COMMAND\n",
        "PID", "HOST", "STATE", "CPU", "MEM", "AGE", "DIST"
    );
    for p in &reply.processes {
        let _ = writeln!(
            out,
            "{:<32} {:<11} {:<12} {:>6} {:>7} {:>8} {:<5} {}",
            p.pid.to_string(),
            p.host.to_string(),
            state_text(p.state),
            show_cpu(p.demand.cpu_millicores),
            show_memory(p.demand.memory_bytes),
            age(p.age),
            distance(p.distance),
            p.command
        );
    }
    if reply.unanswered > 0 {
        let _ = writeln!(
            out,
            "note: {} agent(s) did not answer in time; their processes are missing",
            reply.unanswered
        );
    }
    out
}

/// One process's entry, a field per line.
pub fn info(p: &ProcInfo) -> String {
    format!(
        "pid      {}\nhost     {}\nstate    {}\ncpu      {}\nmemory   {}\nage      {}\ndistance {}\ncommand  {}\n",
        p.pid,
        p.host,
        state_text(p.state),
        show_cpu(p.demand.cpu_millicores),
        show_memory(p.demand.memory_bytes),
        age(p.age),
        distance(p.distance),
        p.command
    )
}

/// Supervisors: one line each (id, home, strategy, intensity, state, children
/// running), then a line per child and per history record, indented.
pub fn supervisors(list: &[SupervisorInfo]) -> String {
    let mut out = String::new();
    for s in list {
        let running = s
            .children
            .iter()
            .filter(|c| c.state == ChildState::Running)
            .count();
        let _ = writeln!(
            out,
            "{}  home {}  {:?}  at most {} restarts in {}  {:?}  {running}/{} running",
            s.id,
            s.home,
            s.strategy,
            s.intensity.max_restarts,
            age(s.intensity.period),
            s.state,
            s.children.len()
        );
        for c in &s.children {
            let pid = c.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
            let _ = writeln!(
                out,
                "  child {:<4} {pid:<34} {:?}  {:?}  restarts {}",
                c.index, c.policy, c.state, c.restarts
            );
        }
        for r in &s.history {
            let show = |p: Option<nefele_core::ids::Pid>| {
                p.map_or_else(|| "-".to_owned(), |p| p.to_string())
            };
            let what = if r.gave_up { "gave up" } else { "restarted" };
            let _ = writeln!(
                out,
                "  {what} child {}: {} -> {} ({:?})",
                r.child,
                show(r.old),
                show(r.new),
                r.cause
            );
        }
    }
    out
}

/// How a process ended, in words.
pub fn exit(s: ExitStatus) -> String {
    match s {
        ExitStatus::Code(c) => format!("exited with code {c}"),
        ExitStatus::Signaled(s) => format!("killed by signal {s}"),
        ExitStatus::OutOfMemory => "killed for going over its memory limit".to_owned(),
        ExitStatus::Lost => "lost with its host".to_owned(),
    }
}

/// A process row of `nef ps --json`.
#[derive(Serialize)]
struct Row<'a> {
    pid: String,
    host: u32,
    state: &'static str,
    exit: Option<String>,
    cpu_millicores: u32,
    memory_bytes: u64,
    age_ms: u128,
    command: &'a str,
    distance: &'static str,
}

/// The whole `ps --json` document: `{processes: [Row], unanswered}`.
pub fn ps_json(reply: &PsReply) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        processes: Vec<Row<'a>>,
        unanswered: u32,
    }
    let rows = reply.processes.iter().map(|p| Row {
        pid: p.pid.to_string(),
        host: p.host.0,
        state: match p.state {
            ProcState::Provisional => "Provisional",
            ProcState::Running => "Running",
            ProcState::Exited(_) => "Exited",
            ProcState::Lost => "Lost",
        },
        exit: match p.state {
            ProcState::Exited(s) => Some(exit(s)),
            _ => None,
        },
        cpu_millicores: p.demand.cpu_millicores,
        memory_bytes: p.demand.memory_bytes,
        age_ms: p.age.as_millis(),
        command: &p.command,
        distance: distance(p.distance),
    });
    let doc = Doc {
        processes: rows.collect(),
        unanswered: reply.unanswered,
    };
    serde_json::to_string_pretty(&doc).expect("plain data serialises")
}

fn state_text(s: ProcState) -> String {
    match s {
        ProcState::Provisional => "provisional".to_owned(),
        ProcState::Running => "running".to_owned(),
        ProcState::Exited(ExitStatus::Code(c)) => format!("exited({c})"),
        ProcState::Exited(ExitStatus::Signaled(s)) => format!("signaled({s})"),
        ProcState::Exited(ExitStatus::OutOfMemory) => "oom-killed".to_owned(),
        ProcState::Exited(ExitStatus::Lost) | ProcState::Lost => "lost".to_owned(),
    }
}

fn distance(d: DistanceClass) -> &'static str {
    match d {
        DistanceClass::SameHost => "host",
        DistanceClass::SameGroup => "group",
        DistanceClass::SameDc => "dc",
        DistanceClass::External => "ext",
    }
}

/// `59s`, `12m03s`, `3h12m`, `2d04h`.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nefele::proto::{GroupView, Member};
    use nefele_core::ids::{Incarnation, NodeId, Pid, TenantId};
    use nefele_core::placement::api::Demand;

    fn proc(state: ProcState) -> ProcInfo {
        ProcInfo {
            pid: Pid::new(NodeId(3), Incarnation(1), 9),
            tenant: TenantId(1),
            host: NodeId(3),
            command: "/bin/sleep".into(),
            demand: Demand {
                cpu_millicores: 500,
                memory_bytes: 256 << 20,
                accelerators: 0,
            },
            state,
            age: Duration::from_secs(75),
            distance: DistanceClass::SameGroup,
        }
    }

    #[test]
    fn ps_table_has_a_row_per_process_and_a_note_for_silent_agents() {
        let reply = PsReply {
            processes: vec![proc(ProcState::Running), proc(ProcState::Lost)],
            unanswered: 2,
        };
        let text = ps_table(&reply);
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("running") && text.contains("lost") && text.contains("1m15s"));
        assert!(text.contains("500m") && text.contains("256M") && text.contains("group"));
        assert!(text.ends_with("their processes are missing\n"));
    }

    #[test]
    fn ps_json_keeps_its_field_names() {
        let reply = PsReply {
            processes: vec![proc(ProcState::Exited(ExitStatus::Code(3)))],
            unanswered: 0,
        };
        let v: serde_json::Value = serde_json::from_str(&ps_json(&reply)).unwrap();
        let row = &v["processes"][0];
        assert_eq!(
            row["pid"],
            Pid::new(NodeId(3), Incarnation(1), 9).to_string()
        );
        assert_eq!(row["host"], 3);
        assert_eq!(row["state"], "Exited");
        assert_eq!(row["exit"], "exited with code 3");
        assert_eq!(row["age_ms"], 75_000);
    }

    #[test]
    fn members_tree_puts_the_top_group_first_and_marks_roles() {
        let member = |n| Member {
            node: NodeId(n),
            addr: Some(format!("10.0.0.{n}:7600")),
        };
        let view = MembersView {
            node: NodeId(2),
            incarnation: Incarnation(1),
            groups: vec![
                GroupView {
                    level: 0,
                    leader: NodeId(1),
                    epoch: 4,
                    members: vec![member(1), member(2)],
                },
                GroupView {
                    level: 1,
                    leader: NodeId(1),
                    epoch: 2,
                    members: vec![member(1), member(5)],
                },
            ],
            root: Some(NodeId(1)),
        };
        let text = members(&view);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("top group, level 1"), "{text}");
        assert!(lines[3].starts_with("    level 0"), "{text}");
        assert!(
            text.contains("n2       10.0.0.2:7600 (this agent)"),
            "{text}"
        );
        assert!(text.contains("(leader)"));
    }
}
