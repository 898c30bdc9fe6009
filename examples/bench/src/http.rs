//! A minimal keep-alive HTTP/1.1 client that publishes signed events to the Pusher HTTP API.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use hmac::{Hmac, Mac};
use md5::Digest;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct Publisher {
    conn: BufReader<TcpStream>,
    host: String,
    app_id: String,
    key: String,
    secret: String,
}

impl Publisher {
    pub async fn connect(
        host: &str,
        app_id: &str,
        key: &str,
        secret: &str,
    ) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(host)
            .await
            .with_context(|| format!("connecting to {host}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            conn: BufReader::new(stream),
            host: host.into(),
            app_id: app_id.into(),
            key: key.into(),
            secret: secret.into(),
        })
    }

    /// POSTs `body` to `/apps/{id}/{endpoint}` and checks for a 200.
    pub async fn post(&mut self, endpoint: &str, body: &str) -> anyhow::Result<()> {
        let path = format!("/apps/{}/{endpoint}", self.app_id);
        let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let md5 = hex::encode(md5::Md5::digest(body.as_bytes()));
        let query = format!(
            "auth_key={}&auth_timestamp={ts}&auth_version=1.0&body_md5={md5}",
            self.key
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes())?;
        mac.update(format!("POST\n{path}\n{query}").as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        let req = format!(
            "POST {path}?{query}&auth_signature={sig} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.conn.get_mut().write_all(req.as_bytes()).await?;
        let mut status = String::new();
        self.conn.read_line(&mut status).await?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.conn.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        self.conn.read_exact(&mut body).await?;
        if !status.contains(" 200 ") {
            bail!(
                "publish failed: {} {}",
                status.trim(),
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }
}
