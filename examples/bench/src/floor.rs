//! The floor: the least CPU a server can spend per delivery, measured on this machine.
//!
//! A child process connects N loopback sockets and, per event, writes one pre-encoded frame
//! to each (or `frames_per_write` frames in one write), in a bare loop with blocking writes.
//! It reports its own CPU time; the parent only drains the sockets.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncReadExt;

use crate::procfs;

/// A server→client frame the size of a typical small Pusher event (about 130 bytes).
fn sample_frame() -> Vec<u8> {
    let json = format!(
        "{{\"event\":\"bench\",\"channel\":\"bench-0\",\"data\":\"{{\\\"s\\\":1,\\\"t\\\":1700000000000000,\\\"p\\\":\\\"{}\\\"}}\"}}",
        "x".repeat(64)
    );
    let mut f = vec![0x81, 126];
    f.extend_from_slice(&(json.len() as u16).to_be_bytes());
    f.extend_from_slice(json.as_bytes());
    f
}

/// Parent side: accept the child's sockets, drain them, and return the child's CPU per delivery.
pub async fn run(
    sockets: usize,
    rate: f64,
    duration: f64,
    frames_per_write: usize,
) -> anyhow::Result<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let exe = std::env::current_exe()?;
    let child = tokio::process::Command::new(exe)
        .args([
            "floor-writer",
            "--port",
            &port.to_string(),
            "--sockets",
            &sockets.to_string(),
            "--rate",
            &rate.to_string(),
            "--duration",
            &duration.to_string(),
            "--frames-per-write",
            &frames_per_write.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the floor writer")?;
    for _ in 0..sockets {
        let (mut s, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16384];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        });
    }
    let out = child.wait_with_output().await?;
    let text = String::from_utf8(out.stdout)?;
    let ns: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("floor writer said {text:?}"))?;
    Ok(Duration::from_nanos(ns))
}

/// Child side: the bare write loop. Prints CPU nanoseconds per delivered frame.
pub fn writer(
    port: u16,
    sockets: usize,
    rate: f64,
    duration: f64,
    frames_per_write: usize,
) -> anyhow::Result<()> {
    let mut conns = (0..sockets)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let frame = sample_frame();
    let chunk: Vec<u8> = frame.repeat(frames_per_write);
    let writes = (rate * duration / frames_per_write as f64).round() as u64;
    let interval = Duration::from_secs_f64(frames_per_write as f64 / rate);
    let me = std::process::id();
    let cpu0 = procfs::cpu_time(me)?;
    let t0 = Instant::now();
    for w in 0..writes {
        let due = t0 + interval * w as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for c in &mut conns {
            c.write_all(&chunk)?;
        }
    }
    let cpu = procfs::cpu_time(me)?.saturating_sub(cpu0);
    let deliveries = writes * frames_per_write as u64 * sockets as u64;
    println!("{}", cpu.as_nanos() as u64 / deliveries.max(1));
    Ok(())
}
