//! A yardstick of the gateway + worker rows in docs/benchmarks.md: the bare tokio-tungstenite echo
//! server of `../shared/bench/wsbench` (the same crate, its `small` configuration) with one hop
//! added, the simplest relay on the same transport — each frame goes over one TCP connection to a
//! second process, which writes it back, and only then is it echoed to the client. It does nothing
//! else a gateway and a worker do (no envelope, routes, deadlines, sessions or failover), so beside
//! the bare echo it shows what the second process alone costs on this machine.
//!
//! ```text
//! cargo build --release --example bare_relay -p mortar-cli
//! target/release/examples/bare_relay back  --addr 127.0.0.1:9701
//! target/release/examples/bare_relay front --addr 127.0.0.1:9702 --back 127.0.0.1:9701
//! ```
//!
//! Both run one runtime thread, as the nodes do in the benchmarks. On the relay connection a record
//! is `u32 length | u32 connection id | payload` (little endian); the front writes the records
//! queued since its last write in one write, the back writes back what it reads as it reads it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};

type Replies = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Bytes>>>>;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let addr = flag("--addr").unwrap_or_else(|| "127.0.0.1:9701".into());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let listener = runtime.block_on(TcpListener::bind(&addr))?;
    // On the runtime's thread, not the one that blocks on it (as the bare server does).
    let serve = match args.first().map(String::as_str) {
        Some("back") => runtime.spawn(back(listener)),
        Some("front") => {
            runtime.spawn(front(listener, flag("--back").unwrap_or_else(|| "127.0.0.1:9701".into())))
        }
        _ => {
            eprintln!("usage: bare_relay back --addr ADDR | front --addr ADDR --back ADDR");
            std::process::exit(2)
        }
    };
    runtime.block_on(serve).expect("the server's task")
}

/// The second process: writes back every byte the relay sends.
async fn back(listener: TcpListener) -> std::io::Result<()> {
    eprintln!("bare_relay back listening on {}", listener.local_addr()?);
    loop {
        let (mut stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The WebSocket side: one relay connection shared by every client.
async fn front(listener: TcpListener, back: String) -> std::io::Result<()> {
    let relay = TcpStream::connect(&back).await?;
    relay.set_nodelay(true)?;
    let (mut from_back, mut to_back) = relay.into_split();
    let (records, mut queued) = mpsc::unbounded_channel::<Bytes>();
    let replies: Replies = Arc::default();

    // Writer: everything queued since the last write leaves in one write.
    tokio::spawn(async move {
        let mut out = BytesMut::new();
        while let Some(record) = queued.recv().await {
            out.put(record);
            while let Ok(record) = queued.try_recv() {
                out.put(record);
            }
            if to_back.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    });

    // Reader: each record back goes to its connection.
    let routes = replies.clone();
    tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            while buf.len() >= 8 {
                let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
                if buf.len() < 8 + len {
                    break;
                }
                let id = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
                buf.advance(8);
                let payload = buf.split_to(len).freeze();
                if let Some(client) = routes.lock().expect("replies").get(&id) {
                    let _ = client.send(payload);
                }
            }
            buf.reserve(64 * 1024);
            if !matches!(from_back.read_buf(&mut buf).await, Ok(1..)) {
                eprintln!("bare_relay front: the back closed the relay connection");
                return;
            }
        }
    });

    eprintln!("bare_relay front listening on {}, relaying to {back}", listener.local_addr()?);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024);
    for id in 0u32.. {
        let (stream, _) = listener.accept().await?;
        let (records, replies) = (records.clone(), replies.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
                return;
            };
            let (reply, mut mine) = mpsc::unbounded_channel();
            replies.lock().expect("replies").insert(id, reply);
            loop {
                tokio::select! {
                    frame = ws.next() => match frame {
                        Some(Ok(Message::Binary(payload))) => {
                            let mut record = BytesMut::with_capacity(8 + payload.len());
                            record.put_u32_le(payload.len() as u32);
                            record.put_u32_le(id);
                            record.put(payload);
                            if records.send(record.freeze()).is_err() {
                                break;
                            }
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => {}
                    },
                    Some(payload) = mine.recv() => {
                        if ws.send(Message::Binary(payload)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            replies.lock().expect("replies").remove(&id);
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn frames_come_back_through_the_second_process_to_their_own_client() {
        let back_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let back_addr = back_listener.local_addr().unwrap().to_string();
        tokio::spawn(back(back_listener));
        let front_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", front_listener.local_addr().unwrap());
        tokio::spawn(front(front_listener, back_addr));
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(tokio_tungstenite::connect_async(&url).await.unwrap().0);
        }
        for round in 0..20 {
            for (i, client) in clients.iter_mut().enumerate() {
                client.send(Message::Binary(format!("{i}:{round}").into_bytes().into())).await.unwrap();
            }
            for (i, client) in clients.iter_mut().enumerate() {
                let echo = tokio::time::timeout(Duration::from_secs(10), client.next()).await;
                let echo = echo.expect("an echo within 10 s").unwrap().unwrap();
                assert_eq!(echo, Message::Binary(format!("{i}:{round}").into_bytes().into()));
            }
        }
    }
}
