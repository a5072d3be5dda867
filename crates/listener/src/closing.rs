//! Graceful shutdown of the clients' connections: once asked, each one finishes the exchange
//! it is in and closes.
//!
//! hyper-util's `GracefulShutdown` polls a watch channel's `changed()` on every poll of every
//! connection, about 600 instructions per proxied request here. A connection here registers its
//! task's waker once (again only if the task's waker changes) and otherwise reads one flag.

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::pin;
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

    /// A connection's place among those told to close.
    pub fn listener(self: Arc<Self>) -> Listener {
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
pub struct Listener {
    closing: Arc<Closing>,
    id: u64,
    /// The waker `ask` will wake.
    registered: Option<Waker>,
}

impl Listener {
    /// Whether closing was asked; if not, `cx`'s task will be woken when it is.
    pub fn asked(&mut self, cx: &Context<'_>) -> bool {
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
