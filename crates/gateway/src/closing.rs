//! Graceful shutdown of the clients' connections: once asked, each one finishes the exchange
//! it is in and closes.
//!
//! hyper-util's `GracefulShutdown` polls a watch channel's `changed()` on every poll of every
//! connection, about 600 instructions per proxied request here. A connection here registers its
//! task's waker once (again only if the task's waker changes) and otherwise reads one flag.

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Closing {
    asked: AtomicBool,
    /// The connections waiting to hear it, by their number.
    waiting: Mutex<HashMap<u64, Waker>>,
    next: AtomicU64,
}

impl Closing {
    /// Tells every connection, open now or served later, to close after its current exchange.
    pub fn ask(&self) {
        self.asked.store(true, Ordering::SeqCst);
        let waiting = std::mem::take(&mut *self.lock());
        for waker in waiting.into_values() {
            waker.wake();
        }
    }

    /// Drives `connection` to its end, calling `shut_down` on it once closing is asked.
    pub async fn serve<C: Future>(
        self: Arc<Self>,
        connection: C,
        shut_down: impl FnOnce(Pin<&mut C>),
    ) -> C::Output {
        let mut connection = pin!(connection);
        let mut shut_down = Some(shut_down);
        let mut listener = self.listener();
        poll_fn(|cx| {
            if shut_down.is_some() && listener.asked(cx) {
                (shut_down.take().expect("checked"))(connection.as_mut());
            }
            connection.as_mut().poll(cx)
        })
        .await
    }

    /// `work`'s output, or `None` if closing is asked first (`work` is then dropped).
    pub async fn unless_asked<F: Future>(self: Arc<Self>, work: F) -> Option<F::Output> {
        let mut work = pin!(work);
        let mut listener = self.listener();
        poll_fn(|cx| {
            if listener.asked(cx) {
                return Poll::Ready(None);
            }
            work.as_mut().poll(cx).map(Some)
        })
        .await
    }

    fn listener(self: Arc<Self>) -> Listener {
        Listener {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            closing: self,
            registered: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waker>> {
        self.waiting.lock().expect("closing lock")
    }
}

/// One connection's place in [`Closing`].
struct Listener {
    closing: Arc<Closing>,
    id: u64,
    /// The waker `ask` will wake.
    registered: Option<Waker>,
}

impl Listener {
    /// Whether closing was asked; if not, `cx`'s task will be woken when it is.
    fn asked(&mut self, cx: &Context<'_>) -> bool {
        if !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            // Registered before the flag is read: `ask` sets the flag before it takes the
            // wakers, so either this read sees the flag or `ask` finds this waker.
            let waker = cx.waker().clone();
            self.closing.lock().insert(self.id, waker.clone());
            self.registered = Some(waker);
        }
        self.closing.asked.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.registered.is_some() {
            self.closing.lock().remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A connection stand-in: pending until shut down, then it ends with how many times it was
    /// polled.
    struct Connection {
        shut: bool,
        polls: usize,
    }

    impl Future for Connection {
        type Output = usize;

        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.shut {
                Poll::Ready(self.polls)
            } else {
                Poll::Pending
            }
        }
    }

    fn serve(closing: &Arc<Closing>) -> tokio::task::JoinHandle<usize> {
        tokio::spawn(Arc::clone(closing).serve(
            Connection {
                shut: false,
                polls: 0,
            },
            |c| c.get_mut().shut = true,
        ))
    }

    #[tokio::test]
    async fn asking_ends_open_connections_and_ones_served_after() {
        let closing = Arc::new(Closing::default());
        let open: Vec<_> = (0..3).map(|_| serve(&closing)).collect();
        tokio::task::yield_now().await;
        assert!(open.iter().all(|c| !c.is_finished()));
        assert_eq!(closing.lock().len(), 3, "each open connection waits once");

        closing.ask();
        for c in open {
            // Bounded only so a regression fails instead of hanging: `ask` wakes them at once.
            let polls = tokio::time::timeout(Duration::from_secs(10), c)
                .await
                .expect("woken by ask")
                .unwrap();
            assert_eq!(polls, 2, "polled once before and once after the ask");
        }
        let late = tokio::time::timeout(Duration::from_secs(10), serve(&closing))
            .await
            .expect("a connection served after the ask is shut down at once")
            .unwrap();
        assert_eq!(late, 1);
        assert!(
            closing.lock().is_empty(),
            "ended connections leave no waker"
        );
    }

    #[tokio::test]
    async fn work_unless_asked_ends_when_asked() {
        let closing = Arc::new(Closing::default());
        assert_eq!(
            Arc::clone(&closing).unless_asked(async { 7 }).await,
            Some(7)
        );
        let waiting = tokio::spawn(Arc::clone(&closing).unless_asked(std::future::pending::<()>()));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        closing.ask();
        let ended = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("woken by ask")
            .unwrap();
        assert_eq!(ended, None);
    }
}
