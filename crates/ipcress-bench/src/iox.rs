//! iceoryx2 publish-subscribe over `[u8]` slices with zero-copy loans: the
//! producer loans a sample of exactly the message's length, writes the payload
//! into it and sends it; the consumer reads the payload in place.
//!
//! Settings: no safe overflow, `RetryUntilDelivered` back-pressure, no history,
//! one loan at a time, subscriber buffers of [`Case::iox_buffer`] samples.
//! iceoryx2 has no blocking receive, so readers poll (spin, then yield) in
//! [`Wait::Auto`] and [`Wait::Spin`]; in [`Wait::Block`] every send also
//! notifies an event service and the reader sleeps on its listener.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory;

use crate::spec::{Case, EndpointDesc, Wait};
use crate::transport::{Backoff, Channel, Endpoint, FnRx, FnTx, Rx, Tx};

pub fn channel(dir: &Path, tag: &str, readers: usize) -> Result<Channel> {
    let case_id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("temp dir name")?;
    let name = format!("ipcress-bench/{case_id}/{tag}");
    Ok(Channel {
        writer: Endpoint::named(name.clone(), 0),
        readers: (0..readers)
            .map(|i| Endpoint::named(name.clone(), i))
            .collect(),
    })
}

fn node() -> Result<Node<ipc::Service>> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .map_err(|e| anyhow!("iceoryx2 node: {e:?}"))
}

/// Opens or creates the service with the same settings on both sides.
fn service(
    node: &Node<ipc::Service>,
    case: &Case,
    name: &str,
) -> Result<PortFactory<ipc::Service, [u8], ()>> {
    node.service_builder(&ServiceName::new(name).map_err(|e| anyhow!("{e:?}"))?)
        .publish_subscribe::<[u8]>()
        .enable_safe_overflow(false)
        .history_size(0)
        .subscriber_max_buffer_size(case.iox_buffer())
        .subscriber_max_borrowed_samples(1)
        .max_subscribers(case.consumers)
        .max_publishers(1)
        .open_or_create()
        .map_err(|e| anyhow!("iceoryx2 service {name}: {e:?}"))
}

fn event(
    node: &Node<ipc::Service>,
    name: &str,
) -> Result<iceoryx2::service::port_factory::event::PortFactory<ipc::Service>> {
    node.service_builder(&ServiceName::new(&format!("{name}/ev")).map_err(|e| anyhow!("{e:?}"))?)
        .event()
        .open_or_create()
        .map_err(|e| anyhow!("iceoryx2 event service {name}: {e:?}"))
}

pub fn tx(case: &Case, desc: &EndpointDesc) -> Result<Box<dyn Tx>> {
    let node = node()?;
    let service = service(&node, case, &desc.name)?;
    let publisher: Publisher<ipc::Service, [u8], ()> = service
        .publisher_builder()
        .initial_max_slice_len(case.size)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .max_loaned_samples(1)
        .create()
        .map_err(|e| anyhow!("iceoryx2 publisher: {e:?}"))?;
    let notifier = match case.wait {
        Wait::Block => Some(
            event(&node, &desc.name)?
                .notifier_builder()
                .create()
                .map_err(|e| anyhow!("iceoryx2 notifier: {e:?}"))?,
        ),
        Wait::Auto | Wait::Spin => None,
    };
    Ok(Box::new(FnTx(move |msg: &[u8]| -> Result<()> {
        let _keep = (&node, &service);
        let sample = publisher
            .loan_slice_uninit(msg.len())
            .map_err(|e| anyhow!("iceoryx2 loan: {e:?}"))?;
        sample
            .write_from_slice(msg)
            .send()
            .map_err(|e| anyhow!("iceoryx2 send: {e:?}"))?;
        if let Some(n) = &notifier {
            n.notify().map_err(|e| anyhow!("iceoryx2 notify: {e:?}"))?;
        }
        Ok(())
    })))
}

pub fn rx(case: &Case, desc: &EndpointDesc) -> Result<Box<dyn Rx>> {
    let node = node()?;
    let service = service(&node, case, &desc.name)?;
    let subscriber: Subscriber<ipc::Service, [u8], ()> = service
        .subscriber_builder()
        .buffer_size(case.iox_buffer())
        .create()
        .map_err(|e| anyhow!("iceoryx2 subscriber: {e:?}"))?;
    let listener = match case.wait {
        Wait::Block => Some(
            event(&node, &desc.name)?
                .listener_builder()
                .create()
                .map_err(|e| anyhow!("iceoryx2 listener: {e:?}"))?,
        ),
        Wait::Auto | Wait::Spin => None,
    };
    let mut backoff = Backoff::new(case.wait);
    Ok(Box::new(FnRx(
        move |f: &mut dyn FnMut(&[u8])| -> Result<usize> {
            let _keep = (&node, &service);
            loop {
                if let Some(sample) = subscriber
                    .receive()
                    .map_err(|e| anyhow!("iceoryx2 receive: {e:?}"))?
                {
                    backoff.reset();
                    let payload = sample.payload();
                    f(payload);
                    return Ok(payload.len());
                }
                match &listener {
                    Some(l) => {
                        l.blocking_wait(|_| {})
                            .map_err(|e| anyhow!("iceoryx2 wait: {e:?}"))?;
                    }
                    None => backoff.snooze(),
                }
            }
        },
    )))
}
