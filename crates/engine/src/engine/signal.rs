//! Wake-ups without locks (engine): a single-threaded signal for a connection task, and a
//! bounded lock-free inbox per shard (crossbeam `ArrayQueue` + `AtomicWaker`) for hand-off
//! between shards.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

/// A one-task, one-thread notification: `notify` sets a flag and wakes the waiting task.
/// Lives on one shard; costs two `Cell`s.
#[derive(Default)]
pub struct LocalSignal {
    flag: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for LocalSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flag = self.flag.get();
        f.debug_struct("LocalSignal")
            .field("notified", &flag)
            .finish_non_exhaustive()
    }
}

impl LocalSignal {
    /// Sets the flag and wakes the waiter, if any.
    pub fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Waits until notified (returns at once if notified since the last wait).
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// One shard's inbox: bounded, lock-free, many producers.
#[derive(Debug)]
pub struct Inbox<T> {
    queue: ArrayQueue<T>,
    waker: AtomicWaker,
}

/// The inboxes of all shards.
#[derive(Debug)]
pub struct Mesh<T> {
    inboxes: Box<[CachePadded<Inbox<T>>]>,
}

impl<T> Mesh<T> {
    /// `shards` inboxes of `capacity` messages each.
    pub fn new(shards: usize, capacity: usize) -> Self {
        let inboxes = (0..shards)
            .map(|_| {
                CachePadded::new(Inbox {
                    queue: ArrayQueue::new(capacity),
                    waker: AtomicWaker::new(),
                })
            })
            .collect();
        Mesh { inboxes }
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.inboxes.len()
    }

    /// Whether there are no shards.
    pub fn is_empty(&self) -> bool {
        self.inboxes.is_empty()
    }

    /// Sends to shard `to`; gives the message back when its inbox is full.
    pub fn send(&self, to: usize, msg: T) -> Result<(), T> {
        let inbox = &self.inboxes[to];
        inbox.queue.push(msg)?;
        inbox.waker.wake();
        Ok(())
    }

    /// Takes one message from shard `me`'s inbox.
    pub fn try_recv(&self, me: usize) -> Option<T> {
        self.inboxes[me].queue.pop()
    }

    /// Messages waiting in shard `me`'s inbox.
    pub fn depth(&self, me: usize) -> usize {
        self.inboxes[me].queue.len()
    }

    /// Waits until shard `me`'s inbox is non-empty.
    pub async fn ready(&self, me: usize) {
        let inbox = &self.inboxes[me];
        poll_fn(|cx| {
            if !inbox.queue.is_empty() {
                return Poll::Ready(());
            }
            inbox.waker.register(cx.waker());
            if inbox.queue.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn mesh_is_bounded_and_fifo() {
        let m = Mesh::new(2, 2);
        m.send(1, 1).unwrap();
        m.send(1, 2).unwrap();
        assert_eq!(m.send(1, 3), Err(3));
        assert_eq!(m.try_recv(1), Some(1));
        assert_eq!(m.try_recv(1), Some(2));
        assert_eq!(m.try_recv(0), None);
    }

    #[test]
    fn cross_thread_wakeup() {
        let m = Arc::new(Mesh::new(1, 16));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let m2 = m.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            m2.send(0, 7u32).unwrap();
        });
        rt.block_on(async {
            m.ready(0).await;
        });
        assert_eq!(m.try_recv(0), Some(7));
        t.join().unwrap();
    }
}
