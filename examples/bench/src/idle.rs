//! Memory per idle connection: RSS of the server before and after opening N connections.

use anyhow::Context;
use futures_util::StreamExt;

use crate::procfs;

pub async fn run(addr: &str, key: &str, connections: usize, pid: u32) -> anyhow::Result<f64> {
    let before = procfs::rss_bytes(pid)?;
    let mut held = Vec::with_capacity(connections);
    for i in 0..connections {
        let url = format!("ws://{addr}/app/{key}?protocol=7&client=bench&version=1.0");
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connection {i}"))?;
        ws.next().await; // connection_established
        held.push(ws);
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = procfs::rss_bytes(pid)?;
    drop(held);
    Ok(after.saturating_sub(before) as f64 / connections as f64)
}
