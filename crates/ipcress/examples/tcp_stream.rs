//! A small tokio TCP server that streams a stream's records to every
//! client that connects: each client gets its own subscriber (from the
//! newest record on), and each record is written as a 4-byte little-endian
//! length then the bytes, or as one line with `lines` framing.
//!
//! Try it (two terminals; the streams live under $IPCRESS_DIR, default
//! /dev/shm/ipcress):
//!
//! ```text
//! cargo run -p ipcress --features tokio --example tcp_stream -- events 127.0.0.1:7070 lines
//! nc 127.0.0.1 7070     # or: cat < /dev/tcp/127.0.0.1/7070; as many as you like
//! seq 1 5 | cargo run -p ipcress-cli -- put events   # or any producer
//! ```
//!
//! Every waiting client is an `.await` on `recv_async`: no thread per
//! client, and no CPU while the stream is quiet.

use ipcress::{StartAt, Stream, StreamOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "events".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7070".into());
    let lines = args.next().as_deref() == Some("lines");
    let stream = match Stream::open(&name) {
        Ok(s) => s,
        Err(ipcress::Error::NotFound { .. }) => {
            Stream::create(&name, &StreamOptions::ring(16 << 20))?
        }
        Err(e) => return Err(e.into()),
    };
    let listener = TcpListener::bind(&addr).await?;
    println!("streaming {name} to clients of {addr}");
    loop {
        let (socket, peer) = listener.accept().await?;
        let consumer = stream.subscribe(StartAt::End)?;
        tokio::spawn(async move {
            let r = serve(consumer, socket, lines).await;
            println!(
                "{peer}: gone ({})",
                r.err().map_or("closed".into(), |e| e.to_string())
            );
        });
    }
}

/// Write every record to `socket` until it closes.
async fn serve(
    mut consumer: ipcress::Consumer,
    mut socket: TcpStream,
    lines: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    loop {
        let msg = consumer.recv_async().await?;
        if lines {
            socket.write_all(&msg).await?;
            if msg.last() != Some(&b'\n') {
                socket.write_all(b"\n").await?;
            }
        } else {
            socket.write_all(&(msg.len() as u32).to_le_bytes()).await?;
            socket.write_all(&msg).await?;
        }
    }
}
