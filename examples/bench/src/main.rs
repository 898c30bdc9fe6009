//! Run with `cargo run --release -p switchyard-bench -- fanout --pid $(pgrep -x switchyard) --floor`
//!
//! `pusher-bench` drives any Pusher server through its public protocol and reports what a
//! delivered message costs: end-to-end latency, loss and order at the clients, server CPU per
//! delivery and RSS per connection (from /proc, given the server's pid), next to the floor of
//! one pre-encoded write per delivery measured on the same machine.

mod fanout;
mod floor;
mod http;
mod idle;
mod procfs;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pusher-bench",
    about = "Fan-out benchmark for Pusher protocol servers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N subscribers over M channels, events through the HTTP API.
    Fanout {
        #[command(flatten)]
        args: fanout::FanoutArgs,
        /// Also measure the one-write-per-delivery floor with the same sockets and rate.
        #[arg(long)]
        floor: bool,
        /// Rounds of (server, floor) measurements, interleaved; prints the median ratio.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// Only the floor loop.
    Floor {
        #[arg(long, default_value_t = 1000)]
        sockets: usize,
        #[arg(long, default_value_t = 30.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 1)]
        frames_per_write: usize,
    },
    /// RSS per idle connection.
    Idle {
        #[arg(long, default_value = "127.0.0.1:6001")]
        addr: String,
        #[arg(long, default_value = "app-key")]
        key: String,
        #[arg(long, default_value_t = 10000)]
        connections: usize,
        #[arg(long)]
        pid: u32,
    },
    /// Internal: the floor's writer process.
    #[command(hide = true)]
    FloorWriter {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        sockets: usize,
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        duration: f64,
        #[arg(long)]
        frames_per_write: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::FloorWriter {
        port,
        sockets,
        rate,
        duration,
        frames_per_write,
    } = cli.cmd
    {
        return floor::writer(port, sockets, rate, duration, frames_per_write);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Fanout { args, floor, repeat } => {
                let mut ratios = Vec::new();
                for round in 0..repeat.max(1) {
                    if repeat > 1 {
                        println!("--- round {round}");
                    }
                    let o = fanout::run(&args).await?;
                    let lost = o.expected.saturating_sub(o.delivered);
                    println!("published events      {}", o.published);
                    println!("deliveries expected   {}", o.expected);
                    println!("delivered             {}  (lost {lost}, out of order {}, duplicates {})", o.delivered, o.out_of_order, o.duplicates);
                    println!("latency p50 / p99 / max  {:.2} / {:.2} / {:.2} ms", o.p50_us as f64 / 1e3, o.p99_us as f64 / 1e3, o.max_us as f64 / 1e3);
                    let per = (!args.pid.is_empty() && o.delivered > 0).then(|| o.server_cpu.as_nanos() as f64 / o.delivered as f64 / 1e3);
                    if let Some(per) = per {
                        println!("server CPU            {:.3} s total, {per:.2} µs per delivered message", o.server_cpu.as_secs_f64());
                    }
                    if let Some(rss) = o.rss_per_conn {
                        println!("server RSS            {:.1} KB per subscribed connection", rss / 1024.0);
                    }
                    if floor {
                        let f = floor::run(args.subscribers, args.rate, args.duration, 1).await?;
                        let f_us = f.as_nanos() as f64 / 1e3;
                        println!("floor (1 write/delivery)  {f_us:.2} µs per delivery");
                        if let Some(per) = per {
                            println!("ratio server / floor  {:.2}", per / f_us);
                            ratios.push(per / f_us);
                        }
                    }
                }
                if ratios.len() > 1 {
                    ratios.sort_by(f64::total_cmp);
                    println!("=== median ratio server / floor over {} rounds: {:.2} (min {:.2}, max {:.2})", ratios.len(), ratios[ratios.len() / 2], ratios[0], ratios[ratios.len() - 1]);
                }
            }
            Cmd::Floor { sockets, rate, duration, frames_per_write } => {
                let f = floor::run(sockets, rate, duration, frames_per_write).await?;
                println!("floor: {:.2} µs CPU per delivery ({sockets} sockets, {rate}/s, {frames_per_write} frame(s) per write)", f.as_nanos() as f64 / 1e3);
            }
            Cmd::Idle { addr, key, connections, pid } => {
                let per = idle::run(&addr, &key, connections, pid).await?;
                println!("idle: {:.1} KB RSS per connection over {connections} connections", per / 1024.0);
            }
            Cmd::FloorWriter { .. } => unreachable!("handled above"),
        }
        Ok(())
    })
}
