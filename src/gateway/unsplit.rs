//! Work that a dropped caller cannot cut short: a claim, its forward and its
//! record run as one unit, because a client that disconnects mid-forward
//! must not leave a claim that never gets its outcome.
//!
//! [`unsplit`] runs the unit on the caller's own task, so the common path
//! has no spawn and no hand-off to another thread (each hand-off is a futex
//! wake-up, measured on the forward path). If the caller's future is
//! dropped before the unit is done (hyper drops a request's future when its
//! client goes away, and the server drops connections at its limits), the
//! rest of the unit is spawned and still runs to completion; the `orphaned`
//! callback then receives its output. The unit is counted by the tracker
//! from the start, wherever it runs, so shutdown waits for it either way.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

type Unit<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Orphaned<T> = Box<dyn FnOnce(T) + Send>;

/// A unit of work running on its caller's task until the caller drops it,
/// then on a task of its own. See the module documentation.
pub struct Unsplit<T: Send + 'static> {
    /// `None` once the unit is done.
    unit: Option<Unit<T>>,
    orphaned: Option<Orphaned<T>>,
    /// Counts the unit in the tracker until it is done, wherever it runs.
    counted: Option<TaskTrackerToken>,
}

/// Runs `unit` to completion whether or not its caller waits for it;
/// `orphaned` gets the output when the caller did not.
pub fn unsplit<T, F, O>(tracker: &TaskTracker, unit: F, orphaned: O) -> Unsplit<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
    O: FnOnce(T) + Send + 'static,
{
    Unsplit {
        unit: Some(Box::pin(unit)),
        orphaned: Some(Box::new(orphaned)),
        counted: Some(tracker.token()),
    }
}

impl<T: Send + 'static> Future for Unsplit<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(unit) = self.unit.as_mut() else {
            // Only a caller that polls again after `Ready` gets here.
            return Poll::Pending;
        };
        let output = std::task::ready!(unit.as_mut().poll(cx));
        self.unit = None;
        self.counted = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for Unsplit<T> {
    fn drop(&mut self) {
        let (Some(unit), Some(orphaned)) = (self.unit.take(), self.orphaned.take()) else {
            return;
        };
        let counted = self.counted.take();
        // Without a runtime (it is being torn down) nothing can run the
        // rest: the unit is dropped as a killed process would drop it, and
        // its claim's lease lapses into "outcome unknown".
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // The unit was pinned in its box; moving the box keeps it in place.
            runtime.spawn(async move {
                orphaned(unit.await);
                drop(counted);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn a_unit_waited_for_runs_on_the_callers_task_and_is_not_orphaned() {
        let tracker = TaskTracker::new();
        let orphaned = Arc::new(AtomicBool::new(false));
        let flag = orphaned.clone();
        let units = tracker.clone();
        let (caller, inside) = tokio::spawn(async move {
            let caller = tokio::task::id();
            let inside = unsplit(&units, async { tokio::task::id() }, move |_| {
                flag.store(true, Ordering::SeqCst)
            })
            .await;
            (caller, inside)
        })
        .await
        .expect("the caller's task finishes");
        assert_eq!(inside, caller, "no task of its own");
        assert!(!orphaned.load(Ordering::SeqCst));
        assert!(tracker.is_empty(), "done units are no longer counted");
    }

    #[tokio::test]
    async fn a_unit_whose_caller_is_dropped_midway_finishes_and_is_orphaned() {
        let tracker = TaskTracker::new();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (entered, started) = tokio::sync::oneshot::channel::<()>();
        let seen = Arc::new(Mutex::new(None));
        let sink = seen.clone();
        let unit = unsplit(
            &tracker,
            async move {
                let _ = entered.send(());
                wait.await.expect("the test releases the unit");
                7
            },
            move |output| *sink.lock().unwrap() = Some(output),
        );
        // The caller polls the unit until it is halfway, then goes away.
        let caller = tokio::spawn(unit);
        started
            .await
            .expect("the unit started on the caller's task");
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        assert_eq!(tracker.len(), 1, "the rest of the unit is still counted");
        go.send(())
            .expect("the unit is still waiting: it was not dropped");
        tracker.close();
        tracker.wait().await;
        assert_eq!(*seen.lock().unwrap(), Some(7));
    }
}
