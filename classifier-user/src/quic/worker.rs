//! QUIC Initials opened off the daemon's loop.
//!
//! Opening an Initial costs an HKDF key derivation and AES-GCM over a ~1,200-byte datagram,
//! and anyone can send Initials: done on the daemon's loop, a flood of fake ones would keep
//! it from the control socket, the recorder's walk and signals. So the loop only hands each
//! Initial to a bounded queue, and one thread of its own reads them ([`QuicNames`]) and sends
//! the verdicts back over a channel; the loop, the datapath's one writer, turns them into
//! classes. When the queue is full the Initial is shed ([`Shed`]): the caller gives its flow
//! the class of QUIC without a readable name at once, rather than let it wait.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

use anyhow::Context as _;
use classifier_common::flow::FlowKey;
use tokio::sync::mpsc as verdict_channel;

use super::{QuicNames, QuicVerdict};

/// Initials waiting for the worker at most. Opening one takes 4 to 10 µs (a release build:
/// a forged Initial fails at the tag, a real one is opened again with its second half), so
/// a full queue is about 10 ms of work: the last Initial in it is still answered well
/// within the client's first retransmission (and the datapath's hold), while its memory
/// stays small (1,024 datagrams of at most 2 KiB, 2 MiB). A flood that outruns the worker
/// by more than that gains nothing by queueing: it is shed.
pub const QUEUE_CAPACITY: usize = 1024;

/// Verdicts waiting for the daemon's loop at most. When the loop does not take them the
/// worker waits, its queue fills, and further Initials are shed: memory stays bounded
/// however slow the loop is.
pub const VERDICTS_CAPACITY: usize = 1024;

/// One Initial for the worker: the flow and the UDP payload.
type Job = (FlowKey, Vec<u8>);

/// The verdicts the worker sends back, for the daemon's loop to apply.
pub type Verdicts = verdict_channel::Receiver<(FlowKey, QuicVerdict)>;

/// Why an Initial was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Shed {
    #[error("the QUIC Initial queue was full")]
    Full,
    /// The worker thread is gone (a panic in the decryptor): a bug, but no reason to stop
    /// classifying the rest.
    #[error("the QUIC Initial worker has stopped")]
    Stopped,
}

/// The daemon's end of the worker: where Initials are offered.
pub struct QuicWorker {
    jobs: SyncSender<Job>,
}

impl QuicWorker {
    /// Starts the worker thread; its verdicts come out of the returned receiver. The thread
    /// ends when this handle is dropped or the receiver is.
    pub fn spawn() -> anyhow::Result<(Self, Verdicts)> {
        let (worker, jobs) = Self::queue(QUEUE_CAPACITY);
        let (verdicts_in, verdicts) = verdict_channel::channel(VERDICTS_CAPACITY);
        std::thread::Builder::new()
            .name("quic-initials".into())
            .spawn(move || run(jobs, verdicts_in))
            .context("starting the QUIC Initial worker thread")?;
        Ok((worker, verdicts))
    }

    /// A queue of `capacity` Initials, and the end the worker reads.
    fn queue(capacity: usize) -> (Self, Receiver<Job>) {
        let (jobs, queued) = mpsc::sync_channel(capacity);
        (Self { jobs }, queued)
    }

    /// Queues one Initial of `key`'s flow without waiting.
    pub fn offer(&self, key: FlowKey, datagram: Vec<u8>) -> Result<(), Shed> {
        self.jobs
            .try_send((key, datagram))
            .map_err(|error| match error {
                TrySendError::Full(_) => Shed::Full,
                TrySendError::Disconnected(_) => Shed::Stopped,
            })
    }
}

/// The worker thread: reads Initials until the daemon lets go of either end.
fn run(jobs: Receiver<Job>, verdicts: verdict_channel::Sender<(FlowKey, QuicVerdict)>) {
    let mut names = QuicNames::default();
    for (key, datagram) in jobs {
        if let Some(verdict) = names.add(key, datagram)
            && verdicts.blocking_send((key, verdict)).is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
impl QuicWorker {
    /// A worker whose queue nobody reads, for tests of shedding.
    pub(crate) fn unserved(capacity: usize) -> (Self, Receiver<Job>) {
        Self::queue(capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quic::tests::two_initials;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            client_port: port,
            ..FlowKey::default()
        }
    }

    #[test]
    fn a_full_queue_sheds() {
        let (worker, _queued) = QuicWorker::unserved(2);
        assert_eq!(worker.offer(key(1), vec![0; 1200]), Ok(()));
        assert_eq!(worker.offer(key(2), vec![0; 1200]), Ok(()));
        assert_eq!(worker.offer(key(3), vec![0; 1200]), Err(Shed::Full));
    }

    #[test]
    fn a_stopped_worker_sheds() {
        let (worker, queued) = QuicWorker::unserved(2);
        drop(queued);
        assert_eq!(worker.offer(key(1), vec![0; 1200]), Err(Shed::Stopped));
    }

    #[test]
    fn the_worker_names_a_split_client_hello_and_judges_garbage() {
        let (worker, mut verdicts) = QuicWorker::spawn().expect("a thread");
        let [first, second] = two_initials("www.youtube.com");
        worker.offer(key(1), first).unwrap();
        worker.offer(key(2), vec![0xc3; 1200]).unwrap();
        worker.offer(key(1), second).unwrap();
        let (garbage, verdict) = verdicts.blocking_recv().expect("a verdict");
        assert_eq!(garbage, key(2));
        assert!(matches!(verdict, QuicVerdict::Unreadable(_)), "{verdict:?}");
        let (named, verdict) = verdicts.blocking_recv().expect("a verdict");
        assert_eq!(named, key(1));
        assert!(
            matches!(&verdict, QuicVerdict::Named { name, .. } if name == "www.youtube.com"),
            "{verdict:?}"
        );
    }

    #[test]
    fn the_worker_ends_when_the_daemon_lets_go() {
        let (worker, mut verdicts) = QuicWorker::spawn().expect("a thread");
        drop(worker);
        assert_eq!(verdicts.blocking_recv(), None, "the thread ended");
    }
}
