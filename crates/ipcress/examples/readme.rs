//! The README's example, kept compiling. Run: cargo run -p ipcress --example readme

use ipcress::{Stream, StreamOptions};

fn main() -> ipcress::Result<()> {
    // A 64 MiB ring under $IPCRESS_DIR (default /dev/shm/ipcress).
    let stream = Stream::create("readme-frames", &StreamOptions::ring(64 << 20))?;

    // In another process: Stream::open("readme-frames")?.consumer("encoder")?
    let mut consumer = stream.consumer("encoder")?; // durable, position kept
    let mut producer = stream.producer()?;

    producer.send(b"small message")?; // copy in
    let mut grant = producer.reserve(4096)?; // zero-copy: fill in place
    grant.fill(7);
    grant.commit()?;

    let msg = consumer.recv()?; // borrows shared memory
    assert_eq!(msg.bytes(), Some(&b"small message"[..]));
    drop(msg);
    assert_eq!(consumer.recv()?.bytes().map(|b| b.len()), Some(4096));
    consumer.commit()?;

    drop((consumer, producer, stream));
    Stream::remove_in(&ipcress::default_root(), "readme-frames")?;
    println!("ok");
    Ok(())
}
