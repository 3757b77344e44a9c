//! Driving a client connection and its member connections in one task,
//! polling only the side that was woken.
//!
//! A request crosses between the two sides several times (the request into
//! the member connection's queue, the response head back, the body's
//! demand, the body's data), and each crossing wakes the other side. Were
//! both polled by a plain `select!` with the task's waker, every crossing
//! would schedule the task once more and poll both sides again (about four
//! task polls per request, each parsing nothing new on one side). [`Joint`]
//! gives each side a waker of its own: woken while [`Joint`] is polling, it
//! only marks its side, which is then polled again in the same task poll;
//! woken at any other time (socket readiness, a timer, another thread) it
//! marks its side and wakes the task. A task poll polls only the marked
//! sides, so one socket event costs one task poll. A third side, `stop`
//! (the drain or the abort), is polled the same way: only when woken.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Rounds of re-polling within one task poll before yielding to the
/// scheduler (which keeps tokio's cooperative budget meaningful).
const MAX_ROUNDS: usize = 8;

/// State shared by both sides' wakers.
struct Shared {
    /// Set while [`Joint::poll`] runs: wakes are picked up by its loop.
    polling: AtomicBool,
    /// The task's waker, from the latest poll.
    task: Mutex<Option<Waker>>,
}

/// One side's waker.
struct Side {
    shared: Arc<Shared>,
    /// The side needs a poll.
    woken: AtomicBool,
}

impl Wake for Side {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if !self.shared.polling.load(Ordering::SeqCst) {
            let task = self
                .shared
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(w) = task.as_ref() {
                w.wake_by_ref();
            }
        }
    }
}

/// How a [`Joint`] ended.
#[derive(Debug)]
pub enum Ended<T> {
    /// The main future is done, with this output.
    Done(T),
    /// The stop future resolved first (it is gone; another may be set).
    Stopped,
}

/// A future that ends a [`Joint`] early.
type Stop<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A client connection (`main`, whose output is the result) and the future
/// driving its member connections (`helper`, never done), polled together
/// until `main` is done or the `stop` future resolves (see the module docs).
pub struct Joint<'a, M: Future, H> {
    main: Pin<Box<M>>,
    helper: H,
    stop: Option<Stop<'a>>,
    shared: Arc<Shared>,
    main_side: Arc<Side>,
    helper_side: Arc<Side>,
    stop_side: Arc<Side>,
    main_waker: Waker,
    helper_waker: Waker,
    stop_waker: Waker,
}

impl<'a, M: Future, H: Future<Output = ()> + Unpin> Joint<'a, M, H> {
    /// Both sides, each to be polled on the first poll; no stop future.
    pub fn new(main: M, helper: H) -> Self {
        let shared = Arc::new(Shared {
            polling: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        let side = || {
            Arc::new(Side {
                shared: shared.clone(),
                woken: AtomicBool::new(true),
            })
        };
        let (main_side, helper_side, stop_side) = (side(), side(), side());
        Joint {
            main: Box::pin(main),
            main_waker: Waker::from(main_side.clone()),
            helper_waker: Waker::from(helper_side.clone()),
            stop_waker: Waker::from(stop_side.clone()),
            helper,
            stop: None,
            shared,
            main_side,
            helper_side,
            stop_side,
        }
    }

    /// Ends the joint with [`Ended::Stopped`] once `stop` resolves
    /// (replacing any earlier stop future).
    pub fn stop_on(&mut self, stop: impl Future<Output = ()> + Send + 'a) {
        self.stop = Some(Box::pin(stop));
        self.stop_side.woken.store(true, Ordering::SeqCst);
    }

    /// The main future, to act on it (it is polled on the next poll).
    pub fn main_mut(&mut self) -> Pin<&mut M> {
        self.main_side.woken.store(true, Ordering::SeqCst);
        self.main.as_mut()
    }
}

impl<M: Future, H: Future<Output = ()> + Unpin> Future for Joint<'_, M, H> {
    type Output = Ended<M::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended<M::Output>> {
        let this = self.get_mut();
        {
            let mut task = this
                .shared
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match task.as_mut() {
                Some(w) => w.clone_from(cx.waker()),
                None => *task = Some(cx.waker().clone()),
            }
        }
        this.shared.polling.store(true, Ordering::SeqCst);
        for _ in 0..MAX_ROUNDS {
            let main = this.main_side.woken.swap(false, Ordering::SeqCst);
            let helper = this.helper_side.woken.swap(false, Ordering::SeqCst);
            let stop = this.stop_side.woken.swap(false, Ordering::SeqCst);
            if !main && !helper && !stop {
                break;
            }
            if main
                && let Poll::Ready(out) = this
                    .main
                    .as_mut()
                    .poll(&mut Context::from_waker(&this.main_waker))
            {
                this.shared.polling.store(false, Ordering::SeqCst);
                return Poll::Ready(Ended::Done(out));
            }
            if helper {
                let _ =
                    Pin::new(&mut this.helper).poll(&mut Context::from_waker(&this.helper_waker));
            }
            if stop
                && let Some(s) = this.stop.as_mut()
                && s.as_mut()
                    .poll(&mut Context::from_waker(&this.stop_waker))
                    .is_ready()
            {
                this.stop = None;
                this.shared.polling.store(false, Ordering::SeqCst);
                return Poll::Ready(Ended::Stopped);
            }
        }
        this.shared.polling.store(false, Ordering::SeqCst);
        // Woken during the last round, or from elsewhere while polling:
        // poll again soon.
        if [&this.main_side, &this.helper_side, &this.stop_side]
            .iter()
            .any(|s| s.woken.load(Ordering::SeqCst))
        {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; pending until `done`.
    struct Counted {
        polls: Arc<AtomicUsize>,
        done: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.done.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    /// A [`Counted`] and its polls, its `done` switch and its last waker.
    type CountedParts = (
        Counted,
        Arc<AtomicUsize>,
        Arc<AtomicBool>,
        Arc<Mutex<Option<Waker>>>,
    );

    fn counted() -> CountedParts {
        let polls = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(Mutex::new(None));
        (
            Counted {
                polls: polls.clone(),
                done: done.clone(),
                waker: waker.clone(),
            },
            polls,
            done,
            waker,
        )
    }

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn polls_only_the_woken_side_and_wakes_the_task_from_outside() {
        let (main, main_polls, main_done, main_waker) = counted();
        let (helper, helper_polls, _, helper_waker) = counted();
        let mut joint = Joint::new(main, Box::pin(helper));
        let task = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut joint).poll(&mut cx).is_pending());
        assert_eq!(
            (
                main_polls.load(Ordering::SeqCst),
                helper_polls.load(Ordering::SeqCst)
            ),
            (1, 1)
        );
        // Not woken: nothing polled.
        assert!(Pin::new(&mut joint).poll(&mut cx).is_pending());
        assert_eq!(
            (
                main_polls.load(Ordering::SeqCst),
                helper_polls.load(Ordering::SeqCst)
            ),
            (1, 1)
        );
        // The helper woken from outside: the task is woken, only the helper polled.
        helper_waker.lock().unwrap().take().unwrap().wake();
        assert!(task.0.swap(false, Ordering::SeqCst));
        assert!(Pin::new(&mut joint).poll(&mut cx).is_pending());
        assert_eq!(
            (
                main_polls.load(Ordering::SeqCst),
                helper_polls.load(Ordering::SeqCst)
            ),
            (1, 2)
        );
        // The main side done once woken.
        main_done.store(true, Ordering::SeqCst);
        main_waker.lock().unwrap().take().unwrap().wake();
        assert!(task.0.swap(false, Ordering::SeqCst));
        assert!(matches!(
            Pin::new(&mut joint).poll(&mut cx),
            Poll::Ready(Ended::Done(()))
        ));
        assert_eq!(main_polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_stop_future_is_polled_only_when_woken_and_ends_the_joint() {
        let (main, main_polls, _, _) = counted();
        let (helper, _, _, _) = counted();
        let (stop, stop_polls, stop_done, stop_waker) = counted();
        let mut joint = Joint::new(main, Box::pin(helper));
        joint.stop_on(stop);
        let task = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut joint).poll(&mut cx).is_pending());
        assert_eq!(stop_polls.load(Ordering::SeqCst), 1);
        // The main side woken: the stop future is not polled.
        joint.main_mut();
        assert!(Pin::new(&mut joint).poll(&mut cx).is_pending());
        assert_eq!(main_polls.load(Ordering::SeqCst), 2);
        assert_eq!(stop_polls.load(Ordering::SeqCst), 1);
        stop_done.store(true, Ordering::SeqCst);
        stop_waker.lock().unwrap().take().unwrap().wake();
        assert!(task.0.swap(false, Ordering::SeqCst));
        assert!(matches!(
            Pin::new(&mut joint).poll(&mut cx),
            Poll::Ready(Ended::Stopped)
        ));
        assert_eq!(stop_polls.load(Ordering::SeqCst), 2);
    }

    /// Wakes the other side's waker when polled, `left` times.
    struct Pinger {
        other: Arc<Mutex<Option<Waker>>>,
        mine: Arc<Mutex<Option<Waker>>>,
        left: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for Pinger {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            *self.mine.lock().unwrap() = Some(cx.waker().clone());
            if self.left > 0 {
                self.left -= 1;
                if let Some(w) = self.other.lock().unwrap().as_ref() {
                    w.wake_by_ref();
                }
            }
            Poll::Pending
        }
    }

    #[test]
    fn a_wake_during_the_poll_is_handled_in_it_without_waking_the_task() {
        let a = Arc::new(Mutex::new(None));
        let b = Arc::new(Mutex::new(None));
        let (pa, pb) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let main = Pinger {
            other: b.clone(),
            mine: a.clone(),
            left: 2,
            polls: pa.clone(),
        };
        let helper = Pinger {
            other: a.clone(),
            mine: b.clone(),
            left: 2,
            polls: pb.clone(),
        };
        let mut joint = Joint::new(main, Box::pin(helper));
        let task = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut joint).poll(&mut cx).is_pending());
        // main wakes helper (registered only after its first poll), helper
        // wakes main, and so on, twice each: all within one task poll.
        assert!(pa.load(Ordering::SeqCst) >= 2 && pb.load(Ordering::SeqCst) >= 2);
        assert!(!task.0.load(Ordering::SeqCst));
    }

    /// Always wakes itself: the loop stops after MAX_ROUNDS and wakes the task.
    struct Spinner(Arc<AtomicUsize>);
    impl Future for Spinner {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn a_side_that_keeps_waking_itself_yields_to_the_scheduler() {
        let polls = Arc::new(AtomicUsize::new(0));
        let (helper, _, _, _) = counted();
        let mut joint = Joint::new(Spinner(polls.clone()), Box::pin(helper));
        let task = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut joint).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), MAX_ROUNDS);
        assert!(task.0.load(Ordering::SeqCst));
    }
}
