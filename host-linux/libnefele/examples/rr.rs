//! rr: 64-byte request/response, through Nefele and over raw sockets, for the
//! messaging benchmark (`scripts/netns-cluster.sh bench`). One binary plays every
//! side so both paths run the same loop:
//!
//! - `rr echo`: inside Nefele, answers every message to its sender, forever.
//! - `rr client PID N SIZE`: inside Nefele, sends N messages of SIZE bytes to PID,
//!   each after the answer to the last, and prints `n=.. p50_us=.. p99_us=..`;
//!   first with each send waiting for its fate before the receive (`plain`), then
//!   with sends that return once written to the agent ([`Client::send_async`]),
//!   their fates read along the way (`async`), as a latency-minded program would;
//!   then the same on a link to PID ([`Client::link`]: `linked`, `linked_async`),
//!   when one can be made. The echo sends asynchronously, on a link back to a
//!   client that linked to it.
//! - `rr sink N` / `rr stream PID N SIZE [linked]`: one sender's stream of N
//!   messages of SIZE bytes to PID ([`Client::send_batch`], fates read along the
//!   way), on a link to PID with `linked`; the sink prints `sink: n=..
//!   msgs_per_s=..` (first to last message), the sender `stream: n=.. msgs_per_s=..
//!   failed=..` (`stream_linked: ..`; first send to last fate).
//! - `rr sub TOPIC N` / `rr pub TOPIC N SIZE`: the same through a topic; each
//!   subscriber prints `sub: n=.. msgs_per_s=..`.
//! - `rr names PREFIX K`: registers PREFIX0 … PREFIX(K-1), then waits forever;
//!   `rr lookup PREFIX K`: looks each name up twice, cold (the first lookup at this
//!   agent) then warm, and prints `lookup_cold: ..` and `lookup_warm: ..`.
//! - `rr tcp-echo ADDR` / `rr tcp-client ADDR N SIZE`: the same over one TCP
//!   connection (`TCP_NODELAY`).
//! - `rr unix-echo PATH` / `rr unix-client PATH N SIZE`: the same over a Unix
//!   stream socket.
//!
//! Any of them may begin with `pin CPU`: the process then runs on that cpu only
//! (`sched_setaffinity`), so that a benchmark can place both ends of each path the
//! same way (on a small virtual machine, whether the two ends of a round trip share
//! a cpu decides its latency more than anything either end does).
//!
//! The first tenth of the round trips (at least one) warm up and are not counted.

use nefele::{Client, SendOptions, MAX_ASYNC_SENDS};
use nefele_api::ids::Pid;
use nefele_api::messaging::{Dest, MailBody, SendError, SendReceipt};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("pin") {
        let cpu: usize = args.get(1).and_then(|c| c.parse().ok()).expect("pin CPU");
        pin_to(cpu);
        args.drain(..2);
    }
    let arg = |i: usize| -> &str { args.get(i).map_or("", String::as_str) };
    let num = |i: usize| -> usize { arg(i).parse().expect("a number") };
    match arg(0) {
        "echo" => echo(),
        "client" => {
            let mut c = Client::connect_default().expect("connect");
            let peer: Pid = arg(1).parse().expect("a pid");
            print!("plain: ");
            report(client(&mut c, peer, num(2), num(3), false));
            print!("async: ");
            report(client(&mut c, peer, num(2), num(3), true));
            match c.link(peer) {
                Ok(()) => {
                    print!("linked: ");
                    report(client(&mut c, peer, num(2), num(3), false));
                    print!("linked_async: ");
                    report(client(&mut c, peer, num(2), num(3), true));
                }
                Err(e) => println!("linked: unavailable ({e})"),
            }
            c.settle().expect("fates");
            let failed = c.take_fates().iter().filter(|(_, f)| f.is_err()).count();
            assert_eq!(failed, 0, "sends failed");
        }
        "sink" => count_mail("sink", None, num(1)),
        "sub" => count_mail("sub", Some(arg(1)), num(2)),
        "stream" => {
            let peer: Pid = arg(1).parse().expect("a pid");
            let mut c = Client::connect_default().expect("connect");
            let what = if arg(4) == "linked" {
                match c.link(peer) {
                    Ok(()) => "stream_linked",
                    Err(e) => return println!("stream_linked: unavailable ({e})"),
                }
            } else {
                "stream"
            };
            stream(&mut c, what, Dest::Pid(peer), num(2), num(3));
        }
        "pub" => {
            let mut c = Client::connect_default().expect("connect");
            stream(
                &mut c,
                "pub",
                Dest::Topic(arg(1).to_owned()),
                num(2),
                num(3),
            );
        }
        "names" => {
            let mut c = Client::connect_default().expect("connect");
            for i in 0..num(2) {
                c.register(&format!("{}{i}", arg(1))).expect("register");
            }
            println!("names: registered {}", num(2));
            loop {
                let _ = c.recv(1, Duration::from_secs(3600));
            }
        }
        "lookup" => {
            let mut c = Client::connect_default().expect("connect");
            for kind in ["cold", "warm"] {
                let mut samples = Vec::with_capacity(num(2));
                for i in 0..num(2) {
                    let t0 = Instant::now();
                    c.whereis(&format!("{}{i}", arg(1))).expect("whereis");
                    samples.push(t0.elapsed());
                }
                print!("lookup_{kind}: ");
                report(samples);
            }
        }
        "tcp-echo" => {
            let l = std::net::TcpListener::bind(arg(1)).expect("bind");
            let (s, _) = l.accept().expect("accept");
            s.set_nodelay(true).expect("nodelay");
            stream_echo(s);
        }
        "tcp-client" => {
            let s = std::net::TcpStream::connect(arg(1)).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            report(stream_client(s, num(2), num(3)));
        }
        "unix-echo" => {
            let _ = std::fs::remove_file(arg(1));
            let l = std::os::unix::net::UnixListener::bind(arg(1)).expect("bind");
            let (s, _) = l.accept().expect("accept");
            stream_echo(s);
        }
        "unix-client" => {
            let s = std::os::unix::net::UnixStream::connect(arg(1)).expect("connect");
            report(stream_client(s, num(2), num(3)));
        }
        _ => {
            eprintln!("usage: rr echo | client PID N SIZE | sink N | stream PID N SIZE | sub TOPIC N | pub TOPIC N SIZE | names PREFIX K | lookup PREFIX K | tcp-echo ADDR | tcp-client ADDR N SIZE | unix-echo PATH | unix-client PATH N SIZE");
            std::process::exit(2);
        }
    }
}

/// Receives `n` data messages (after subscribing to `topic`, if any) and prints
/// the rate from the first to the last received; gives up after 10 s without mail.
fn count_mail(what: &str, topic: Option<&str>, n: usize) {
    let mut c = Client::connect_default().expect("connect");
    if let Some(topic) = topic {
        c.subscribe(topic).expect("subscribe");
    }
    let (mut got, mut first, mut last) = (0usize, None, Instant::now());
    while got < n {
        let mail = c.recv(4096, Duration::from_secs(10)).expect("recv");
        if mail.is_empty() {
            break;
        }
        last = Instant::now();
        first.get_or_insert(last);
        got += mail
            .iter()
            .filter(|m| matches!(m.body, MailBody::Data(_)))
            .count();
    }
    let secs = first.map_or(0.0, |t| (last - t).as_secs_f64());
    println!(
        "{what}: n={got} msgs_per_s={:.0}",
        got.saturating_sub(1) as f64 / secs.max(1e-9)
    );
}

/// Sends `n` messages of `size` bytes to `to` in batches, then waits for every fate.
fn stream(c: &mut Client, what: &str, to: Dest, n: usize, size: usize) {
    let data = vec![7u8; size];
    let t0 = Instant::now();
    let mut sent = 0;
    let (mut failed, mut reached) = (std::collections::BTreeMap::new(), 0u64);
    let mut tally = |fates: Vec<(u64, Result<SendReceipt, SendError>)>| {
        for (_, fate) in fates {
            match fate {
                Ok(r) => reached += u64::from(r.reached),
                Err(e) => *failed.entry(format!("{e:?}")).or_insert(0u64) += 1,
            }
        }
    };
    while sent < n {
        let k = (n - sent).min(MAX_ASYNC_SENDS);
        c.send_batch(
            std::iter::repeat_n((to.clone(), data.as_slice()), k),
            SendOptions::default(),
        )
        .expect("send");
        sent += k;
        tally(c.take_fates());
    }
    c.settle().expect("fates");
    tally(c.take_fates());
    println!(
        "{what}: n={n} msgs_per_s={:.0} failed={} mailboxes_reached={reached} failures={failed:?}",
        n as f64 / t0.elapsed().as_secs_f64(),
        failed.values().sum::<u64>()
    );
}

fn echo() {
    let mut c = Client::connect_default().expect("connect");
    loop {
        for mail in c.recv(64, Duration::from_secs(60)).expect("recv") {
            if c.is_linked_from(mail.from) && !c.linked(mail.from) {
                // Answers go back on a link too, when one can be made.
                let _ = c.link(mail.from);
            }
            if let MailBody::Data(d) = mail.body {
                c.send_async(mail.from, &d, SendOptions::default())
                    .expect("send");
            }
        }
        for (_, fate) in c.take_fates() {
            fate.expect("the echo's send");
        }
    }
}

fn client(c: &mut Client, peer: Pid, n: usize, size: usize, asynchronous: bool) -> Vec<Duration> {
    let data = vec![7u8; size];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        if asynchronous {
            c.send_async(peer, &data, SendOptions::default())
                .expect("send");
        } else {
            c.send(peer, &data).expect("send");
        }
        let got = c.recv(1, Duration::from_secs(10)).expect("recv");
        assert_eq!(got.len(), 1, "no answer in time");
        samples.push(t0.elapsed());
    }
    samples
}

fn stream_echo(mut s: impl Read + Write) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(k) => s.write_all(&buf[..k]).expect("write"),
        }
    }
}

fn stream_client(mut s: impl Read + Write, n: usize, size: usize) -> Vec<Duration> {
    let data = vec![7u8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        s.write_all(&data).expect("write");
        s.read_exact(&mut back).expect("read");
        samples.push(t0.elapsed());
    }
    samples
}

/// Runs this process on `cpu` only.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays within it for any
    // cpu below CPU_SETSIZE (checked), and the call reads the set it is given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert!(cpu < libc::CPU_SETSIZE as usize, "no cpu {cpu}");
        libc::CPU_SET(cpu, &mut set);
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(
            libc::sched_setaffinity(0, size, &set),
            0,
            "cannot run on cpu {cpu}"
        );
    }
}

fn report(mut samples: Vec<Duration>) {
    let warm = (samples.len() / 10).max(1).min(samples.len());
    let mut counted: Vec<Duration> = samples.split_off(warm);
    counted.sort();
    let at = |p: f64| {
        let i = ((counted.len() as f64 * p).ceil() as usize).clamp(1, counted.len()) - 1;
        counted[i].as_secs_f64() * 1e6
    };
    println!(
        "n={} p50_us={:.1} p99_us={:.1}",
        counted.len(),
        at(0.50),
        at(0.99)
    );
}
